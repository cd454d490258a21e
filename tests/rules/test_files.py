"""Tests of ``read_file_source`` on the synthetic exports in ``tests/fixtures``."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from rules.config import Config, FileSource
from rules.files import read_file_source
from rules.readings import RawReading

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WIB = ZoneInfo("Asia/Jakarta")
WITA = ZoneInfo("Asia/Makassar")


def fixture_source(name: str) -> FileSource:
    config = Config.model_validate(yaml.safe_load((FIXTURES / f"{name}.yaml").read_text(encoding="utf-8")))
    source = config.sources[0]
    assert isinstance(source, FileSource)
    return source


def make_source(**fields: Any) -> FileSource:
    return FileSource.model_validate({"id": "uji", "type": "file", **fields})


def as_tuples(readings: list[RawReading]) -> list[tuple[str, str, object, object]]:
    return [(reading.device, reading.metric, reading.value, reading.ts) for reading in readings]


def wib(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2019, 4, day, hour, minute, tzinfo=WIB)


# --- wide CSV: byte-order mark, metadata block, ";", decimal comma, split date and time ----------


def test_wide_file_yields_configured_columns_per_row() -> None:
    readings = list(read_file_source(FIXTURES / "pintu_air_lebar.csv", fixture_source("pintu_air_lebar"), "UTC"))

    assert len(readings) == 11 * 2
    assert [reading.device for reading in readings[:4]] == ["hulu", "hilir", "hulu", "hilir"]
    assert {reading.metric for reading in readings} == {"level"}
    assert all(reading.id is None for reading in readings)


def test_wide_file_reads_values_as_configured() -> None:
    readings = list(read_file_source(FIXTURES / "pintu_air_lebar.csv", fixture_source("pintu_air_lebar"), "UTC"))
    hulu = [reading.value for reading in readings if reading.device == "hulu"]
    hilir = [reading.value for reading in readings if reading.device == "hilir"]

    # "-" and "NaN" are missing markers, "#VALUE!" is text and "120,5" uses the decimal comma.
    assert hulu == [120.5, 150.0, None, 181.25, "#VALUE!", 200.0, 210.0, 190.5, 140.0, None, 95.0]
    # Hilir is in mm with scale 0.1. Its empty cell is missing, and "4.810" has a thousands dot.
    assert hilir == [450.0, 462.0, 475.5, None, 481.0, 490.5, 495.0, 501.0, 490.0, 499.0, 470.0]


def test_split_timestamp_uses_source_zone() -> None:
    readings = list(read_file_source(FIXTURES / "pintu_air_lebar.csv", fixture_source("pintu_air_lebar"), "UTC"))

    assert readings[0].ts == datetime(2024, 4, 1, 0, 0, tzinfo=WITA)
    assert readings[0].ts.utcoffset().total_seconds() == 8 * 3600  # type: ignore[union-attr]
    assert readings[20].ts == datetime(2024, 4, 1, 9, 0, tzinfo=WITA)


def test_unparseable_timestamp_stays_as_text() -> None:
    readings = list(read_file_source(FIXTURES / "pintu_air_lebar.csv", fixture_source("pintu_air_lebar"), "UTC"))

    assert as_tuples(readings[12:14]) == [
        ("hulu", "level", 210.0, "01/04/2024 99.00"),
        ("hilir", "level", 495.0, "01/04/2024 99.00"),
    ]


# --- long CSV: quoted fields, device map, duplicates, broken rows --------------------------------


def test_long_file_yields_rows_in_file_order() -> None:
    readings = list(read_file_source(FIXTURES / "tma_panjang.csv", fixture_source("tma_panjang"), "Asia/Jakarta"))

    assert len(readings) == 23
    assert as_tuples(readings[:8]) == [
        ("pa-hulu", "level", 900.0, wib(1, 0)),
        ("pa-tengah", "level", 1800.0, wib(1, 0)),
        ("ps-hilir", "level", 650.0, wib(1, 0)),
        ("pa-hulu", "level", 1100.0, wib(1, 0, 30)),
        ("pa-tengah", "level", 2600.0, wib(1, 0, 30)),
        ("ps-hilir", "level", None, wib(1, 0, 30)),
        ("pa-hulu", "level", 1100.0, wib(1, 0, 30)),
        ("pa-tengah", "level", 2100.0, wib(1, 0, 15)),
    ]


def test_device_names_are_stripped_before_mapping() -> None:
    readings = list(read_file_source(FIXTURES / "tma_panjang.csv", fixture_source("tma_panjang"), "Asia/Jakarta"))

    assert {reading.device for reading in readings} == {"pa-hulu", "pa-tengah", "ps-hilir", "Pompa Baru"}


def test_unmapped_device_passes_through_stripped(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 't,alat,v\n2019-04-01,"  Pompa Baru  ",1\n2019-04-01," A ",2\n')
    source = long_source(device={"column": "alat", "map": {"A": "alat-a"}})

    devices = [reading.device for reading in read_file_source(path, source, "UTC")]

    assert devices == ["Pompa Baru", "alat-a"]


def test_unstripped_names_map_as_written(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 't,alat,v\n2019-04-01,"A ",1\n2019-04-01,A,2\n')
    source = long_source(device={"column": "alat", "map": {"A ": "alat-a"}, "strip": False})

    devices = [reading.device for reading in read_file_source(path, source, "UTC")]

    assert devices == ["alat-a", "A"]


def test_text_and_out_of_range_values_pass_through() -> None:
    readings = list(read_file_source(FIXTURES / "tma_panjang.csv", fixture_source("tma_panjang"), "Asia/Jakarta"))

    assert as_tuples(readings[12:14]) == [
        ("pa-hulu", "level", "rusak", wib(1, 1, 30)),
        ("pa-tengah", "level", 25000.0, wib(1, 1, 30)),
    ]


def test_short_and_long_rows_do_not_stop_reading(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rules.files"):
        readings = list(read_file_source(FIXTURES / "tma_panjang.csv", fixture_source("tma_panjang"), "Asia/Jakarta"))

    assert readings[15].value is None
    assert (readings[15].device, readings[15].ts) == ("ps-hilir", wib(1, 2))
    assert as_tuples([readings[18]]) == [("pa-hulu", "level", 1200.0, wib(1, 2, 30))]
    assert readings[-1].value == 1550.0
    assert "2 rows have a field count other than the header's 5 (first at line 17)" in caplog.text


def test_long_file_invalid_time_stays_as_text() -> None:
    readings = list(read_file_source(FIXTURES / "tma_panjang.csv", fixture_source("tma_panjang"), "Asia/Jakarta"))

    assert as_tuples([readings[17]]) == [("pa-hulu", "level", 1000.0, "2019-04-01 25:00:00")]


def test_naive_time_uses_default_zone() -> None:
    readings = list(read_file_source(FIXTURES / "tma_panjang.csv", fixture_source("tma_panjang"), "Asia/Jayapura"))

    assert readings[0].ts == datetime(2019, 4, 1, 0, 0, tzinfo=ZoneInfo("Asia/Jayapura"))


# --- JSONL ----------------------------------------------------------------------------------------


def test_jsonl_reads_numbers_text_and_missing() -> None:
    readings = list(read_file_source(FIXTURES / "ispu_harian.jsonl", fixture_source("ispu_harian"), "Asia/Jakarta"))
    day = lambda number: datetime(2023, 1, number, tzinfo=WIB)  # noqa: E731

    assert len(readings) == 15 * 2
    assert as_tuples(readings[4:12]) == [
        ("dki5", "pm25", 112.0, day(1)),
        ("dki5", "max", 112.0, day(1)),
        ("dki5", "pm25", None, day(2)),
        ("dki5", "max", 0.0, day(2)),
        ("dki1", "pm25", 150.0, day(3)),
        ("dki1", "max", 150.0, day(3)),
        ("dki5", "pm25", None, day(3)),
        ("dki5", "max", None, day(3)),
    ]


def test_jsonl_null_and_absent_keys_are_missing() -> None:
    readings = list(read_file_source(FIXTURES / "ispu_harian.jsonl", fixture_source("ispu_harian"), "Asia/Jakarta"))

    assert as_tuples([readings[14], readings[20]]) == [
        ("dki5", "pm25", None, datetime(2023, 1, 4, tzinfo=WIB)),
        ("dki5", "pm25", None, datetime(2023, 1, 5, tzinfo=WIB)),
    ]


def test_jsonl_maps_both_station_spellings() -> None:
    readings = list(read_file_source(FIXTURES / "ispu_harian.jsonl", fixture_source("ispu_harian"), "Asia/Jakarta"))

    assert {reading.device for reading in readings} == {"dki1", "dki5", "DKI2 Kelapa Gading"}
    assert readings[-2].value == "sensor rusak"
    assert readings[24].ts == "06-01-2023"


def test_jsonl_non_object_line_yields_empty_readings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rusak.jsonl"
    path.write_text(
        '{"t": "2024-01-01T07:00:00+07:00", "alat": "a", "v": 1.5}\n'
        "bukan json\n"
        "[1, 2]\n"
        '{"t": 1704067200, "alat": "a", "v": "2,5"}\n',
        encoding="utf-8",
    )
    source = make_source(
        format="jsonl",
        timestamp={"column": "t"},
        device={"column": "alat", "map": {"a": "alat-a"}},
        metrics=[{"column": "v", "metric": "level"}],
    )

    with caplog.at_level(logging.WARNING, logger="rules.files"):
        readings = list(read_file_source(path, source, "UTC"))

    assert as_tuples(readings) == [
        ("alat-a", "level", 1.5, datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC"))),
        ("", "level", None, None),
        ("", "level", None, None),
        ("alat-a", "level", "2,5", 1704067200),
    ]
    assert "2 lines are not JSON objects (first at line 2)" in caplog.text


# --- values, timestamps and encodings -------------------------------------------------------------


def write_csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "ekspor.csv"
    path.write_bytes(text.encode(encoding))
    return path


def long_source(**fields: Any) -> FileSource:
    layout = {
        "timestamp": {"column": "t"},
        "device": {"column": "alat"},
        "metrics": [{"column": "v", "metric": "level"}],
    }
    return make_source(**{**layout, **fields})


def test_scale_keeps_decimal_results_exact(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "t,alat,v\n2019-04-01,a,7510\n2019-04-01,a,8315\n2019-04-01,a,101\n2019-04-01,a,7\n")
    source = make_source(
        timestamp={"column": "t"},
        device={"column": "alat"},
        metrics=[{"column": "v", "metric": "level", "scale": 0.1}],
    )

    values = [reading.value for reading in read_file_source(path, source, "Asia/Jakarta")]

    assert values == [751.0, 831.5, 10.1, 0.7]


def test_point_decimal_leaves_comma_values_as_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 't,alat,v\n2019-04-01,a,"12,5"\n2019-04-01,b,12.5\n')

    values = [reading.value for reading in read_file_source(path, long_source(), "UTC")]

    assert values == ["12,5", 12.5]


def test_comma_decimal_reads_thousands_dots(tmp_path: Path) -> None:
    cells = ["12,5", "1.234,5", "1.234", "12.5", "-0,75", "1.234.567", "1,2,3", "12.34,5"]
    path = write_csv(tmp_path, "t;alat;v\n" + "".join(f"2019-04-01;a;{cell}\n" for cell in cells))
    source = long_source(delimiter=";", decimal=",", metrics=[{"column": "v", "metric": "level", "scale": 10}])

    values = [reading.value for reading in read_file_source(path, source, "UTC")]

    assert values == [125.0, 12345.0, 12340.0, 125.0, -7.5, 12345670.0, "1,2,3", "12.34,5"]


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "1_000", "12 cm", "unavailable"])
def test_non_numbers_stay_as_written(tmp_path: Path, text: str) -> None:
    path = write_csv(tmp_path, f"t,alat,v\n2019-04-01,a, {text}\n")

    readings = list(read_file_source(path, long_source(missing=[""]), "UTC"))

    assert readings[0].value == f" {text}"


def test_missing_markers_match_after_strip(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "t,alat,v\n2019-04-01,a,  ---  \n2019-04-01,b,   \n2019-04-01,c,-\n")

    values = [reading.value for reading in read_file_source(path, long_source(missing=["---", ""]), "UTC")]

    assert values == [None, None, "-"]


def test_bom_dropped_with_plain_utf8(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "\ufefft,alat,v\n2019-04-01,a,3\n")

    readings = list(read_file_source(path, long_source(encoding="utf-8"), "UTC"))

    assert as_tuples(readings) == [("a", "level", 3.0, datetime(2019, 4, 1, tzinfo=ZoneInfo("UTC")))]


def test_other_encodings_are_decoded(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "t,alat,v\n2019-04-01,Pompa Bendungan Hilir \u00e9,3\n", encoding="latin-1")

    readings = list(read_file_source(path, long_source(encoding="latin-1"), "UTC"))

    assert readings[0].device == "Pompa Bendungan Hilir \u00e9"


def test_offset_in_timestamp_wins_over_zone(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "t,alat,v\n2019-04-01T00:00:00+09:00,a,1\n2019-04-01T00:00:00Z,a,2\n")

    readings = list(read_file_source(path, long_source(), "Asia/Jakarta"))

    assert readings[0].ts == datetime(2019, 3, 31, 15, 0, tzinfo=ZoneInfo("UTC"))
    assert readings[1].ts == datetime(2019, 4, 1, 0, 0, tzinfo=ZoneInfo("UTC"))


def test_empty_timestamp_stays_as_empty_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "t,alat,v\n,a,1\n")

    readings = list(read_file_source(path, long_source(), "UTC"))

    assert readings[0].ts == ""


def test_header_only_file_yields_nothing(tmp_path: Path) -> None:
    empty = write_csv(tmp_path, "")
    assert list(read_file_source(empty, long_source(), "UTC")) == []

    header_only = tmp_path / "kepala.csv"
    header_only.write_text("t,alat,v\n", encoding="utf-8")
    assert list(read_file_source(header_only, long_source(), "UTC")) == []


def test_missing_column_raises_with_its_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "waktu,alat,v\n2019-04-01,a,1\n")

    with pytest.raises(ValueError, match="column 't' of source 'uji' is not in the header"):
        list(read_file_source(path, long_source(), "UTC"))
