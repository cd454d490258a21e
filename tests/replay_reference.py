"""Expected replay counts, computed in plain Python without the hub's pipeline or rule engine.

Tests parse a raw export with their own code into ``Row`` objects, then compare what
``hub.py replay --json`` prints with ``expected_replay``. The rules this reference evaluates
are deliberately narrow: a kind, tag or device selector, one metric, ``above`` or ``at_least``
against a number or a device attribute, and ``for``. Any other rule key fails an assertion, so
a config that outgrows the reference fails loudly instead of being compared wrongly.

Semantics reproduced here:

1. Readings are validated first. An unknown device, a timestamp the test could not parse, a
   missing value, text that is not a number, and a number outside the metric's ``min``/``max``
   are rejected, with the first reason in that order.
2. Valid readings are sorted by event time (stable). A reading whose (device, metric, ts) was
   already accepted is a duplicate. Nothing is late, because the stream is sorted.
3. The clock is the newest event time of the accepted readings. Before a reading is
   evaluated, every pending instance whose ``ts + for`` the clock has reached fires.
4. For each (rule, device) instance: a true reading fires an idle instance when ``for`` is 0,
   or makes it pending otherwise. A false reading cancels a pending instance or resolves a
   firing one. Alerts still open at the end count as opened and not resolved.

NOTE: whether a rejected reading with a valid time advances the hub's clock, and which reason
the hub reports when several apply, is not modelled. The configs and files compared with this
reference do not depend on either.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

RULE_KEYS = {"id", "name", "agency", "severity", "when", "then", "enabled"}
TRIGGER_KEYS = {"kind", "tag", "device", "metric", "above", "at_least", "for"}
UNITS_IN_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Row:
    """One reading as a test read it from the raw file: device id, metric, cell text, parsed time."""

    device: str
    metric: str
    cell: str | None
    ts: datetime | None


@dataclass
class Expected:
    """The counts that ``hub.py replay --json`` must print for one file."""

    accepted: int = 0
    duplicate: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    opened_by_rule: Counter[str] = field(default_factory=Counter)
    resolved_by_rule: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


@dataclass(frozen=True)
class _Trigger:
    rule: str
    metric: str
    strict: bool
    threshold: float | str
    hold: timedelta


def parse_duration(value: Any) -> timedelta:
    """Read ``0``, ``30m``, ``2h`` or ``1h30m``."""
    if value in (None, 0, "0"):
        return timedelta(0)
    parts = re.findall(r"(\d+)([smhd])", str(value))
    assert parts and "".join(number + unit for number, unit in parts) == str(value), value
    return timedelta(seconds=sum(int(number) * UNITS_IN_SECONDS[unit] for number, unit in parts))


def _triggers(config: dict[str, Any]) -> list[_Trigger]:
    triggers = []
    for rule in config["rules"]:
        assert set(rule) <= RULE_KEYS, f"rule {rule['id']} uses keys the reference does not model"
        when = rule["when"]
        assert set(when) <= TRIGGER_KEYS, f"rule {rule['id']} uses trigger keys the reference does not model"
        assert ("above" in when) != ("at_least" in when), rule["id"]

        threshold = when.get("above", when.get("at_least"))
        if isinstance(threshold, dict):
            threshold = threshold["attribute"]
        triggers.append(
            _Trigger(
                rule=rule["id"],
                metric=when["metric"],
                strict="above" in when,
                threshold=threshold,
                hold=parse_duration(when.get("for", 0)),
            )
        )
    return triggers


def _selected_devices(config: dict[str, Any], when: dict[str, Any]) -> list[dict[str, Any]]:
    devices = [device for device in config["devices"] if device.get("enabled", True)]
    if "device" in when:
        return [device for device in devices if device["id"] == when["device"]]
    if "kind" in when:
        devices = [device for device in devices if device["kind"] == when["kind"]]
    if "tag" in when:
        devices = [device for device in devices if when["tag"] in device.get("tags", [])]
    return devices


def _rejection(row: Row, config: dict[str, Any], missing: set[str]) -> str | None:
    devices = {device["id"]: device for device in config["devices"]}
    if row.device not in devices:
        return "unknown_device"
    if row.ts is None:
        return "invalid_timestamp"
    if row.cell is None or row.cell.strip() in missing:
        return "missing_value"

    try:
        number = float(row.cell)
    except ValueError:
        return "not_a_number"
    if not math.isfinite(number):
        return "not_a_number"

    limits = config["kinds"][devices[row.device]["kind"]]["metrics"][row.metric]
    if limits.get("min") is not None and number < limits["min"]:
        return "out_of_range"
    if limits.get("max") is not None and number > limits["max"]:
        return "out_of_range"
    return None


def expected_replay(config: dict[str, Any], rows: list[Row], missing: set[str]) -> Expected:
    """Compute the replay counts for ``rows`` under the rules of ``config`` (a parsed YAML dict)."""
    expected = Expected()

    valid: list[tuple[datetime, str, str, float]] = []
    for row in rows:
        reason = _rejection(row, config, missing)
        if reason is not None:
            expected.rejected_by_reason[reason] += 1
            continue
        assert row.ts is not None and row.cell is not None
        valid.append((row.ts, row.device, row.metric, float(row.cell)))
    valid.sort(key=lambda reading: reading[0])

    # Instances keyed by (rule, device): "idle", "firing", or the datetime a pending one fires at.
    rule_configs = {rule["id"]: rule for rule in config["rules"]}
    devices = {device["id"]: device for device in config["devices"]}
    watchers: dict[tuple[str, str], list[_Trigger]] = {}
    for trigger in _triggers(config):
        for device in _selected_devices(config, rule_configs[trigger.rule]["when"]):
            watchers.setdefault((device["id"], trigger.metric), []).append(trigger)
    state: dict[tuple[str, str], Any] = {}

    seen: set[tuple[str, str, datetime]] = set()
    clock: datetime | None = None
    for ts, device_id, metric, number in valid:
        key = (device_id, metric, ts)
        if key in seen:
            expected.duplicate += 1
            continue
        seen.add(key)
        expected.accepted += 1

        clock = ts if clock is None else max(clock, ts)
        for instance, status in state.items():
            if isinstance(status, datetime) and status <= clock:
                state[instance] = "firing"
                expected.opened_by_rule[instance[0]] += 1

        for trigger in watchers.get((device_id, metric), []):
            threshold = trigger.threshold
            if isinstance(threshold, str):
                threshold = float(devices[device_id]["attributes"][threshold])
            is_true = number > threshold if trigger.strict else number >= threshold

            instance = (trigger.rule, device_id)
            status = state.get(instance, "idle")
            if is_true and status == "idle":
                if trigger.hold:
                    state[instance] = ts + trigger.hold
                else:
                    state[instance] = "firing"
                    expected.opened_by_rule[trigger.rule] += 1
            elif not is_true and status == "firing":
                state[instance] = "idle"
                expected.resolved_by_rule[trigger.rule] += 1
            elif not is_true and status != "idle":
                state[instance] = "idle"

    return expected
