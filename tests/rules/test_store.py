"""Store tests, run against SQLite and against PostgreSQL when a server is reachable."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from sqlalchemy import Engine, inspect, select
from sqlmodel import Session

from rules.config import Config
from rules.engine import Instance
from rules.pipeline import Pipeline
from rules.readings import RawReading
from rules.store import ops
from rules.store.db import connect
from rules.store.models import ActionRun, Alert, AuditEntry, DispatchJob, Reading, RejectedReading

POSTGRES_URL = os.environ.get("SIMPUL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2025, 1, 15, 3, 0, tzinfo=UTC)

CONFIG = """
agencies:
  - id: dinas-sda
    name: Dinas SDA
    teams: [{id: tim-pompa, name: Tim Pompa}]
kinds:
  water_level: {metrics: {level: {unit: cm, min: -100, max: 2000}}}
devices:
  - id: pa-manggarai
    name: PA Manggarai
    agency: dinas-sda
    kind: water_level
    location: {lat: -6.2078, lon: 106.8484}
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    severity: high
    when: {device: pa-manggarai, metric: level, above: 850}
    then:
      - alert: {message: "Tinggi muka air {value} cm di {device.name}"}
      - dispatch: {team: tim-pompa, title: "Periksa pompa {device.name}", due: 2h}
