"""Time zones: schedules in the agency's zone, and timestamps without an offset.

Jakarta is WIB (UTC+7) and Jayapura is WIT (UTC+9). Neither zone has daylight saving time, so
the Jayapura clock is always two hours ahead of the Jakarta clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine as DbEngine
from sqlalchemy import text

from rules.readings import RawReading
from tests.conftest import PipelineFactory, fetch_alerts, fetch_readings, opened_at, resolved_at

CONFIG = """
simpul: {timezone: Asia/Jakarta}
agencies:
  - {id: bpbd-dki, name: BPBD DKI Jakarta, timezone: Asia/Jakarta}
  - {id: bpbd-papua, name: BPBD Provinsi Papua, timezone: Asia/Jayapura}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
devices:
  - {id: pos-ciliwung, name: Pos Ciliwung, agency: bpbd-dki, kind: water_level}
  - {id: pos-jayapura, name: Pos Kali Acai, agency: bpbd-papua, kind: water_level}
sources:
  - id: awlr-papua
    type: http
    auth: {token: "${SIMPUL_TEST_PAPUA_TOKEN}"}
    timezone: Asia/Jayapura
  - id: awlr-dki
    type: http
    auth: {token: "${SIMPUL_TEST_DKI_TOKEN}"}
rules:
  - id: jam-kerja-dki
    name: Jam kerja DKI
    agency: bpbd-dki
    when: {device: pos-ciliwung, metric: level, above: 850}
    schedule: {days: [mon, tue, wed, thu, fri], from: "06:00", to: "18:00"}
    then:
      - alert: {message: "Siaga pada {ts}"}
  - id: jam-kerja-papua
    name: Jam kerja Papua
    agency: bpbd-papua
    when: {device: pos-jayapura, metric: level, above: 850}
    schedule: {days: [mon, tue, wed, thu, fri], from: "06:00", to: "18:00"}
    then:
      - alert: {message: "Siaga pada {ts}"}
