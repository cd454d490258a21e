"""The rule form's conversion between a rule and its field values."""

from __future__ import annotations

import pytest

from rules.config_edit import ConfigEditor
from tests.ui.conftest import ROOT
from ui.rule_form import rule_from_state, state_from_rule

EDITOR = ConfigEditor.load(ROOT / "tests" / "fixtures" / "kota.yaml")


@pytest.mark.parametrize("rule_id", EDITOR.rule_ids())
def test_untouched_form_keeps_rule(rule_id: str) -> None:
    editor = ConfigEditor.load(ROOT / "tests" / "fixtures" / "kota.yaml")
    original = editor.get_rule(rule_id)

    changed = editor.replace_rule(rule_id, rule_from_state(state_from_rule(original), original))

    assert changed == []
    assert editor.render() == editor.loaded_text


def test_attribute_threshold_is_kept() -> None:
    original = EDITOR.get_rule("siaga-2")
    state = state_from_rule(original)
    state["for"] = "10m"

    rule = rule_from_state(state, original)

    assert rule["when"] == {
        "kind": "water_level",
        "metric": "level",
        "at_least": {"attribute": "siaga_2"},
        "for": "10m",
    }


def test_clear_off_keeps_duration() -> None:
    original = EDITOR.get_rule("manggarai-siaga-2")
    state = state_from_rule(original)
    state["clear_on"] = False

    rule = rule_from_state(state, original)

    assert rule["clear"] == {"for": "30m"}


def test_whole_threshold_has_no_fraction() -> None:
    original = EDITOR.get_rule("manggarai-siaga-2")
    state = state_from_rule(original)
    state["value"] = 800.0
    state["op"] = "above"

    rule = rule_from_state(state, original)

    assert rule["when"]["above"] == 800
    assert isinstance(rule["when"]["above"], int)
    assert "at_least" not in rule["when"]