"""


def _postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = connect(f"sqlite:///{tmp_path}/store.db")
        yield engine
        engine.dispose()
        return

    if not _postgres_available():
        pytest.skip(f"no PostgreSQL server reachable at {POSTGRES_URL}; set SIMPUL_TEST_POSTGRES_URL to run these")
    import psycopg

    name = f"simpul_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = connect(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _config() -> Config:
    return Config.model_validate(yaml.safe_load(CONFIG))


def _row(uid: str, ts: datetime, value: float = 1.0) -> dict[str, object]:
    return {
        "uid": uid,
        "device_id": "pa-manggarai",
        "metric": "level",
        "value_num": value,
        "value_text": None,
        "unit": "cm",
        "ts": ts,
        "received_at": T0,
        "source_id": "test",
        "late": False,
    }


def test_migration_creates_every_table(db: Engine) -> None:
    tables = set(inspect(db).get_table_names())
    expected = {"reading", "rejected_reading", "rule_instance", "alert", "action_run", "dispatch_job", "audit_entry"}
    assert expected <= tables


def test_migration_runs_twice_without_change(db: Engine) -> None:
    from rules.store.db import upgrade

    upgrade(db)
    assert "alembic_version" in inspect(db).get_table_names()


def test_stored_readings_found_by_uid_and_key(db: Engine) -> None:
    with Session(db) as session:
        ops.insert_readings(session=session, rows=[_row("a", T0), _row("b", T0 + timedelta(minutes=1))])
        session.commit()
    with Session(db) as session:
        uids, keys = ops.find_stored_readings(
            session=session,
            uids=["a", "c"],
            keys=[
                ("pa-manggarai", "level", T0 + timedelta(minutes=1)),
                ("pa-manggarai", "level", T0 + timedelta(minutes=2)),
            ],
        )

    assert uids == {"a"}
    assert keys == {("pa-manggarai", "level", T0 + timedelta(minutes=1))}


def test_insert_skips_row_colliding_with_stored_one(db: Engine) -> None:
    with Session(db) as session:
        ops.insert_readings(session=session, rows=[_row("a", T0)])
        ops.insert_readings(session=session, rows=[_row("a", T0 + timedelta(minutes=5)), _row("d", T0)])
        session.commit()
    with Session(db) as session:
        stored = session.execute(select(Reading.uid, Reading.ts)).all()

    assert [tuple(row) for row in stored] == [("a", T0)]


def test_pipeline_answers_duplicates_by_id_and_key(db: Engine) -> None:
    pipeline = Pipeline(_config(), db, event_clock=True)
    first = pipeline.process(
        "test",
        [
            RawReading("pa-manggarai", "level", 700, T0, id="msg-1"),
            RawReading("pa-manggarai", "level", 710, T0 + timedelta(minutes=1)),
        ],
    )
    again = pipeline.process(
        "test",
        [
            RawReading("pa-manggarai", "level", 720, T0 + timedelta(minutes=9), id="msg-1"),
            RawReading("pa-manggarai", "level", 710, T0 + timedelta(minutes=1)),
            RawReading("pa-manggarai", "level", 730, T0 + timedelta(minutes=10)),
        ],
    )

    assert [result.outcome for result in first] == ["accepted", "accepted"]
    assert [result.outcome for result in again] == ["duplicate", "duplicate", "accepted"]


def test_timestamps_come_back_aware_utc(db: Engine) -> None:
    jakarta = datetime(2025, 1, 15, 10, 0, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Jakarta"))
    with Session(db) as session:
        ops.insert_readings(session=session, rows=[_row("z", jakarta)])
        session.commit()
    with Session(db) as session:
        stored = session.execute(select(Reading.ts).where(Reading.uid == "z")).scalar_one()

    assert stored == datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
    assert stored.tzinfo is not None


def test_naive_timestamp_is_refused(db: Engine) -> None:
    with Session(db) as session, pytest.raises(Exception, match="naive datetime"):
        ops.insert_readings(session=session, rows=[_row("n", datetime(2025, 1, 1))])


def test_instances_round_trip(db: Engine) -> None:
    saved = Instance(
        rule_id="r",
        device_id="d",
        definition_hash="h1",
        state="pending",
        since=T0,
        last_fired_at=T0 - timedelta(hours=1),
        fire_times=[T0 - timedelta(hours=1)],
        flapping=True,
        open_alert_id=7,
    )
    with Session(db) as session:
        ops.save_instances(session=session, instances=[saved], now=T0)
        session.commit()

    [loaded] = ops.load_instances(engine=db)
    assert (loaded.rule_id, loaded.device_id, loaded.state) == ("r", "d", "pending")
    assert loaded.since == T0
    assert loaded.fire_times == [T0 - timedelta(hours=1)]
    assert loaded.flapping is True
    assert loaded.open_alert_id == 7


def test_pipeline_opens_alert_with_dispatch_job(db: Engine) -> None:
    pipeline = Pipeline(_config(), db, event_clock=True)
    results = pipeline.process(
        "test",
        [
            RawReading("pa-manggarai", "level", 800, T0),
            RawReading("pa-manggarai", "level", 860, T0 + timedelta(minutes=10)),
            RawReading("pa-manggarai", "level", "sepuluh", T0 + timedelta(minutes=20)),
        ],
    )

    assert [result.outcome for result in results] == ["accepted", "accepted", "rejected"]
    with Session(db) as session:
        [alert] = session.execute(select(Alert)).scalars().all()
        [job] = session.execute(select(DispatchJob)).scalars().all()
        runs = session.execute(select(ActionRun).order_by(ActionRun.action_index)).scalars().all()
        [rejected] = session.execute(select(RejectedReading)).scalars().all()
    assert alert.message == "Tinggi muka air 860 cm di PA Manggarai"
    assert alert.opened_at == T0 + timedelta(minutes=10)
    assert alert.status == "open"
    assert job.team_id == "tim-pompa"
    assert job.due_at == T0 + timedelta(minutes=10, hours=2)
    assert (job.lat, job.lon) == (-6.2078, 106.8484)
    assert [(run.type, run.status) for run in runs] == [("alert", "succeeded"), ("dispatch", "succeeded")]
    assert rejected.reason == "not_a_number"
    assert rejected.raw_value == "sepuluh"


def test_acknowledge_and_resolve_write_audit(db: Engine) -> None:
    pipeline = Pipeline(_config(), db, event_clock=True)
    pipeline.process("test", [RawReading("pa-manggarai", "level", 900, T0)])
    [alert] = ops.list_alerts(engine=db)
    assert alert.id is not None

    acknowledged = ops.acknowledge_alert(engine=db, alert_id=alert.id, by="sari", note="tim menuju lokasi")
    resolved = ops.resolve_alert(engine=db, alert_id=alert.id, by="budi", note="pompa menyala")

    assert acknowledged.status == "acknowledged"
    assert acknowledged.acknowledged_by == "sari"
    assert resolved.status == "resolved"
    assert resolved.resolved_by == "budi"
    assert resolved.resolve_note == "pompa menyala"
    with Session(db) as session:
        audit = session.execute(select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id)).all()
    assert [tuple(row) for row in audit] == [("sari", "alert_acknowledged"), ("budi", "alert_resolved")]


def test_acknowledging_resolved_alert_is_refused(db: Engine) -> None:
    pipeline = Pipeline(_config(), db, event_clock=True)
    pipeline.process("test", [RawReading("pa-manggarai", "level", 900, T0)])
    [alert] = ops.list_alerts(engine=db)
    assert alert.id is not None
    ops.resolve_alert(engine=db, alert_id=alert.id, by="budi")

    with pytest.raises(ops.AlertStateError, match="only an open alert"):
        ops.acknowledge_alert(engine=db, alert_id=alert.id, by="sari")


def test_unknown_alert_is_not_found(db: Engine) -> None:
    with pytest.raises(ops.AlertNotFound, match="alert 999 not found"):
        ops.resolve_alert(engine=db, alert_id=999, by="budi")


def test_latest_values_ignore_late_readings(db: Engine) -> None:
    pipeline = Pipeline(_config(), db, event_clock=True)
    pipeline.process(
        "test",
        [
            RawReading("pa-manggarai", "level", 700, T0 + timedelta(minutes=30)),
            RawReading("pa-manggarai", "level", 650, T0),
        ],
    )

    latest = ops.load_latest_values(engine=db)
    assert latest == {("pa-manggarai", "level"): (T0 + timedelta(minutes=30), 700.0)}
    with Session(db) as session:
        late = session.execute(select(Reading.ts).where(Reading.late.is_(True))).scalars().all()
    assert late == [T0]
