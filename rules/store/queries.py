"""Read queries behind the staff pages: filtered lists and summaries, newest first.

Every function takes the agency ids the reader may see; an empty collection means nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from rules.store.models import ActionRun, Alert, AuditEntry, DispatchJob, Reading, RejectedReading, RuleInstance


def last_seen(*, engine: Engine) -> dict[str, datetime]:
    """Return the event time of each device's newest accepted reading."""
    query = select(Reading.device_id, func.max(Reading.ts)).group_by(Reading.device_id)
    with Session(engine) as session:
        return {device_id: value for device_id, value in session.execute(query) if value is not None}


def list_instances(*, engine: Engine, device_id: str | None = None) -> list[RuleInstance]:
    query = select(RuleInstance).order_by(RuleInstance.rule_id, RuleInstance.device_id)
    if device_id is not None:
        query = query.where(RuleInstance.device_id == device_id)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


def list_alerts(
    *,
    engine: Engine,
    agency_ids: Collection[str],
    statuses: Collection[str] | None = None,
    device_id: str | None = None,
    limit: int = 200,
) -> list[Alert]:
    query = select(Alert).where(Alert.agency_id.in_(agency_ids))
    if statuses:
        query = query.where(Alert.status.in_(statuses))
    if device_id is not None:
        query = query.where(Alert.device_id == device_id)
    query = query.order_by(Alert.opened_at.desc(), Alert.id.desc()).limit(limit)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


def count_unresolved_alerts(*, engine: Engine, agency_ids: Collection[str]) -> dict[tuple[str, str], int]:
    """Open and acknowledged alerts, counted by (agency, severity)."""
    query = (
        select(Alert.agency_id, Alert.severity, func.count())
        .where(Alert.agency_id.in_(agency_ids), Alert.status != "resolved")
        .group_by(Alert.agency_id, Alert.severity)
    )
    with Session(engine) as session:
        return {(agency, severity): count for agency, severity, count in session.execute(query)}


def get_alert(*, engine: Engine, alert_id: int) -> Alert | None:
    with Session(engine) as session:
        return session.get(Alert, alert_id)


def list_jobs(
    *,
    engine: Engine,
    agency_ids: Collection[str],
    team_id: str | None = None,
    statuses: Collection[str] | None = None,
    limit: int = 200,
) -> list[DispatchJob]:
    query = select(DispatchJob).where(DispatchJob.agency_id.in_(agency_ids))
    if team_id is not None:
        query = query.where(DispatchJob.team_id == team_id)
    if statuses:
        query = query.where(DispatchJob.status.in_(statuses))
    query = query.order_by(DispatchJob.due_at, DispatchJob.id).limit(limit)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


def list_runs(
    *, engine: Engine, rule_ids: Collection[str], statuses: Collection[str] | None = None, limit: int = 200
) -> list[ActionRun]:
    query = select(ActionRun).where(ActionRun.rule_id.in_(rule_ids))
    if statuses:
        query = query.where(ActionRun.status.in_(statuses))
    query = query.order_by(ActionRun.id.desc()).limit(limit)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


def count_runs(*, engine: Engine, rule_ids: Collection[str]) -> dict[str, int]:
    query = select(ActionRun.status, func.count()).where(ActionRun.rule_id.in_(rule_ids)).group_by(ActionRun.status)
    with Session(engine) as session:
        return {status: count for status, count in session.execute(query)}


def list_rejected(*, engine: Engine, device_id: str, limit: int = 50) -> list[RejectedReading]:
    query = (
        select(RejectedReading)
        .where(RejectedReading.device_id == device_id)
        .order_by(RejectedReading.received_at.desc(), RejectedReading.id.desc())
        .limit(limit)
    )
    with Session(engine) as session:
        return list(session.execute(query).scalars())


def list_audit(*, engine: Engine, actions: Collection[str] | None = None, limit: int = 200) -> list[AuditEntry]:
    query = select(AuditEntry)
    if actions:
        query = query.where(AuditEntry.action.in_(actions))
    query = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    with Session(engine) as session:
        return list(session.execute(query).scalars())


def last_firing_per_rule(*, engine: Engine) -> dict[str, datetime]:
    query = select(Alert.rule_id, func.max(Alert.opened_at)).group_by(Alert.rule_id)
    with Session(engine) as session:
        return {rule_id: value for rule_id, value in session.execute(query) if value is not None}