"""

DEVICES = ("pos-ciliwung", "pos-jayapura")


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    """Return a UTC time in January 2025, in which the 6th is a Monday."""
    return datetime(2025, 1, day, hour, minute, tzinfo=UTC)


def level(device: str, ts: datetime | str, value: float = 900) -> RawReading:
    return RawReading(device=device, metric="level", value=value, ts=ts)


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "fired"),
    [
        # Monday 17:00 WIB, 19:00 WIT.
        (utc(6, 10), ["pos-ciliwung"]),
        # Monday 05:00 WIB, 07:00 WIT.
        (utc(5, 22), ["pos-jayapura"]),
        # Monday 10:00 WIB, 12:00 WIT.
        (utc(6, 3), ["pos-ciliwung", "pos-jayapura"]),
        # Monday 06:00 WIB (start is inclusive), 08:00 WIT.
        (utc(5, 23), ["pos-ciliwung", "pos-jayapura"]),
        # Monday 17:59 WIB, 19:59 WIT.
        (utc(6, 10, 59), ["pos-ciliwung"]),
        # Monday 18:00 WIB (end is exclusive), 20:00 WIT.
        (utc(6, 11), []),
        # Monday 04:00 WIB, 06:00 WIT.
        (utc(5, 21), ["pos-jayapura"]),
        # Saturday 05:00 WIB, 07:00 WIT: a weekend in both zones, though Friday in UTC.
        (utc(10, 22), []),
        # Saturday 10:00 WIB, 12:00 WIT.
        (utc(11, 3), []),
    ],
)
def test_schedule_in_agency_zone(
    make_pipeline: PipelineFactory, db: DbEngine, instant: datetime, fired: list[str]
) -> None:
    pipeline = make_pipeline(CONFIG)

    pipeline.process("awlr-dki", [level(device, instant) for device in DEVICES])

    assert sorted(alert.device_id for alert in fetch_alerts(db)) == fired


def test_alert_time_stored_utc_and_shown_local(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(CONFIG)

    pipeline.process("awlr-dki", [level(device, utc(6, 3)) for device in DEVICES])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [utc(6, 3), utc(6, 3)]
    assert [alert.message for alert in alerts] == ["Siaga pada 2025-01-06 10:00 WIB", "Siaga pada 2025-01-06 12:00 WIT"]


def test_reading_outside_schedule_clears_alert(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # Fires at 17:00 WIB. The next reading, at 18:30 WIB, is still above 850 but outside the window.
    pipeline = make_pipeline(CONFIG)

    pipeline.process("awlr-dki", [level("pos-ciliwung", utc(6, 10)), level("pos-ciliwung", utc(6, 11, 30))])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [utc(6, 10)]
    assert resolved_at(alerts) == [utc(6, 11, 30)]


def test_reading_inside_schedule_fires_after_quiet_hours(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # The level is high all night, and the first reading inside the window (06:15 WIB Monday) fires.
    pipeline = make_pipeline(CONFIG)

    pipeline.process(
        "awlr-dki",
        [level("pos-ciliwung", utc(5, 20)), level("pos-ciliwung", utc(5, 22)), level("pos-ciliwung", utc(5, 23, 15))],
    )

    assert opened_at(fetch_alerts(db)) == [utc(5, 23, 15)]


def test_duration_ending_outside_schedule_does_not_fire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # True from 17:50 WIB, so the 15 minutes end at 18:05 WIB, after the window closed at 18:00.
    pipeline = make_pipeline(CONFIG.replace("above: 850}", "above: 850, for: 15m}"))

    pipeline.process("awlr-dki", [level("pos-ciliwung", utc(6, 10, 50)), level("pos-ciliwung", utc(6, 11, 10))])

    assert fetch_alerts(db) == []


def test_duration_inside_schedule_fires(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(CONFIG.replace("above: 850}", "above: 850, for: 15m}"))

    pipeline.process("awlr-dki", [level("pos-ciliwung", utc(6, 10, 30)), level("pos-ciliwung", utc(6, 10, 50))])

    assert opened_at(fetch_alerts(db)) == [utc(6, 10, 45)]


OVERNIGHT_CONFIG = CONFIG.replace(
    'schedule: {days: [mon, tue, wed, thu, fri], from: "06:00", to: "18:00"}',
    'schedule: {days: [mon], from: "22:00", to: "06:00"}',
)


@pytest.mark.parametrize(
    ("instant", "fired"),
    [
        # Monday 23:00 WIB.
        (utc(6, 16), True),
        # Tuesday 05:59 WIB, in the window that started on Monday.
        (utc(6, 22, 59), True),
        # Tuesday 06:00 WIB.
        (utc(6, 23), False),
        # Monday 02:00 WIB belongs to the window that started on Sunday.
        (utc(5, 19), False),
        # Tuesday 23:00 WIB.
        (utc(7, 16), False),
    ],
)
def test_overnight_schedule_belongs_to_start_day(
    make_pipeline: PipelineFactory, db: DbEngine, instant: datetime, fired: bool
) -> None:
    pipeline = make_pipeline(OVERNIGHT_CONFIG)

    pipeline.process("awlr-dki", [level("pos-ciliwung", instant)])

    assert opened_at(fetch_alerts(db)) == ([instant] if fired else [])


# --- timestamps without an offset --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "timestamp"),
    [
        # The source declares Asia/Jayapura.
        ("awlr-papua", "2025-01-06 12:00:00"),
        ("awlr-papua", "2025-01-06T12:00"),
        # The source declares no zone, so the hub's default (Asia/Jakarta) applies.
        ("awlr-dki", "2025-01-06 10:00:00"),
        # A source that is not in the config also gets the default.
        ("test", "2025-01-06T10:00:00"),
        # An explicit offset wins over the source's zone.
        ("awlr-papua", "2025-01-06T10:00:00+07:00"),
        ("awlr-papua", "2025-01-06T03:00:00Z"),
    ],
)
def test_timestamp_read_in_source_zone(
    make_pipeline: PipelineFactory, db: DbEngine, source: str, timestamp: str
) -> None:
    pipeline = make_pipeline(CONFIG)

    pipeline.process(source, [level("pos-ciliwung", timestamp, value=700)])

    assert [row.ts for row in fetch_readings(db)] == [utc(6, 3)]


def test_timestamp_read_in_configured_default_zone(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(CONFIG.replace("simpul: {timezone: Asia/Jakarta}", "simpul: {timezone: Asia/Makassar}"))

    pipeline.process("awlr-dki", [level("pos-ciliwung", "2025-01-06 11:00:00", value=700)])

    assert [row.ts for row in fetch_readings(db)] == [utc(6, 3)]


def test_timestamps_stored_as_utc(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(CONFIG)

    pipeline.process("awlr-papua", [level("pos-jayapura", "2025-01-06 12:00:00")])

    with db.connect() as connection:
        stored_reading = connection.execute(text("SELECT ts FROM reading")).scalar_one()
        stored_alert = connection.execute(text("SELECT opened_at FROM alert")).scalar_one()
    assert stored_reading == "2025-01-06 03:00:00.000000"
    assert stored_alert == "2025-01-06 03:00:00.000000"


def test_naive_timestamp_drives_schedule_in_source_zone(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # 07:00 WIT on Monday is inside the Papua window. Read as WIB, it would be 05:00 and outside.
    pipeline = make_pipeline(CONFIG)

    pipeline.process("awlr-papua", [level("pos-jayapura", "2025-01-06 07:00:00")])

    assert opened_at(fetch_alerts(db)) == [utc(5, 22)]
