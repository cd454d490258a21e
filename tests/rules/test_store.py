"""Store tests, run against SQLite and against PostgreSQL when a server is reachable."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import Engine, create_engine, inspect, select
from sqlmodel import Session

from rules.config import Config
from rules.engine import Instance
from rules.pipeline import Pipeline, _ReadingWriter
from rules.readings import RawReading
from rules.store import ops
from rules.store.db import checkpoint_wal, connect
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


# --- the pipeline's write path: driver-level statements on a Core connection ----------------------

WIB = ZoneInfo("Asia/Jakarta")


def _many_rows(count: int) -> list[dict[str, object]]:
    """Rows for ``count`` readings one minute apart, with every kind of value the statements bind.

    Every third row has a sender id, every fifth a text value, and every seventh a ts in WIB.
    """
    rows = []
    for index in range(count):
        ts = T0 + timedelta(minutes=index)
        text = index % 5 == 0
        rows.append(
            {
                "uid": f"m-{index}" if index % 3 == 0 else None,
                "device_id": "pa-manggarai",
                "metric": "state" if text else "level",
                "value_num": None if text else 700.0 + index,
                "value_text": "on" if text else None,
                "unit": None if text else "cm",
                "ts": ts.astimezone(WIB) if index % 7 == 0 else ts,
                "received_at": T0,
                "source_id": "test",
                "late": index % 11 == 0,
            }
        )
    return rows


def test_connection_insert_reads_back_through_orm(db: Engine) -> None:
    rows = _many_rows(1234)

    with db.begin() as connection:
        ops.insert_readings(session=connection, rows=rows)
    with Session(db) as session:
        stored = session.execute(select(Reading).order_by(Reading.id)).scalars().all()

    assert len(stored) == len(rows)
    for row, reading in zip(rows, stored, strict=True):
        columns = ("uid", "device_id", "metric", "value_num", "value_text", "unit", "ts", "source_id", "late")
        assert {name: getattr(reading, name) for name in columns} == {name: row[name] for name in columns}
        assert reading.ts.tzinfo is not None
        assert reading.received_at == T0


def test_connection_insert_skips_colliding_rows(db: Engine) -> None:
    first, second, third = _many_rows(3)
    again = dict(first, ts=T0 + timedelta(hours=5))

    with db.begin() as connection:
        ops.insert_readings(session=connection, rows=[first, second])
    with db.begin() as connection:
        ops.insert_readings(session=connection, rows=[again, second, third])
    with Session(db) as session:
        stored = session.execute(select(Reading.uid, Reading.ts).order_by(Reading.id)).all()

    assert [tuple(row) for row in stored] == [(row["uid"], row["ts"]) for row in (first, second, third)]


def test_keys_of_connection_rows_are_found(db: Engine) -> None:
    rows = _many_rows(450)
    with db.begin() as connection:
        ops.insert_readings(session=connection, rows=rows)
    stored = [(str(row["device_id"]), str(row["metric"]), cast(datetime, row["ts"])) for row in rows]
    missing = [("pa-manggarai", "level", T0 - timedelta(minutes=1)), ("pa-depok", "level", T0)]
    in_wib = [(device, metric, ts.astimezone(WIB)) for device, metric, ts in stored[:5]]

    with db.connect() as connection:
        _uids, found = ops.find_stored_readings(session=connection, uids=[], keys=[*stored, *missing])
        _uids, found_in_wib = ops.find_stored_readings(session=connection, uids=[], keys=in_wib)

    assert found == set(stored)
    assert found_in_wib == set(in_wib)


def test_large_batch_stored_and_evaluated(db: Engine) -> None:
    pipeline = Pipeline(_config(), db, event_clock=True)
    values = [900 if index % 100 == 50 else 800 for index in range(1300)]
    raws = [RawReading("pa-manggarai", "level", value, T0 + timedelta(minutes=i)) for i, value in enumerate(values)]

    results = pipeline.process("test", raws)

    assert [result.outcome for result in results] == ["accepted"] * 1300
    assert pipeline.tally.readings["accepted"] == 1300
    with Session(db) as session:
        stored = session.execute(select(Reading.ts, Reading.value_num).order_by(Reading.id)).all()
        alerts = session.execute(select(Alert).order_by(Alert.id)).scalars().all()
    assert [tuple(row) for row in stored] == [(raw.ts, float(value)) for raw, value in zip(raws, values, strict=True)]
    assert [alert.opened_at for alert in alerts] == [T0 + timedelta(minutes=i) for i in range(50, 1300, 100)]
    assert [alert.resolved_at for alert in alerts] == [T0 + timedelta(minutes=i + 1) for i in range(50, 1300, 100)]


def test_failed_background_insert_fails_transaction(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path}/store.db")
    thread = Pipeline(_config(), db, event_clock=True)._store_thread
    assert thread is not None, "a SQLite file store inserts readings on a second thread"
    broken = [{"uid": "no-other-columns"}]

    try:
        with (
            pytest.raises(KeyError, match="device_id"),
            db.begin() as connection,
            _ReadingWriter(connection, thread) as writer,
        ):
            writer.insert(broken)
            writer.insert(_many_rows(3))
        with (
            pytest.raises(ValueError, match="engine failed"),
            db.begin() as connection,
            _ReadingWriter(connection, thread) as writer,
        ):
            writer.insert(_many_rows(3))
            writer.insert(broken)
            raise ValueError("engine failed")
        with Session(db) as session:
            stored = session.execute(select(Reading.uid)).scalars().all()
    finally:
        db.dispose()

    assert stored == []


def test_checkpoint_copies_wal_into_database_file(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path}/store.db")
    try:
        with db.begin() as connection:
            ops.insert_readings(session=connection, rows=_many_rows(500))
        size_before = (tmp_path / "store.db").stat().st_size

        checkpoint_wal(db)
        size_after = (tmp_path / "store.db").stat().st_size
    finally:
        db.dispose()

    assert size_after > size_before


def test_failed_checkpoint_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "notes.db").write_text("not a database")
    db = create_engine(f"sqlite:///{tmp_path}/notes.db")

    try:
        checkpoint_wal(db)
    finally:
        db.dispose()

    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "WAL checkpoint of sqlite:///" in caplog.records[0].getMessage()
    assert "file is not a database" in caplog.records[0].getMessage()


def test_connection_rejects_naive_timestamp(db: Engine) -> None:
    naive = dict(_many_rows(1)[0], ts=datetime(2025, 1, 1))

    with pytest.raises(ValueError, match="naive datetime"), db.begin() as connection:
        ops.insert_readings(session=connection, rows=[naive])
    with pytest.raises(ValueError, match="naive datetime"), db.connect() as connection:
        ops.find_stored_readings(session=connection, uids=[], keys=[("pa-manggarai", "level", datetime(2025, 1, 1))])
