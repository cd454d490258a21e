"""Normalisation of raw readings: values, timestamps and the reasons for rejecting them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from rules.config import Metric
from rules.engine import NormalReading
from rules.normalize import Normalizer, Rejection, check_value
from rules.readings import RawReading
from tests.conftest import load_config

CONFIG = """
simpul: {timezone: Asia/Jakarta}
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
      flow: {unit: m3/s}
  pump:
    metrics:
      power: {states: ["on", "off"]}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - {id: pompa-1, name: Pompa 1, agency: dinas-sda, kind: pump}
"""

T0 = datetime(2025, 1, 15, 3, 0, tzinfo=UTC)


@pytest.fixture
def normalizer() -> Normalizer:
    return Normalizer(load_config(CONFIG))


def level(normalizer: Normalizer) -> Metric:
    return normalizer.metrics["manggarai"]["level"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (862, 862.0),
        (862.5, 862.5),
        ("862.5", 862.5),
        (" 12 ", 12.0),
        (-100, -100.0),
        (2000, 2000.0),
    ],
)
def test_numbers_become_floats(normalizer: Normalizer, value: object, expected: float) -> None:
    checked = check_value(value, level(normalizer))

    assert checked == expected
    assert type(checked) is float


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (None, "missing_value", "the value is empty"),
        ("  ", "missing_value", "the value is empty"),
        ("unavailable", "unavailable", "the sender reported 'unavailable' instead of a number"),
        ("NaN", "unavailable", "the sender reported 'NaN' instead of a number"),
        (float("nan"), "not_a_number", "nan is not a finite number"),
        (float("inf"), "not_a_number", "inf is not a finite number"),
        ("inf", "not_a_number", "'inf' is not a finite number"),
        (True, "not_a_number", "True is not a number"),
        ("sepuluh", "not_a_number", "'sepuluh' is not a number"),
        ([1], "not_a_number", "[1] is not a number"),
        (-101, "out_of_range", "-101 is below the metric's min -100"),
        (2000.5, "out_of_range", "2000.5 is above the metric's max 2000"),
        ("2001", "out_of_range", "2001 is above the metric's max 2000"),
        (10**400, "out_of_range", "an integer of 1329 bits is beyond the range of a number"),
    ],
    ids=[
        "none",
        "blank",
        "unavailable",
        "nan-text",
        "nan",
        "infinity",
        "infinity-text",
        "boolean",
        "word",
        "list",
        "below-min",
        "above-max",
        "text-above-max",
        "huge-integer",
    ],
)
def test_invalid_values_are_rejected_with_reason(
    normalizer: Normalizer, value: object, reason: str, detail: str
) -> None:
    checked = check_value(value, level(normalizer))

    assert isinstance(checked, Rejection)
    assert checked.reason == reason
    assert checked.detail == detail


def test_number_without_range_is_accepted(normalizer: Normalizer) -> None:
    flow = normalizer.metrics["manggarai"]["flow"]

    assert check_value(-5, flow) == -5.0
    assert check_value(1e300, flow) == 1e300


def test_state_metric_takes_known_states(normalizer: Normalizer) -> None:
    power = normalizer.metrics["pompa-1"]["power"]

    assert check_value(" ON ", power) == "on"
    assert check_value(False, power) == "off"
    unknown = check_value(1, power)
    assert isinstance(unknown, Rejection)
    assert unknown.reason == "unknown_state"


def test_aware_utc_timestamp_kept(normalizer: Normalizer) -> None:
    raw = RawReading("manggarai", "level", 700, T0, id="m-1")

    normal = normalizer.normalize(raw, source_id="gateway")

    assert normal == NormalReading("manggarai", "level", 700.0, T0, "m-1", "gateway", "cm")
    assert isinstance(normal, NormalReading)
    assert normal.ts.tzinfo is UTC


@pytest.mark.parametrize(
    "ts",
    [
        T0.astimezone(ZoneInfo("Asia/Jakarta")),
        T0.astimezone(timezone(timedelta(hours=8))),
        T0.replace(tzinfo=ZoneInfo("UTC")),
        "2025-01-15T10:00:00+07:00",
        "2025-01-15T03:00:00Z",
        "2025-01-15T10:00:00",
        T0.astimezone(ZoneInfo("Asia/Jakarta")).replace(tzinfo=None),
        T0.timestamp(),
        int(T0.timestamp() * 1000),
    ],
    ids=["jakarta", "plus-8", "zoneinfo-utc", "offset-text", "z-text", "naive-text", "naive", "epoch", "epoch-ms"],
)
def test_timestamps_become_utc(normalizer: Normalizer, ts: object) -> None:
    normal = normalizer.normalize(RawReading("manggarai", "level", 700, ts), source_id="gateway")  # type: ignore[arg-type]

    assert isinstance(normal, NormalReading)
    assert normal.ts == T0
    assert normal.ts.utcoffset() == timedelta(0)


def test_naive_time_read_in_source_zone(normalizer: Normalizer) -> None:
    raw = RawReading("manggarai", "level", 700, "2025-01-15T11:00:00")

    normal = normalizer.normalize(raw, source_id="gateway", zone="Asia/Makassar")

    assert isinstance(normal, NormalReading)
    assert normal.ts == T0


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (
            RawReading("pintu-x", "level", 700, T0),
            "unknown_device",
            "device 'pintu-x' is not registered in config.yaml",
        ),
        (
            RawReading("manggarai", "debit", 700, T0),
            "unknown_metric",
            "metric 'debit' is not defined for manggarai (known: flow, level)",
        ),
        (RawReading("manggarai", "level", 700, None), "missing_timestamp", "the timestamp is missing"),
        (
            RawReading("manggarai", "level", 700, "kemarin"),
            "invalid_timestamp",
            "invalid timestamp 'kemarin': use ISO 8601, e.g. 2025-01-31T14:00:00+07:00",
        ),
        (RawReading("manggarai", "level", "rusak", T0), "not_a_number", "'rusak' is not a number"),
    ],
    ids=["unknown-device", "unknown-metric", "missing-timestamp", "invalid-timestamp", "invalid-value"],
)
def test_rejection_keeps_raw_reading(normalizer: Normalizer, raw: RawReading, reason: str, detail: str) -> None:
    rejection = normalizer.normalize(raw, source_id="gateway")

    assert rejection == Rejection(raw, reason, detail)


def test_future_timestamp_rejected_live(normalizer: Normalizer) -> None:
    raw = RawReading("manggarai", "level", 700, T0 + timedelta(hours=1))

    live = normalizer.normalize(raw, source_id="gateway", now=T0)
    replayed = normalizer.normalize(raw, source_id="gateway")

    assert isinstance(live, Rejection)
    assert live.reason == "future_timestamp"
    assert isinstance(replayed, NormalReading)
