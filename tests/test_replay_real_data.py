"""Replay the public Jakarta exports and compare the counts with an independent computation.

Each raw file is parsed here with ``csv.DictReader`` and code written for that one file, then
``tests.replay_reference`` evaluates the example config's rules without the hub. Only the
device map, thresholds and rules are taken from the example config. The exports live outside
the repository, in ``shared/data`` next to it (or in ``$SIMPUL_DATA_DIR``), and the tests skip when
that folder is absent.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from rules.config import Config, FileSource
from rules.files import read_file_source
from tests.replay_reference import Expected, Row, expected_replay

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SIMPUL_DATA_DIR", REPO.parent / "shared" / "data"))
WIB = ZoneInfo("Asia/Jakarta")

KATULAMPA_FILE = DATA / "jakarta-floodgates" / "katulampa_depok_manggarai_hourly_2021-10_2025-05.csv"
DSDA_FILE = DATA / "jakarta-floodgates" / "dsda_tma_2019-04.csv"
ISPU_FILE = DATA / "jakarta-ispu" / "ispu_dki_2023_raw.csv"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"the public exports are not present at {DATA}"),
]


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / f"{name}.yaml").read_text(encoding="utf-8"))


def missing_markers(config: dict[str, Any]) -> set[str]:
    """Return the file source's missing markers, or the defaults of ``FileSource`` when it lists none."""
    source = config["sources"][0]
    return set(source.get("missing", FileSource.model_fields["missing"].default))


def run_replay(data_file: Path, example: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "hub.py",
        "replay",
        str(data_file),
        "--config",
        f"examples/{example}.yaml",
        "--json",
    ]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def assert_replay_matches(report: dict[str, Any], expected: Expected, rule_ids: list[str]) -> None:
    readings = report["readings"]
    assert readings["accepted"] == expected.accepted
    assert readings["duplicate"] == expected.duplicate
    assert readings["late"] == 0
    assert readings["rejected"] == expected.rejected
    reported_reasons = {reason: count for reason, count in readings["rejected_by_reason"].items() if count}
    assert reported_reasons == dict(expected.rejected_by_reason)

    alerts = report["alerts"]
    for rule_id in rule_ids:
        assert alerts["opened_by_rule"].get(rule_id, 0) == expected.opened_by_rule[rule_id], rule_id
        assert alerts["resolved_by_rule"].get(rule_id, 0) == expected.resolved_by_rule[rule_id], rule_id
    for rule_id in rule_ids:
        assert report["firings"].get(rule_id, 0) == expected.opened_by_rule[rule_id], rule_id
    assert alerts["opened"] == sum(expected.opened_by_rule.values())
    assert alerts["resolved"] == sum(expected.resolved_by_rule.values())
    assert alerts["open_at_end"] == alerts["opened"] - alerts["resolved"]


# --- raw parsers, one per export ----------------------------------------------------------------


