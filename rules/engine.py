"""The rule engine: instance state machines on an event-time clock, fed one reading at a time.

Notes on the semantics, referred to below by number:
1. Each (rule, device) instance moves idle -> pending -> firing -> clearing -> idle. Only
   transitions act: a reading that keeps a condition true, repeats a value or changes nothing
   the condition reads leaves the instance alone.
2. In each state only the edge that leaves it is probed (idle: enter, pending: abort,
   firing: clear, clearing: relapse), so durable_rules matches only on transitions.
3. The clock is event time: the wall clock when live, the newest event time when replaying.
   ``advance`` runs every deadline that is due, in deadline order, before the reading at that
   time is evaluated. A deadline at t0 + for therefore fires at t0 + for even when no reading
   arrives then.
4. Cooldown: an instance that would fire before ``last_fired_at + cooldown`` stays pending and
   fires when the cooldown ends, if its condition is still true then.
5. Flapping: an instance that fired ``flapping.fires`` times within ``flapping.window`` is
   flapping; its firings still open alerts, but the pipeline holds its other actions. Once it
   has not fired for a whole window it is stable again, and the pipeline releases what it held.
   A duration that ends outside the rule's schedule does not fire: the trigger includes the
   schedule, so the instance returns to idle.
6. Offline rules have no probe: the deadline is the last valid reading plus ``offline``, and
   the next valid reading of the device clears them.
7. Conditions on other devices (``and``) read those devices' latest values when the watched
   device's reading arrives; a change of the other device alone does not re-evaluate the rule.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rules.compile import CompiledRule, compile_rules
from rules.config import Config, Device
from rules.durable import DurableMatcher, encode_probe

logger = logging.getLogger(__name__)

IDLE, PENDING, FIRING, CLEARING = "idle", "pending", "firing", "clearing"
_EDGE_BY_STATE = {IDLE: "enter", PENDING: "abort", FIRING: "clear", CLEARING: "relapse"}
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(slots=True)
class NormalReading:
    """A valid reading after normalisation: known device and metric, typed value, aware UTC ts."""

    device_id: str
    metric: str
    value: float | str
    ts: datetime
    uid: str | None
    source_id: str
    unit: str | None = None


@dataclass(slots=True)
class Instance:
    """The persisted state of one rule on one device."""

    rule_id: str
    device_id: str
    definition_hash: str
    state: str = IDLE
    since: datetime | None = None
    fired_at: datetime | None = None
    last_fired_at: datetime | None = None
    open_alert_id: int | None = None
    fire_times: list[datetime] = field(default_factory=list)
    flapping: bool = False
    deadline: datetime | None = None
    last_probe: tuple[Any, ...] | None = None
    last_value: float | str | None = None


@dataclass(slots=True, frozen=True)
class Firing:
    instance: Instance
    rule: CompiledRule
    device: Device
    at: datetime
    value: float | str | None
    metric: str | None
    flapping: bool


@dataclass(slots=True, frozen=True)
class Resolution:
    instance: Instance
    rule: CompiledRule
    alert_id: int | None
    at: datetime
    value: float | str | None


@dataclass(slots=True, frozen=True)
class Settled:
    """A flapping instance that has not fired for a whole flapping window (note 5)."""

    instance: Instance
    rule: CompiledRule
    at: datetime


Effect = Firing | Resolution | Settled


class _Probe:
    """The fields of one probe, as a tuple for comparing with an instance's last probe, and their
    JSON members once ``_step`` needs them."""

    __slots__ = ("encoded", "fields", "items")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.items = tuple(fields.items())
        self.encoded: str | None = None


class Engine:
    """Evaluates readings against compiled rules and collects firings and resolutions."""

    def __init__(self, config: Config, matcher: DurableMatcher | None = None) -> None:
        self.matcher = matcher or DurableMatcher()
        self.config = config
        self.devices = {device.id: device for device in config.devices}
        self.rules, self.skipped = compile_rules(config, self.matcher)
        for message in self.skipped:
            logger.error("%s", message)

        self.instances: dict[tuple[str, str], Instance] = {}
        self.by_metric: dict[tuple[str, str], list[tuple[CompiledRule, Instance]]] = {}
        self.offline: dict[str, list[tuple[CompiledRule, Instance]]] = {}
        self.history_window: dict[tuple[str, str], timedelta] = {}
        self.history: dict[tuple[str, str], deque[tuple[datetime, float]]] = {}
        self.latest: dict[tuple[str, str], tuple[datetime, float | str]] = {}
        self.last_valid: dict[str, datetime] = {}
        self.clock: datetime | None = None
        self.effects: list[Effect] = []
        self.dirty: set[tuple[str, str]] = set()
        self._deadlines: list[tuple[datetime, int, tuple[str, str]]] = []
        self._sequence = 0
        self._rules_by_id = {rule.id: rule for rule in self.rules}
        self._flapping: set[tuple[str, str]] = set()
        self._build_indexes()

    # --- set-up ------------------------------------------------------------------------------

    def _build_indexes(self) -> None:
        for rule in self.rules:
            for device_id, definition_hash in rule.hashes.items():
                instance = Instance(rule.id, device_id, definition_hash)
                self.instances[(rule.id, device_id)] = instance
                if rule.offline_after is not None:
                    self.offline.setdefault(device_id, []).append((rule, instance))
                    continue
                assert rule.metric is not None
                key = (device_id, rule.metric)
                self.by_metric.setdefault(key, []).append((rule, instance))
                if rule.change_window is not None:
                    self.history_window[key] = max(self.history_window.get(key, timedelta(0)), rule.change_window)

    def restore(self, saved: list[Instance]) -> list[Instance]:
        """Take back saved instance state; return the saved instances whose rule changed or is gone."""
        stale = []
        for old in saved:
            current = self.instances.get((old.rule_id, old.device_id))
            if current is None or current.definition_hash != old.definition_hash:
                stale.append(old)
                continue
            current.state = old.state
            current.since = old.since
            current.fired_at = old.fired_at
            current.last_fired_at = old.last_fired_at
            current.open_alert_id = old.open_alert_id
            current.fire_times = list(old.fire_times)
            current.flapping = old.flapping
            if old.flapping:
                self._flapping.add((old.rule_id, old.device_id))
            current.last_value = old.last_value
            self._rearm(current)
        return stale

    def seed(
        self,
        *,
        latest: dict[tuple[str, str], tuple[datetime, float | str]],
        history: list[tuple[str, str, datetime, float]],
    ) -> None:
        """Load the newest value per device and metric, and recent history for change windows."""
        self.latest.update(latest)
        for (device_id, _metric), (ts, _value) in latest.items():
            if ts > self.last_valid.get(device_id, ts - timedelta(seconds=1)):
                self.last_valid[device_id] = ts
        for device_id, metric, ts, value in history:
            key = (device_id, metric)
            if key in self.history_window:
                self.history.setdefault(key, deque()).append((ts, value))

    def start_clock(self, now: datetime) -> None:
        """Set the clock and arm offline deadlines for devices that have not reported yet."""
        if self.clock is None or now > self.clock:
            self.clock = now
        for device_id, watchers in self.offline.items():
            last = self.last_valid.get(device_id)
            for rule, instance in watchers:
                if instance.state == IDLE and instance.deadline is None:
                    assert rule.offline_after is not None
                    self._set_deadline(instance, (last or now) + rule.offline_after)

    def _rearm(self, instance: Instance) -> None:
        rule = self._rules_by_id[instance.rule_id]
        if rule.offline_after is not None:
            return
        if instance.state == PENDING and instance.since is not None:
            self._set_deadline(instance, self._pending_deadline(rule, instance, instance.since))
        elif instance.state == CLEARING and instance.since is not None:
            clear = rule.rule.clear
            self._set_deadline(instance, instance.since + (clear.for_ if clear else timedelta(0)))

    # --- clock and deadlines -----------------------------------------------------------------

    def _set_deadline(self, instance: Instance, at: datetime) -> None:
        instance.deadline = at
        self._sequence += 1
        heapq.heappush(self._deadlines, (at, self._sequence, (instance.rule_id, instance.device_id)))

    def advance(self, now: datetime) -> None:
        """Move the clock to ``now`` and run every deadline due by then, oldest first (note 3)."""
        if self.clock is None:
            self.start_clock(now)
        if self.clock is not None and now < self.clock:
            return
        self.clock = now
        while self._deadlines and self._deadlines[0][0] <= now:
            at, _sequence, key = heapq.heappop(self._deadlines)
            instance = self.instances.get(key)
            if instance is None or instance.deadline != at:
                continue
            instance.deadline = None
            self._on_deadline(self._rules_by_id[instance.rule_id], instance, at)
        self._settle(now)

    def _settle(self, now: datetime) -> None:
        for key in list(self._flapping):
            instance = self.instances.get(key)
            if instance is None or not instance.flapping:
                self._flapping.discard(key)
                continue
            rule = self._rules_by_id[instance.rule_id]
            stable_at = instance.last_fired_at + rule.rule.flapping.window if instance.last_fired_at else now
            if stable_at > now:
                continue
            instance.flapping = False
            self._flapping.discard(key)
            self.dirty.add(key)
            self.effects.append(Settled(instance, rule, stable_at))

    def _on_deadline(self, rule: CompiledRule, instance: Instance, at: datetime) -> None:
        if rule.offline_after is not None:
            if instance.state in (IDLE, PENDING):
                self._try_fire(rule, instance, at, value=None)
            return
        if instance.state == PENDING:
            if rule.schedule is not None and not _in_schedule(rule, at):
                # The schedule closed while the duration ran: the trigger no longer holds.
                self._change_state(instance, IDLE, None)
                instance.last_probe = None
                return
            self._try_fire(rule, instance, at, value=instance.last_value)
        elif instance.state == CLEARING:
            self._resolve(rule, instance, at, value=instance.last_value)

    def _pending_deadline(self, rule: CompiledRule, instance: Instance, since: datetime) -> datetime:
        due = since + rule.rule.when.for_
        cooldown_end = self._cooldown_end(rule, instance)
        return max(due, cooldown_end) if cooldown_end is not None else due

    def _cooldown_end(self, rule: CompiledRule, instance: Instance) -> datetime | None:
        if not rule.rule.cooldown or instance.last_fired_at is None:
            return None
        return instance.last_fired_at + rule.rule.cooldown

    # --- readings ----------------------------------------------------------------------------

    def evaluate(self, reading: NormalReading) -> None:
        """Evaluate one valid, in-order reading against every instance that watches it."""
        key = (reading.device_id, reading.metric)
        self.latest[key] = (reading.ts, reading.value)
        self._record_history(key, reading)
        self._on_valid_reading(reading)

        watchers = self.by_metric.get(key)
        if not watchers:
            return
        # Rules that read only the value share one probe, so it is serialised at most once.
        value_only = {"value": reading.value}
        shared: _Probe | None = None
        for rule, instance in watchers:
            instance.last_value = reading.value
            fields = self._probe(rule, reading, value_only)
            if fields is not value_only:
                probe = _Probe(fields)
            elif shared is None:
                probe = shared = _Probe(fields)
            else:
                probe = shared
            self._step(rule, instance, probe, reading.ts, reading.value)

    def _record_history(self, key: tuple[str, str], reading: NormalReading) -> None:
        window = self.history_window.get(key)
        if window is None or isinstance(reading.value, str):
            return
        points = self.history.setdefault(key, deque())
        points.append((reading.ts, reading.value))
        while points and points[0][0] < reading.ts - window:
            points.popleft()

    def _on_valid_reading(self, reading: NormalReading) -> None:
        previous = self.last_valid.get(reading.device_id)
        if previous is not None and reading.ts <= previous:
            return
        self.last_valid[reading.device_id] = reading.ts
        for rule, instance in self.offline.get(reading.device_id, ()):
            assert rule.offline_after is not None
            if instance.state in (FIRING, CLEARING):
                self._resolve(rule, instance, reading.ts, value=None)
            elif instance.state == PENDING:
                self._change_state(instance, IDLE, None)
            self._set_deadline(instance, reading.ts + rule.offline_after)

    def _probe(self, rule: CompiledRule, reading: NormalReading, value_only: dict[str, Any]) -> dict[str, Any]:
        """Return the fields that ``rule`` reads: ``value_only`` itself when it reads only the value."""
        if rule.change_window is None and not rule.contexts and rule.schedule is None:
            return value_only
        probe = dict(value_only)
        if rule.change_window is not None:
            change = self._change(reading.device_id, reading.metric, rule.change_window, reading.ts)
            probe["chg"] = change if change is not None else 0
            probe["chgok"] = 0 if change is None else 1
        for index, context in enumerate(rule.contexts):
            latest = self.latest.get((context.device_id, context.metric))
            fresh = latest is not None and reading.ts - latest[0] <= context.max_age and latest[0] <= reading.ts
            probe[f"c{index}"] = latest[1] if fresh and latest is not None else 0
            probe[f"c{index}ok"] = 1 if fresh else 0
        if rule.schedule is not None:
            probe["act"] = 1 if _in_schedule(rule, reading.ts) else 0
        return probe

    def _change(self, device_id: str, metric: str, window: timedelta, ts: datetime) -> float | None:
        points = self.history.get((device_id, metric))
        if not points or len(points) < 2:
            return None
        oldest_ts, oldest_value = points[0]
        newest_ts, newest_value = points[-1]
        if oldest_ts < ts - window or newest_ts != ts:
            return None
        return newest_value - oldest_value

    def _step(self, rule: CompiledRule, instance: Instance, probe: _Probe, ts: datetime, value: float | str) -> None:
        """Probe the edge that leaves the instance's state, and take it if it is true (notes 1, 2)."""
        edge = _EDGE_BY_STATE[instance.state]
        signature = (edge, probe.items)
        if instance.last_probe == signature:
            return
        if probe.encoded is None:
            probe.encoded = encode_probe(probe.fields)
        if not self.matcher.holds(rule.rulesets[instance.device_id], edge, probe.fields, probe.encoded):
            instance.last_probe = signature
            return
        instance.last_probe = None

        if instance.state == IDLE:
            instance.state = PENDING
            instance.since = ts
            self.dirty.add((instance.rule_id, instance.device_id))
            deadline = self._pending_deadline(rule, instance, ts)
            if deadline <= ts:
                self._try_fire(rule, instance, ts, value)
            else:
                self._set_deadline(instance, deadline)
        elif instance.state == PENDING:
            self._change_state(instance, IDLE, None)
        elif instance.state == FIRING:
            clear_for = rule.rule.clear.for_ if rule.rule.clear is not None else timedelta(0)
            if clear_for <= timedelta(0):
                self._resolve(rule, instance, ts, value)
            else:
                self._change_state(instance, CLEARING, ts)
                self._set_deadline(instance, ts + clear_for)
        elif instance.state == CLEARING:
            self._change_state(instance, FIRING, instance.fired_at)

    def _change_state(self, instance: Instance, state: str, since: datetime | None) -> None:
        instance.state = state
        instance.since = since
        instance.deadline = None
        self.dirty.add((instance.rule_id, instance.device_id))

    def _try_fire(self, rule: CompiledRule, instance: Instance, at: datetime, value: float | str | None) -> None:
        cooldown_end = self._cooldown_end(rule, instance)
        if cooldown_end is not None and at < cooldown_end:
            instance.state = PENDING
            instance.since = instance.since or at
            self._set_deadline(instance, cooldown_end)
            self.dirty.add((instance.rule_id, instance.device_id))
            logger.debug("rule %s device %s: held by cooldown until %s", rule.id, instance.device_id, cooldown_end)
            return

        window = rule.rule.flapping.window
        instance.fire_times = [t for t in instance.fire_times if t > at - window] + [at]
        instance.flapping = len(instance.fire_times) >= rule.rule.flapping.fires
        if instance.flapping:
            self._flapping.add((instance.rule_id, instance.device_id))
        else:
            self._flapping.discard((instance.rule_id, instance.device_id))
        instance.state = FIRING
        instance.since = at
        instance.fired_at = at
        instance.last_fired_at = at
        instance.deadline = None
        self.dirty.add((instance.rule_id, instance.device_id))
        device = self.devices[instance.device_id]
        self.effects.append(Firing(instance, rule, device, at, value, rule.metric, instance.flapping))

    def _resolve(self, rule: CompiledRule, instance: Instance, at: datetime, value: float | str | None) -> None:
        alert_id = instance.open_alert_id
        instance.open_alert_id = None
        self._change_state(instance, IDLE, None)
        self.effects.append(Resolution(instance, rule, alert_id, at, value))

    def take_effects(self) -> list[Effect]:
        effects, self.effects = self.effects, []
        return effects

    def take_dirty(self) -> list[Instance]:
        keys, self.dirty = self.dirty, set()
        return [self.instances[key] for key in keys if key in self.instances]


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _in_schedule(rule: CompiledRule, ts: datetime) -> bool:
    schedule = rule.schedule
    assert schedule is not None
    local = ts.astimezone(_zone(rule.zone))
    minute = local.hour * 60 + local.minute
    start, end = schedule.minutes()
    day = _WEEKDAYS[local.weekday()]
    if start <= end:
        return day in schedule.days and start <= minute < end
    # A window such as 22:00-06:00 belongs to the day it starts on.
    if minute >= start:
        return day in schedule.days
    previous_day = _WEEKDAYS[(local.weekday() - 1) % 7]
    return previous_day in schedule.days and minute < end


def build_engine(config: Config, matcher: DurableMatcher | None = None) -> Engine:
    return Engine(config, matcher)
