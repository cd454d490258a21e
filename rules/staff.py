"""Service functions of the staff pages: device states, guarded alert, job and run actions, hub health.

Pages call these functions and never touch SQL or the engine. Each action checks the staff
member's role in the agency that owns the alert, job or rule before it changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine

from rules.compile import UnresolvedThreshold, resolve_threshold, select_devices
from rules.config import Comparison, Config, Device
from rules.store import ops, queries
from rules.store.models import ActionRun, Alert, DispatchJob, utc_now
from rules.users import Staff

# Device states, from the most to the least urgent; the overview colours devices by them.
DEVICE_STATES = ("firing", "offline", "pending", "normal", "no_data", "disabled")
HEALTH_TIMEOUT = 2.0


class NotFound(LookupError):
    """The alert, job or run asked for does not exist, or belongs to an agency the reader cannot see."""


@dataclass(frozen=True)
class DeviceStatus:
    device: Device
    state: str
    last_seen: datetime | None
    # (rule id, instance state) for every rule instance on the device.
    instances: list[tuple[str, str]] = field(default_factory=list)


def visible_agencies(staff: Staff, config: Config) -> list[str]:
    return staff.agencies("view", [agency.id for agency in config.agencies])


def agency_of_rule(config: Config) -> dict[str, str]:
    return {rule.id: rule.agency for rule in config.rules}


def _offline_after(config: Config, device: Device) -> timedelta | None:
    if device.offline_after is not None:
        return device.offline_after
    kind = config.kinds.get(device.kind)
    return None if kind is None else kind.offline_after


def visible_devices(config: Config, agency_ids: list[str]) -> set[str]:
    """Return the ids of the devices of ``agency_ids`` and of the devices their rules watch.

    A disaster office whose rules watch another department's river gauges can view those
    gauges, because its alerts are about them. Changing them needs a role in their own agency.
    """
    own = {device.id for device in config.devices if device.agency in agency_ids}
    watched = {
        device.id for rule in config.rules if rule.agency in agency_ids for device in select_devices(config, rule)
    }
    return own | watched


def device_statuses(
    *, config: Config, engine: Engine, agency_ids: list[str], now: datetime | None = None
) -> list[DeviceStatus]:
    """Return the state of every device visible to ``agency_ids``, worst first and then by name.

    A device is firing while any of its rule instances is firing or clearing. It is offline
    when its offline rule fires or it has been silent for longer than its ``offline_after``.
    It is pending while an instance waits out a ``for`` duration, and has no data until its
    first accepted reading.
    """
    moment = now or utc_now()
    seen = queries.last_seen(engine=engine)
    offline_rules = {rule.id for rule in config.rules if rule.when.offline is not None}
    by_device: dict[str, list[tuple[str, str]]] = {}
    for instance in queries.list_instances(engine=engine):
        by_device.setdefault(instance.device_id, []).append((instance.rule_id, instance.state))

    visible = visible_devices(config, agency_ids)
    statuses = []
    for device in config.devices:
        if device.id not in visible:
            continue
        instances = by_device.get(device.id, [])
        active = {state for rule_id, state in instances if rule_id not in offline_rules}
        offline_firing = any(rule_id in offline_rules and state != "idle" for rule_id, state in instances)
        silent_for = _offline_after(config, device)
        last = seen.get(device.id)
        silent = last is not None and silent_for is not None and moment - last > silent_for

        if not device.enabled:
            state = "disabled"
        elif active & {"firing", "clearing"}:
            state = "firing"
        elif offline_firing or silent:
            state = "offline"
        elif "pending" in active:
            state = "pending"
        elif last is None:
            state = "no_data"
        else:
            state = "normal"
        statuses.append(DeviceStatus(device=device, state=state, last_seen=last, instances=instances))
    statuses.sort(key=lambda status: (DEVICE_STATES.index(status.state), status.device.name))
    return statuses


@dataclass(frozen=True)
class ThresholdLine:
    """A threshold of a rule on one device's metric, for drawing on its chart."""

    rule_id: str
    rule_name: str
    test: str  # above, below, at_least or at_most; a between band gives at_least and at_most
    value: float
    clears: bool  # a line of the rule's clear condition rather than its trigger


