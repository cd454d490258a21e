"""The durable_rules matcher: conditions registered as rulesets evaluate probes through durable_rules internals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rules import durable
from rules.durable import DurableMatcher, encode_probe


@pytest.fixture(scope="module")
def matcher() -> DurableMatcher:
    # A durable_rules host cannot be freed, so the tests share one.
    return DurableMatcher()


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        (durable.greater("value", 850), 850.5, True),
        (durable.greater("value", 850), 850, False),
        (durable.greater_or_equal("value", 850), 850.0, True),
        (durable.less("value", 800), 799.9, True),
        (durable.less("value", 800), 800, False),
        (durable.less_or_equal("value", 800), 800, True),
        (durable.equal("value", "off"), "off", True),
        (durable.equal("value", "off"), "on", False),
        (durable.not_equal("value", "off"), "on", True),
        (durable.all_of(durable.greater("value", 1), durable.less("value", 3)), 2, True),
        (durable.all_of(durable.greater("value", 1), durable.less("value", 3)), 3, False),
        (durable.any_of(durable.less("value", 1), durable.greater("value", 3)), 5, True),
        (durable.any_of(durable.less("value", 1), durable.greater("value", 3)), 2, False),
    ],
)
def test_edge_holds_for_probe_value(matcher: DurableMatcher, expression: Any, value: object, expected: bool) -> None:
    ruleset = matcher.register(f"test-{json.dumps(expression, sort_keys=True)}", {"enter": expression})

    assert matcher.holds(ruleset, "enter", {"value": value}) is expected
    assert matcher.holds(ruleset, "enter", {"value": value}, encode_probe({"value": value})) is expected


def test_edges_of_one_ruleset_answer_separately(matcher: DurableMatcher) -> None:
    ruleset = matcher.register(
        "test-hysteresis", {"enter": durable.greater("value", 850), "clear": durable.less("value", 800)}
    )

    assert matcher.holds(ruleset, "enter", {"value": 900}) is True
    assert matcher.holds(ruleset, "clear", {"value": 900}) is False
    assert matcher.holds(ruleset, "clear", {"value": 700}) is True
    assert matcher.holds(ruleset, "enter", {"value": 820}) is False


def test_probe_with_several_fields(matcher: DurableMatcher) -> None:
    expression = durable.all_of(durable.greater("value", 850), durable.equal("c0ok", 1), durable.equal("act", 1))
    ruleset = matcher.register("test-fields", {"enter": expression})

    assert matcher.holds(ruleset, "enter", {"value": 900, "c0ok": 1, "act": 1}) is True
    assert matcher.holds(ruleset, "enter", {"value": 900, "c0ok": 0, "act": 1}) is False


def test_same_definition_reuses_ruleset(matcher: DurableMatcher) -> None:
    edges = {"enter": durable.greater("value", 5)}

    first = matcher.register("test-reuse", edges)
    again = matcher.register("test-reuse", {"enter": durable.greater("value", 5)})
    changed = matcher.register("test-reuse", {"enter": durable.greater("value", 6)})

    assert first == again
    assert changed != first


def test_unknown_edge_raises(matcher: DurableMatcher) -> None:
    with pytest.raises(ValueError, match=r"unknown edges \['rise'\]"):
        matcher.register("test-unknown", {"rise": durable.greater("value", 5)})


@pytest.mark.parametrize(
    "probe",
    [
        {"value": 862.5},
        {"value": 862},
        {"value": -0.001, "chg": 12.25, "chgok": 1},
        {"value": 1e-7, "c0": 1.5e300},
        {"value": 'kata "dalam" kutip \\ dan é, 水位'},
        {"value": "on", "act": 0},
    ],
)
def test_encoded_probe_is_json_of_fields(probe: dict[str, Any]) -> None:
    encoded = encode_probe(probe)

    assert encoded.startswith(",")
    assert json.loads("{" + encoded[1:] + "}") == probe
