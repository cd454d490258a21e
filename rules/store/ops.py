"""Small keyword-only store functions.

Functions that take a ``session`` join the caller's transaction; it may be an ORM Session or a
Core Connection, since the pipeline's hot path uses a Connection to avoid ORM overhead. The
others open and commit their own transaction.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from rules.engine import Instance
from rules.store.models import (
    ActionRun,
    Alert,
    AuditEntry,
    DispatchJob,
    Reading,
    RejectedReading,
    RuleInstance,
    utc_now,
)

ALERT_OPEN, ALERT_ACKNOWLEDGED, ALERT_RESOLVED = "open", "acknowledged", "resolved"
RUN_PENDING, RUN_SUCCEEDED, RUN_FAILED, RUN_DEAD = "pending", "succeeded", "failed", "dead"
RUN_HELD, RUN_SKIPPED = "held", "skipped"


class AlertNotFound(LookupError):
    """Raised when an alert id does not exist."""


class AlertStateError(ValueError):
    """Raised when an alert cannot take the requested step, e.g. acknowledging a resolved alert."""


# --- readings ------------------------------------------------------------------------------------


def _dialect(session: Session | Connection) -> str:
    return session.dialect.name if isinstance(session, Connection) else session.get_bind().dialect.name


def _insert_ignoring_conflicts(session: Session | Connection, table: Any) -> Any:
    builder = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
    return builder(table.__table__).on_conflict_do_nothing()


_READING_COLUMNS = (
    "uid",
    "device_id",
    "metric",
    "value_num",
    "value_text",
    "unit",
    "ts",
    "received_at",
    "source_id",
    "late",
)


def insert_readings(*, session: Session | Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert readings already known to be new; a row that collides with a stored one is skipped.

    This is the hot path of ingestion and replay, so on a Core Connection the rows go to the
    driver directly: SQLAlchemy's per-value type processing cost more than the insert itself.
    Timestamps are written as the UTCDateTime column stores them. On SQLite the rows go in
    multi-row INSERT statements, because sqlite3 releases the GIL for the whole of one statement
    but takes it back after every row of an ``executemany``. Another thread therefore keeps
    running while SQLite inserts the rows.
    """
    if not rows:
        return
    if not isinstance(session, Connection):
        session.execute(_insert_ignoring_conflicts(session, Reading), list(rows))
        return

    sqlite = session.dialect.name == "sqlite"
    convert = _sqlite_timestamp if sqlite else _aware_utc
    # A batch shares one received_at, and readings of many devices often share a ts, so each
    # distinct timestamp is converted once.
    converted: dict[datetime, Any] = {}

    def timestamp(value: datetime) -> Any:
        text = converted.get(value)
        if text is None:
            text = converted[value] = convert(value)
        return text

    values = [
        (
            row["uid"],
            row["device_id"],
            row["metric"],
            row["value_num"],
            row["value_text"],
            row["unit"],
            timestamp(row["ts"]),
            timestamp(row["received_at"]),
            row["source_id"],
            row["late"],
        )
        for row in rows
    ]
    if not sqlite:
        session.exec_driver_sql(_POSTGRES_READING_INSERT, values)
        return

    per_statement = _sqlite_rows_per_statement(session)
    for start in range(0, len(values), per_statement):
        chunk = values[start : start + per_statement]
        session.exec_driver_sql(_sqlite_reading_insert(len(chunk)), tuple(itertools.chain.from_iterable(chunk)))


_COLUMN_LIST = ", ".join(_READING_COLUMNS)
_POSTGRES_READING_INSERT = (
    f"INSERT INTO reading ({_COLUMN_LIST}) VALUES ({', '.join(['%s'] * len(_READING_COLUMNS))}) ON CONFLICT DO NOTHING"
)
# Rows per multi-row INSERT on SQLite, unless the library's bound-parameter limit allows fewer.
# Larger statements measured no faster on SQLite 3.40.
_SQLITE_MAX_ROWS_PER_STATEMENT = 500