def katulampa_rows() -> list[Row]:
    """Read the hourly wide export: one level column per gauge, in cm, timestamps in WIB."""
    level_columns = {"Katulampa (air)": "katulampa", "Depok (air)": "depok", "Manggarai (air)": "manggarai"}
    rows = []
    with KATULAMPA_FILE.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            ts = datetime.strptime(record["Tanggal"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=WIB)
            for column, device in level_columns.items():
                rows.append(Row(device=device, metric="level", cell=record[column], ts=ts))
    return rows


def dsda_rows(config: dict[str, Any]) -> list[Row]:
    """Read the April 2019 gate export: gate name, level in mm, naive WIB timestamps."""
    names = config["sources"][0]["device"]["map"]
    rows = []
    with DSDA_FILE.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            name = record["nama_pintu_air"].strip()
            ts = datetime.strptime(record["tanggal"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=WIB)
            rows.append(Row(device=names.get(name, name), metric="level", cell=record["tinggi_air"], ts=ts))
    return rows


def ispu_rows(config: dict[str, Any]) -> list[Row]:
    """Read the 2023 ISPU export: one row per station and day, one column per sub-index."""
    names = config["sources"][0]["device"]["map"]
    columns = {
        "pm_sepuluh": "pm10",
        "pm_duakomalima": "pm25",
        "sulfur_dioksida": "so2",
        "karbon_monoksida": "co",
        "ozon": "o3",
        "nitrogen_dioksida": "no2",
        "max": "max",
    }
    rows = []
    with ISPU_FILE.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            ts = datetime.strptime(record["tanggal"], "%Y-%m-%d").replace(tzinfo=WIB)
            device = names.get(record["stasiun"], record["stasiun"])
            for column, metric in columns.items():
                rows.append(Row(device=device, metric=metric, cell=record[column], ts=ts))
    return rows


# --- the raw files are what the examples assume -------------------------------------------------


def test_katulampa_export_has_every_hour_once() -> None:
    rows = katulampa_rows()

    assert len(rows) == 31_224 * 3
    assert len({(row.device, row.ts) for row in rows}) == len(rows)


def test_dsda_export_names_map_to_every_gate() -> None:
    config = load_example("dsda-2019-04")
    device_ids = {device["id"] for device in config["devices"]}

    rows = dsda_rows(config)

    assert len(rows) == 31_093
    assert {row.device for row in rows} == device_ids


def test_ispu_export_rows_above_100_match_categories() -> None:
    # Category TIDAK SEHAT (207 days) and SANGAT TIDAK SEHAT (3 days) follow from max > 100.
    rows = [row for row in ispu_rows(load_example("ispu-dki-2023")) if row.metric == "max"]
    numbers = [int(row.cell) for row in rows if row.cell is not None and row.cell.isdigit()]

    assert sum(1 for number in numbers if number > 100) == 210
    assert sum(1 for number in numbers if number > 200) == 3
    assert numbers.count(0) == 18


# --- the reader yields what the raw parser reads ------------------------------------------------


@pytest.mark.parametrize(
    ("example", "data_file", "parse"),
    [
        ("katulampa-manggarai", KATULAMPA_FILE, lambda config: katulampa_rows()),
        ("dsda-2019-04", DSDA_FILE, dsda_rows),
        ("ispu-dki-2023", ISPU_FILE, ispu_rows),
    ],
)
def test_reader_matches_raw_parse(example: str, data_file: Path, parse: Any) -> None:
    config_data = load_example(example)
    config = Config.model_validate(config_data)
    missing = missing_markers(config_data)

    readings = list(read_file_source(data_file, config.sources[0], "UTC"))
    rows = parse(config_data)

    assert len(readings) == len(rows)
    for reading, row in zip(readings, rows, strict=True):
        assert (reading.device, reading.metric, reading.ts) == (row.device, row.metric, row.ts)
        if row.cell is None or row.cell.strip() in missing:
            assert reading.value is None
        else:
            assert reading.value == float(row.cell)


# --- replay --------------------------------------------------------------------------------------


def test_replay_katulampa_manggarai_counts() -> None:
    config = load_example("katulampa-manggarai")
    expected = expected_replay(config, katulampa_rows(), missing_markers(config))

    report = run_replay(KATULAMPA_FILE, "katulampa-manggarai")

    assert_replay_matches(report, expected, [rule["id"] for rule in config["rules"]])


def test_replay_dsda_2019_04_counts() -> None:
    config = load_example("dsda-2019-04")
    expected = expected_replay(config, dsda_rows(config), missing_markers(config))

    report = run_replay(DSDA_FILE, "dsda-2019-04")

    assert_replay_matches(report, expected, [rule["id"] for rule in config["rules"]])


def test_replay_ispu_dki_2023_counts() -> None:
    config = load_example("ispu-dki-2023")
    expected = expected_replay(config, ispu_rows(config), missing_markers(config))

    report = run_replay(ISPU_FILE, "ispu-dki-2023")

    assert_replay_matches(report, expected, [rule["id"] for rule in config["rules"]])