def _lines(comparison: Comparison, device: Device, clears: bool) -> list[tuple[str, float, bool]]:
    tests = [(key, getattr(comparison, key)) for key in ("above", "below", "at_least", "at_most")]
    if comparison.between is not None:
        tests += [("at_least", comparison.between[0]), ("at_most", comparison.between[1])]
    lines = []
    for key, threshold in tests:
        if threshold is None:
            continue
        try:
            lines.append((key, resolve_threshold(threshold, device), clears))
        except UnresolvedThreshold:
            continue
    return lines


def threshold_lines(config: Config, device: Device, metric: str) -> list[ThresholdLine]:
    """List the trigger and clear thresholds of every enabled rule that watches ``metric`` on ``device``."""
    found = []
    for rule in config.rules:
        if not rule.enabled or rule.when.metric != metric:
            continue
        if device.id not in {selected.id for selected in select_devices(config, rule)}:
            continue
        lines = _lines(rule.when, device, clears=False)
        if rule.clear is not None:
            lines += _lines(rule.clear, device, clears=True)
        found += [ThresholdLine(rule.id, rule.name, test, value, clears) for test, value, clears in lines]
    return found


# --- guarded actions -----------------------------------------------------------------------------


def _visible_alert(engine: Engine, staff: Staff, alert_id: int) -> Alert:
    alert = queries.get_alert(engine=engine, alert_id=alert_id)
    if alert is None or not staff.can("view", alert.agency_id):
        raise NotFound(f"alert {alert_id} not found")
    return alert


def acknowledge_alert(*, engine: Engine, staff: Staff, alert_id: int, note: str | None) -> Alert:
    alert = _visible_alert(engine, staff, alert_id)
    staff.require("handle_alerts", alert.agency_id)
    return ops.acknowledge_alert(engine=engine, alert_id=alert_id, by=staff.username, note=note or None)


def resolve_alert(*, engine: Engine, staff: Staff, alert_id: int, note: str | None) -> Alert:
    alert = _visible_alert(engine, staff, alert_id)
    staff.require("handle_alerts", alert.agency_id)
    return ops.resolve_alert(engine=engine, alert_id=alert_id, by=staff.username, note=note or None)


def update_job(
    *, engine: Engine, staff: Staff, job: DispatchJob, status: str, assignee: str | None, note: str | None = None
) -> DispatchJob:
    assert job.id is not None
    staff.require("update_jobs", job.agency_id)
    return ops.update_dispatch_job(
        engine=engine, job_id=job.id, status=status, assignee=assignee, by=staff.username, note=note
    )


def retry_run(*, engine: Engine, config: Config, staff: Staff, run: ActionRun) -> None:
    assert run.id is not None
    agency_id = agency_of_rule(config).get(run.rule_id)
    if agency_id is None:
        raise NotFound(f"action run {run.id} belongs to rule {run.rule_id}, which is no longer in the config")
    staff.require("retry_runs", agency_id)
    ops.retry_dead_run(engine=engine, run_id=run.id, by=staff.username)


# --- the running hub -----------------------------------------------------------------------------


def hub_health(config: Config, *, base_url: str | None = None) -> dict[str, Any] | None:
    """Fetch the running hub's health report from its HTTP API; return None when it does not respond."""
    host = "127.0.0.1" if config.simpul.host in ("0.0.0.0", "::") else config.simpul.host
    url = (base_url or f"http://{host}:{config.simpul.port}") + "/api/v1/health"
    try:
        response = httpx.get(url, timeout=HEALTH_TIMEOUT)
        response.raise_for_status()
        report: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return report