def _sqlite_rows_per_statement(connection: Connection) -> int:
    # SQLite before 3.32 allows 999 bound parameters per statement, later versions 32766.
    driver = connection.connection.driver_connection
    limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if driver is not None else 999
    return max(1, min(_SQLITE_MAX_ROWS_PER_STATEMENT, limit // len(_READING_COLUMNS)))


@functools.lru_cache(maxsize=64)
def _sqlite_reading_insert(rows: int) -> str:
    placeholders = "(" + ", ".join("?" * len(_READING_COLUMNS)) + ")"
    return f"INSERT OR IGNORE INTO reading ({_COLUMN_LIST}) VALUES " + ", ".join([placeholders] * rows)


def _sqlite_timestamp(value: datetime) -> str:
    """Return the text SQLAlchemy's SQLite DATETIME type writes for the naive UTC form of ``value``."""
    if value.tzinfo is UTC:
        # Slicing off "+00:00" is about a third cheaper than astimezone and replace.
        return value.isoformat(" ", timespec="microseconds")[:26]
    return _aware_utc(value).replace(tzinfo=None).isoformat(" ", timespec="microseconds")


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the store takes aware UTC datetimes only")
    return value.astimezone(UTC)


def find_stored_readings(
    *, session: Session | Connection, uids: Sequence[str], keys: Sequence[tuple[str, str, datetime]]
) -> tuple[set[str], set[tuple[str, str, datetime]]]:
    """Return which of ``uids`` and which (device, metric, ts) ``keys`` are already stored."""
    stored_uids: set[str] = set()
    stored_keys: set[tuple[str, str, datetime]] = set()
    # Chunks keep each statement under SQLite's bound-parameter limit.
    for start in range(0, len(uids), 500):
        chunk = list(uids[start : start + 500])
        stored_uids.update(session.execute(select(Reading.uid).where(Reading.uid.in_(chunk))).scalars())
    if not keys:
        return stored_uids, stored_keys

    # Keys are joined against the unique (device_id, metric, ts) index in chunks, one statement
    # per chunk: a query per key cost 0.2 to 0.5 ms each, and a row-value IN scans the whole
    # index on SQLite 3.40. The statement is plain SQL because SQLAlchemy compiled a VALUES
    # construct again on every call.
    connection = session if isinstance(session, Connection) else session.connection()
    sqlite = connection.dialect.name == "sqlite"
    convert = _sqlite_timestamp if sqlite else _aware_utc
    for start in range(0, len(keys), _KEYS_PER_LOOKUP):
        chunk = keys[start : start + _KEYS_PER_LOOKUP]
        parameters = [
            value
            for position, (device_id, metric, ts) in enumerate(chunk)
            for value in (position, device_id, metric, convert(ts))
        ]
        found = connection.exec_driver_sql(_stored_keys_query(len(chunk), sqlite), tuple(parameters))
        stored_keys.update(chunk[position] for (position,) in found)
    return stored_uids, stored_keys


# Keys per lookup statement: four bound parameters each stay under the 999 that SQLite before
# 3.32 allows.
_KEYS_PER_LOOKUP = 200


@functools.lru_cache(maxsize=16)
def _stored_keys_query(keys: int, sqlite: bool) -> str:
    row = "(?, ?, ?, ?)" if sqlite else "(%s, %s, %s, %s)"
    rows = ", ".join([row] * keys)
    return (
        f"WITH lookup (position, device_id, metric, ts) AS (VALUES {rows}) "
        "SELECT lookup.position FROM lookup JOIN reading ON reading.device_id = lookup.device_id "
        "AND reading.metric = lookup.metric AND reading.ts = lookup.ts"
    )


def insert_rejected(*, session: Session | Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(RejectedReading.__table__), list(rows))


def load_latest_values(*, engine: Engine) -> dict[tuple[str, str], tuple[datetime, float | str]]:
    """Return the newest accepted, in-order value per device and metric."""
    newest = (
        select(Reading.device_id, Reading.metric, func.max(Reading.ts).label("ts"))
        .where(Reading.late.is_(False))
        .group_by(Reading.device_id, Reading.metric)
        .subquery()
    )
    query = select(Reading.device_id, Reading.metric, Reading.ts, Reading.value_num, Reading.value_text).join(
        newest,
        (Reading.device_id == newest.c.device_id) & (Reading.metric == newest.c.metric) & (Reading.ts == newest.c.ts),
    )
    with Session(engine) as session:
        return {
            (row.device_id, row.metric): (row.ts, row.value_text if row.value_text is not None else row.value_num)
            for row in session.execute(query)
        }


def load_history(
    *, engine: Engine, keys: dict[tuple[str, str], timedelta], until: datetime
) -> list[tuple[str, str, datetime, float]]:
    """Return numeric readings inside each (device, metric) window that ends at ``until``, oldest first."""
    points: list[tuple[str, str, datetime, float]] = []
    with Session(engine) as session:
        for (device_id, metric), window in keys.items():
            query = (
                select(Reading.ts, Reading.value_num)
                .where(Reading.device_id == device_id, Reading.metric == metric, Reading.late.is_(False))
                .where(Reading.ts >= until - window, Reading.value_num.is_not(None))
                .order_by(Reading.ts)
            )
            points.extend((device_id, metric, ts, value) for ts, value in session.execute(query))
    return points


# --- rule instances ------------------------------------------------------------------------------


def load_instances(*, engine: Engine) -> list[Instance]:
    with Session(engine) as session:
        rows = session.execute(select(RuleInstance)).scalars().all()
    return [
        Instance(
            rule_id=row.rule_id,
            device_id=row.device_id,
            definition_hash=row.definition_hash,
            state=row.state,
            since=row.since,
            fired_at=row.fired_at,
            last_fired_at=row.last_fired_at,
            open_alert_id=row.open_alert_id,
            fire_times=[datetime.fromisoformat(text) for text in row.fire_times],
            flapping=row.flapping,
            last_value=row.last_value,
        )
        for row in rows
    ]


def save_instances(*, session: Session | Connection, instances: Iterable[Instance], now: datetime) -> None:
    rows = [
        {
            "rule_id": instance.rule_id,
            "device_id": instance.device_id,
            "definition_hash": instance.definition_hash,
            "state": instance.state,
            "since": instance.since,
            "fired_at": instance.fired_at,
            "last_fired_at": instance.last_fired_at,
            "open_alert_id": instance.open_alert_id,
            "fire_times": [ts.isoformat() for ts in instance.fire_times],
            "flapping": instance.flapping,
            "last_value": instance.last_value,
            "updated_at": now,
        }
        for instance in instances
    ]
    if rows:
        session.execute(_instance_upsert(_dialect(session)), rows)


@functools.cache
def _instance_upsert(dialect: str) -> Any:
    # Built once per dialect: constructing the ON CONFLICT statement cost more than running it.
    builder = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = builder(RuleInstance.__table__)
    keys = ("rule_id", "device_id")
    updated = {
        column.name: statement.excluded[column.name]
        for column in RuleInstance.__table__.columns
        if column.name not in keys
    }
    return statement.on_conflict_do_update(index_elements=list(keys), set_=updated)


def delete_instances(*, session: Session | Connection, keys: Iterable[tuple[str, str]]) -> None:
    for rule_id, device_id in keys:
        row = session.get(RuleInstance, (rule_id, device_id))
        if row is not None:
            session.delete(row)


# --- alerts --------------------------------------------------------------------------------------


def _insert_returning_ids(session: Session | Connection, table: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert rows and return their new ids in the order of ``rows``."""
    if not rows:
        return []
    return [int(row_id) for row_id in session.execute(_insert_returning_id(table), list(rows)).scalars()]


@functools.cache
def _insert_returning_id(table: Any) -> Any:
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)


def open_alerts(*, session: Session | Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    return _insert_returning_ids(session, Alert.__table__, rows)


def unresolved_alert_ids(*, session: Session | Connection, ids: Sequence[int]) -> set[int]:
    table = Alert.__table__
    found: set[int] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        query = select(table.c.id).where(table.c.id.in_(chunk), table.c.status != ALERT_RESOLVED)
        found.update(session.execute(query).scalars())
    return found


def resolve_alerts(*, session: Session | Connection, rows: Sequence[dict[str, Any]], by: str, note: str) -> None:
    """Resolve alerts by id; each row gives ``alert_id`` and the time ``at``."""
    if not rows:
        return
    table = Alert.__table__
    statement = (
        update(table)
        .where(table.c.id == bindparam("alert_id"))
        .values(status=ALERT_RESOLVED, resolved_at=bindparam("at"), resolved_by=by, resolve_note=note)
    )
    session.execute(statement, list(rows))


def resolve_alert_in(*, session: Session | Connection, alert_id: int, at: datetime, by: str, note: str | None) -> bool:
    """Resolve an alert inside the caller's transaction; return False if it was already resolved."""
    table = Alert.__table__
    statement = (
        update(table)
        .where(table.c.id == alert_id, table.c.status != ALERT_RESOLVED)
        .values(status=ALERT_RESOLVED, resolved_at=at, resolved_by=by, resolve_note=note)
    )
    return bool(session.execute(statement).rowcount)


def acknowledge_alert(*, engine: Engine, alert_id: int, by: str, note: str | None = None) -> Alert:
    """Acknowledge an open alert and write the audit entry, in one transaction."""
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise AlertNotFound(f"alert {alert_id} not found")
        if alert.status != ALERT_OPEN:
            raise AlertStateError(f"alert {alert_id} is {alert.status}; only an open alert can be acknowledged")
        now = utc_now()
        alert.status = ALERT_ACKNOWLEDGED
        alert.acknowledged_at = now
        alert.acknowledged_by = by
        alert.acknowledge_note = note
        session.add(alert)
        session.add(
            AuditEntry(at=now, actor=by, action="alert_acknowledged", target=f"alert:{alert_id}", detail={"note": note})
        )
        session.commit()
        session.refresh(alert)
        return alert


def resolve_alert(*, engine: Engine, alert_id: int, by: str, note: str | None = None) -> Alert:
    """Resolve an open or acknowledged alert by hand and write the audit entry, in one transaction."""
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise AlertNotFound(f"alert {alert_id} not found")
        if alert.status == ALERT_RESOLVED:
            raise AlertStateError(f"alert {alert_id} is already resolved")
        now = utc_now()
        resolve_alert_in(session=session, alert_id=alert_id, at=now, by=by, note=note)
        session.add(
            AuditEntry(at=now, actor=by, action="alert_resolved", target=f"alert:{alert_id}", detail={"note": note})
        )
        session.commit()
        session.refresh(alert)
        return alert


def list_alerts(*, engine: Engine, status: str | None = None, limit: int = 100) -> list[Alert]:
    query = select(Alert).order_by(Alert.opened_at.desc(), Alert.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Alert.status == status)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


# --- action runs and dispatch jobs ---------------------------------------------------------------


def list_dispatch_jobs(*, engine: Engine, status: str | None = None, limit: int = 100) -> list[DispatchJob]:
    query = select(DispatchJob).order_by(DispatchJob.created_at.desc(), DispatchJob.id.desc()).limit(limit)
    if status is not None:
        query = query.where(DispatchJob.status == status)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


JOB_STATUSES = ("new", "assigned", "in_progress", "done", "cancelled")
# The statuses a job may move to from each status; done and cancelled jobs are closed.
JOB_NEXT = {
    "new": ("assigned", "in_progress", "cancelled"),
    "assigned": ("new", "in_progress", "cancelled"),
    "in_progress": ("assigned", "done", "cancelled"),
    "done": (),
    "cancelled": (),
}


class JobStateError(ValueError):
    """A dispatch job cannot move from its status to the one asked for."""

    def __init__(self, job_id: int, current: str, wanted: str) -> None:
        super().__init__(f"dispatch job {job_id} is {current} and cannot become {wanted}")
        self.job_id = job_id
        self.current = current
        self.wanted = wanted


def update_dispatch_job(
    *, engine: Engine, job_id: int, status: str, assignee: str | None, by: str, note: str | None = None
) -> DispatchJob:
    """Move a job to ``status`` with ``assignee``, and audit who did it, in one transaction."""
    with Session(engine) as session:
        job = session.get(DispatchJob, job_id)
        if job is None:
            raise LookupError(f"dispatch job {job_id} not found")
        if status != job.status and status not in JOB_NEXT[job.status]:
            raise JobStateError(job_id, job.status, status)
        now = utc_now()
        detail = {"status": {"from": job.status, "to": status}, "assignee": assignee, "note": note}
        job.status = status
        job.assignee = assignee or None
        job.updated_at = now
        session.add(job)
        session.add(AuditEntry(at=now, actor=by, action="job_updated", target=f"dispatch_job:{job_id}", detail=detail))
        session.commit()
        session.refresh(job)
        return job


def held_runs(*, session: Session | Connection, rule_id: str, device_id: str) -> list[Any]:
    """Return the held runs of one instance with their alert's status, value and opening time."""
    runs = ActionRun.__table__
    alerts = Alert.__table__
    query = (
        select(
            runs.c.id,
            runs.c.alert_id,
            runs.c.action_index,
            runs.c.target,
            alerts.c.status.label("alert_status"),
            alerts.c.value.label("alert_value"),
            alerts.c.opened_at,
        )
        .join(alerts, alerts.c.id == runs.c.alert_id)
        .where(runs.c.status == RUN_HELD, runs.c.rule_id == rule_id, runs.c.device_id == device_id)
        .order_by(runs.c.id)
    )
    return list(session.execute(query))


def update_runs(*, session: Session | Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Set status, target, attempts and times of runs; each row names its ``run_id``."""
    if not rows:
        return
    table = ActionRun.__table__
    statement = (
        update(table)
        .where(table.c.id == bindparam("run_id"))
        .values(
            status=bindparam("status"),
            target=bindparam("target"),
            attempts=bindparam("attempts"),
            next_attempt_at=bindparam("next_attempt_at"),
            finished_at=bindparam("finished_at"),
        )
    )
    session.execute(statement, list(rows))


def add_action_runs(*, session: Session | Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(_insert_statement(ActionRun.__table__), list(rows))


@functools.cache
def _insert_statement(table: Any) -> Any:
    return insert(table)


def add_dispatch_jobs(*, session: Session | Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    return _insert_returning_ids(session, DispatchJob.__table__, rows)


def list_action_runs(*, engine: Engine, status: str | None = None, limit: int = 100) -> list[ActionRun]:
    query = select(ActionRun).order_by(ActionRun.id.desc()).limit(limit)
    if status is not None:
        query = query.where(ActionRun.status == status)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


def retry_dead_run(*, engine: Engine, run_id: int, by: str) -> None:
    """Put a dead run back in the queue by hand, and audit it."""
    with Session(engine) as session:
        run = session.get(ActionRun, run_id)
        if run is None:
            raise LookupError(f"action run {run_id} not found")
        if run.status != RUN_DEAD:
            raise ValueError(f"action run {run_id} is {run.status}; only a dead run can be retried")
        now = utc_now()
        run.status = RUN_PENDING
        run.next_attempt_at = now
        # A fresh round of attempts; the last error stays until the next attempt replaces it.
        run.attempts = 0
        session.add(run)
        session.add(AuditEntry(at=now, actor=by, action="action_run_retried", target=f"action_run:{run_id}", detail={}))
        session.commit()


def lease_due_runs(
    *, engine: Engine, types: Iterable[str], now: datetime, lease: timedelta, limit: int = 1
) -> list[ActionRun]:
    """Lease due pending or failed runs of the given types to the caller and return them, oldest id first.

    A lease moves ``next_attempt_at`` to ``now + lease`` and keeps the status, so other workers
    skip the run until the lease ends, and a run whose worker dies before writing its outcome
    becomes due again then. Two workers never lease the same run. On PostgreSQL the SELECT locks
    its candidates and skips rows that another worker has locked (FOR UPDATE SKIP LOCKED). On
    SQLite, which runs one write at a time, the UPDATE leases only candidates that are still due.
    """
    due = (
        ActionRun.status.in_((RUN_PENDING, RUN_FAILED)),
        ActionRun.next_attempt_at <= now,
        ActionRun.type.in_(list(types)),
    )
    candidates = (
        select(ActionRun.id)
        .where(*due)
        .order_by(ActionRun.next_attempt_at, ActionRun.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    # The ids are read first and updated in the same transaction, because with this SELECT as a
    # subquery of the UPDATE, PostgreSQL 15 leased every due run in spite of the LIMIT.
    runs: list[ActionRun] = []
    with Session(engine, expire_on_commit=False) as session:
        while True:
            ids = list(session.execute(candidates).scalars())
            if not ids:
                session.commit()
                break
            lease_statement = (
                update(ActionRun)
                .where(ActionRun.id.in_(ids), *due)
                .values(next_attempt_at=now + lease)
                .returning(ActionRun)
                .execution_options(synchronize_session=False)
            )
            runs = list(session.execute(lease_statement).scalars())
            session.commit()
            # No run leased means another SQLite worker leased these candidates after the SELECT.
            if runs:
                break
    return sorted(runs, key=lambda run: run.id or 0)


def finish_leased_run(
    *,
    engine: Engine,
    run_id: int,
    lease_until: datetime,
    status: str,
    attempts: int,
    error: str | None,
    next_attempt_at: datetime | None,
) -> bool:
    """Write the outcome of a leased run; return False, writing nothing, if the lease was lost.

    The lease is lost when ``next_attempt_at`` no longer equals ``lease_until`` or the run is no
    longer pending or failed, e.g. because the lease ran out and another worker leased the run.
    """
    values: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "last_error": error[:1000] if error else None,
        "next_attempt_at": next_attempt_at,
    }
    if status in (RUN_SUCCEEDED, RUN_DEAD):
        values["finished_at"] = utc_now()
    statement = (
        update(ActionRun)
        .where(
            ActionRun.id == run_id,
            ActionRun.status.in_((RUN_PENDING, RUN_FAILED)),
            ActionRun.next_attempt_at == lease_until,
        )
        .values(**values)
    )
    with Session(engine) as session:
        result = session.execute(statement)
        session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def record_audit(*, engine: Engine, actor: str, action: str, target: str | None, detail: dict[str, Any]) -> None:
    with Session(engine) as session:
        session.add(AuditEntry(at=utc_now(), actor=actor, action=action, target=target, detail=detail))
        session.commit()


# --- summaries -----------------------------------------------------------------------------------


def count_by(*, engine: Engine, column: Any, where: Any = None) -> dict[str, int]:
    query = select(column, func.count()).group_by(column)
    if where is not None:
        query = query.where(where)
    with Session(engine) as session:
        return {str(key): count for key, count in session.execute(query)}


# --- reading history -----------------------------------------------------------------------------


def list_readings(
    *,
    engine: Engine,
    device_ids: Sequence[str],
    metrics: Sequence[str],
    start: datetime,
    end: datetime,
    limit: int | None = None,
) -> list[Reading]:
    """Return the stored readings of ``device_ids`` and ``metrics`` with ``start <= ts < end``, oldest first.

    Late readings are included, with ``late`` set. ``limit`` caps the number of rows returned.
    """
    if not device_ids or not metrics:
        return []
    query = (
        select(Reading)
        .where(Reading.device_id.in_(list(device_ids)), Reading.metric.in_(list(metrics)))
        .where(Reading.ts >= start, Reading.ts < end)
        .order_by(Reading.ts, Reading.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with Session(engine) as session:
        return list(session.execute(query).scalars())
