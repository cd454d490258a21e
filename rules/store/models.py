"""Tables of the store. Every timestamp is an aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, String, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC; SQLite returns it naive, so the zone is put back on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store takes aware UTC datetimes only")
        converted = value.astimezone(UTC)
        return converted.replace(tzinfo=None) if dialect.name == "sqlite" else converted

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_column(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def utc_now() -> datetime:
    return datetime.now(UTC)


class Reading(SQLModel, table=True):
    """An accepted reading. ``uid`` is the sender's id, if it sent one.

    Readings without a sender id are identified by (device, metric, ts) alone; leaving ``uid``
    empty for them keeps a long text key out of the unique index on the hot insert path.
    """

    __tablename__ = "reading"
    # The unique (device_id, metric, ts) index also serves time-range queries per device; a
    # separate index on ts alone cost about a quarter of the insert time and is left out.
    __table_args__ = (UniqueConstraint("device_id", "metric", "ts", name="uq_reading_device_metric_ts"),)

    id: int | None = Field(default=None, primary_key=True)
    uid: str | None = Field(default=None, sa_column=Column(String(200), unique=True, nullable=True))
    device_id: str = Field(max_length=100)
    metric: str = Field(max_length=100)
    value_num: float | None = None
    value_text: str | None = Field(default=None, max_length=100)
    unit: str | None = Field(default=None, max_length=40)
    ts: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    source_id: str = Field(max_length=100)
    late: bool = False


class RejectedReading(SQLModel, table=True):
    """A reading that was not accepted, kept as received with the reason."""

    __tablename__ = "rejected_reading"

    id: int | None = Field(default=None, primary_key=True)
    source_id: str = Field(max_length=100, index=True)
    device_id: str | None = Field(default=None, max_length=200, index=True)
    metric: str | None = Field(default=None, max_length=200)
    raw_value: str | None = Field(default=None, max_length=500)
    raw_ts: str | None = Field(default=None, max_length=100)
    reason: str = Field(max_length=40, index=True)
    detail: str | None = Field(default=None, max_length=500)
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class RuleInstance(SQLModel, table=True):
    """The state machine of one rule on one device: idle, pending, firing or clearing."""

    __tablename__ = "rule_instance"

    rule_id: str = Field(primary_key=True, max_length=100)
    device_id: str = Field(primary_key=True, max_length=100)
    definition_hash: str = Field(max_length=40)
    state: str = Field(max_length=20)
    since: datetime | None = utc_column()
    fired_at: datetime | None = utc_column()
    last_fired_at: datetime | None = utc_column()
    open_alert_id: int | None = None
    fire_times: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    flapping: bool = False
    last_value: float | str | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class Alert(SQLModel, table=True):
    """The record of a firing: open, then acknowledged and resolved, with who did it and when."""

    __tablename__ = "alert"
    __table_args__ = (Index("ix_alert_status_opened", "status", "opened_at"),)

    id: int | None = Field(default=None, primary_key=True)
    rule_id: str = Field(max_length=100, index=True)
    rule_name: str = Field(max_length=200)
    device_id: str = Field(max_length=100, index=True)
    agency_id: str = Field(max_length=100, index=True)
    severity: str = Field(max_length=20)
    status: str = Field(max_length=20)
    message: str = Field(max_length=1000)
    value: str | None = Field(default=None, max_length=100)
    flapping: bool = False
    opened_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    acknowledged_at: datetime | None = utc_column()
    acknowledged_by: str | None = Field(default=None, max_length=100)
    acknowledge_note: str | None = Field(default=None, max_length=1000)
    resolved_at: datetime | None = utc_column()
    resolved_by: str | None = Field(default=None, max_length=100)
    resolve_note: str | None = Field(default=None, max_length=1000)


class ActionRun(SQLModel, table=True):
    """One execution of an action, written in the firing's transaction before it runs (the outbox)."""

    __tablename__ = "action_run"
    __table_args__ = (Index("ix_action_run_status_next", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int | None = Field(default=None, index=True)
    rule_id: str = Field(max_length=100)
    device_id: str = Field(max_length=100)
    action_index: int
    type: str = Field(max_length=40)
    target: str | None = Field(default=None, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=20)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    next_attempt_at: datetime | None = utc_column()
    finished_at: datetime | None = utc_column()


class DispatchJob(SQLModel, table=True):
    """A work order for a field team: new, assigned, in_progress, done or cancelled."""

    __tablename__ = "dispatch_job"

    id: int | None = Field(default=None, primary_key=True)
    action_run_id: int | None = Field(default=None, unique=True)
    alert_id: int | None = Field(default=None, index=True)
    agency_id: str = Field(max_length=100, index=True)
    team_id: str = Field(max_length=100, index=True)
    device_id: str | None = Field(default=None, max_length=100)
    title: str = Field(max_length=300)
    lat: float | None = None
    lon: float | None = None
    status: str = Field(default="new", max_length=20)
    assignee: str | None = Field(default=None, max_length=100)
    due_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class AuditEntry(SQLModel, table=True):
    """Audit record of a config change or an action on an alert, job or run: actor, action, time."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    actor: str = Field(max_length=100)
    action: str = Field(max_length=60)
    target: str | None = Field(default=None, max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class StaffUser(SQLModel, table=True):
    """A staff member who logs in to the pages; ``roles`` maps agency ids (or ``*``) to a role.

    Only an Argon2 hash of the password is kept.
    """

    __tablename__ = "staff_user"

    username: str = Field(primary_key=True, max_length=60)
    full_name: str = Field(max_length=200)
    password_hash: str = Field(max_length=200)
    roles: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    active: bool = True
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
