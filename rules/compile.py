"""Compile config rules into what the engine runs: condition sets per device and instance specs.

A rule applies to every device its selector matches; each (rule, device) pair is an instance.
Thresholds taken from device attributes are resolved here, so devices with equal thresholds
share one durable_rules ruleset.

Probe fields, filled by the engine for each reading:
- ``value``: the reading's value (number, or text for a state metric)
- ``chg`` / ``chgok``: change over the rule's ``change.over`` window, and 1 if it could be computed
- ``c0``, ``c1``, ... / ``c0ok``, ...: latest values of the ``and`` devices, and 1 if fresh enough
- ``act``: 1 inside the rule's schedule, else 0
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta

from rules import durable
from rules.config import AttributeRef, Comparison, Config, Context, Device, Rule, Schedule, Threshold

Test = tuple[str, str, float | str]

_NEGATED = {"gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt", "eq": "neq", "neq": "eq"}
_BUILDERS = {
    "gt": durable.greater,
    "gte": durable.greater_or_equal,
    "lt": durable.less,
    "lte": durable.less_or_equal,
    "eq": durable.equal,
    "neq": durable.not_equal,
}


class UnresolvedThreshold(ValueError):
    """Raised when a device lacks the numeric attribute a rule takes its threshold from."""


@dataclass(frozen=True, slots=True)
class ContextSpec:
    device_id: str
    metric: str
    max_age: timedelta


@dataclass(slots=True)
class CompiledRule:
    """A rule ready to run: the devices it watches and, per device, the ruleset to probe."""

    rule: Rule
    zone: str
    metric: str | None
    offline_after: timedelta | None
    change_window: timedelta | None
    contexts: list[ContextSpec]
    schedule: Schedule | None
    rulesets: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.rule.id


def select_devices(config: Config, rule: Rule) -> list[Device]:
    """Return the enabled devices a rule's selector matches, in config order."""
    when = rule.when
    kinds = config.kinds
    selected = []
    for device in config.devices:
        if not device.enabled:
            continue
        if when.device is not None and device.id != when.device:
            continue
        if when.kind is not None and device.kind != when.kind:
            continue
        if when.tag is not None and when.tag not in device.tags:
            continue
        if when.agency is not None and device.agency != when.agency:
            continue
        kind = kinds.get(device.kind)
        if when.metric is not None and (kind is None or when.metric not in kind.metrics):
            continue
        selected.append(device)
    return selected


def compile_rules(config: Config, matcher: durable.DurableMatcher) -> tuple[list[CompiledRule], list[str]]:
    """Compile every enabled rule; return the compiled rules and one message per skipped rule/device."""
    agency_zones = {agency.id: agency.timezone for agency in config.agencies}
    compiled: list[CompiledRule] = []
    skipped: list[str] = []

    for rule in config.rules:
        if not rule.enabled:
            continue
        spec = CompiledRule(
            rule=rule,
            zone=agency_zones.get(rule.agency, config.simpul.timezone),
            metric=rule.when.metric,
            offline_after=rule.when.offline,
            change_window=_change_window(rule),
            contexts=[ContextSpec(c.device, c.metric, c.max_age) for c in rule.conditions],
            schedule=rule.schedule,
        )
        for device in select_devices(config, rule):
            try:
                ruleset = _register_device(matcher, rule, device) if spec.offline_after is None else ""
            except UnresolvedThreshold as error:
                skipped.append(f"rule {rule.id} skips device {device.id}: {error}")
                continue
            spec.rulesets[device.id] = ruleset
            spec.hashes[device.id] = _instance_hash(rule, ruleset)
        compiled.append(spec)
    return compiled, skipped


def _change_window(rule: Rule) -> timedelta | None:
    windows = [c.change.over for c in (rule.when, rule.clear) if c is not None and c.change is not None]
    return max(windows) if windows else None


def _instance_hash(rule: Rule, ruleset: str) -> str:
    text = rule.model_dump_json(by_alias=True) + "|" + ruleset
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _register_device(matcher: durable.DurableMatcher, rule: Rule, device: Device) -> str:
    trigger = _condition_tests(rule.when, device) + _context_tests(rule.conditions, device)
    if rule.schedule is not None:
        trigger.append([("eq", "act", 1)])

    edges = {"enter": _render_all(trigger), "abort": _render_negated(trigger)}
    if rule.clear is not None and rule.clear.has_test():
        clear = _condition_tests(rule.clear, device)
        edges["clear"] = _render_all(clear)
        edges["relapse"] = _render_negated(clear)
    else:
        edges["clear"] = edges["abort"]
        edges["relapse"] = edges["enter"]
    return matcher.register(rule.id, edges)


# A condition is a list of clauses, each a list of tests, and every test of every clause must
# hold. Its negation is therefore "any test fails". Grouping keeps a guard such as `chgok == 1`
# next to the test it guards, which makes the compiled expressions easier to read.
Clause = list[Test]


def _condition_tests(comparison: Comparison, device: Device) -> list[Clause]:
    clauses: list[Clause] = [[test] for test in _value_tests(comparison, "value", device)]
    change = comparison.change
    if change is not None:
        guarded: Clause = [("eq", "chgok", 1)]
        if change.above is not None:
            guarded.append(("gt", "chg", change.above))
        if change.below is not None:
            guarded.append(("lt", "chg", change.below))
        clauses.append(guarded)
    return clauses


def _context_tests(contexts: list[Context], device: Device) -> list[Clause]:
    clauses: list[Clause] = []
    for index, context in enumerate(contexts):
        field_name = f"c{index}"
        clause: Clause = [("eq", f"{field_name}ok", 1)]
        clause.extend(_value_tests(context, field_name, device))
        clauses.append(clause)
    return clauses


def _value_tests(comparison: Comparison, field_name: str, device: Device) -> list[Test]:
    tests: list[Test] = []
    pairs: list[tuple[str, Threshold | None]] = [
        ("gt", comparison.above),
        ("lt", comparison.below),
        ("gte", comparison.at_least),
        ("lte", comparison.at_most),
    ]
    for operator, threshold in pairs:
        if threshold is not None:
            tests.append((operator, field_name, resolve_threshold(threshold, device)))
    if comparison.between is not None:
        low, high = comparison.between
        tests.append(("gte", field_name, resolve_threshold(low, device)))
        tests.append(("lte", field_name, resolve_threshold(high, device)))
    if comparison.equals is not None:
        tests.append(("eq", field_name, comparison.equals))
    if comparison.not_equals is not None:
        tests.append(("neq", field_name, comparison.not_equals))
    return tests


def resolve_threshold(threshold: Threshold, device: Device) -> float:
    if not isinstance(threshold, AttributeRef):
        return float(threshold)
    value = device.attributes.get(threshold.attribute)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnresolvedThreshold(
            f"attribute {threshold.attribute!r} is {value!r}; add a numeric {threshold.attribute} to its attributes"
        )
    return float(value)


def _render_test(test: Test) -> durable.Expression:
    operator, field_name, value = test
    return _BUILDERS[operator](field_name, value)  # type: ignore[operator]


def _render_all(clauses: list[Clause]) -> durable.Expression:
    return durable.all_of(*(_render_test(test) for clause in clauses for test in clause))


def _render_negated(clauses: list[Clause]) -> durable.Expression:
    negated = []
    for clause in clauses:
        negated.extend(_render_test((_NEGATED[op], name, value)) for op, name, value in clause)
    return durable.any_of(*negated)
