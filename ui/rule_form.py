"""The rule editor's fields: a rule as plain data <-> widget values, and the widgets themselves.

Widget values live in Streamlit's session state under ``rules_*`` keys. Because the state contains
a widget's new value before the widget is drawn again, the page builds the edited rule and
validates it first, then draws each field with the problems that point at it.

Parts of a rule that the form does not model (``and`` conditions, ``change`` tests, flapping
settings, action types without fields here) are carried over unchanged and shown as YAML.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from rules.config import WEEKDAYS, Config
from ui.text import t

PREFIX = "rules_"
SELECTORS = ("device", "kind", "tag", "agency")
NUMBER_TESTS = ("above", "below", "at_least", "at_most", "between")
STATE_TESTS = ("equals", "not_equals")
SEVERITIES = ("low", "medium", "high", "critical")
# The action types the form has fields for, with those fields.
ACTION_FIELDS: dict[str, tuple[str, ...]] = {
    "alert": ("message",),
    "dispatch": ("team", "title", "due"),
    "log": ("message",),
    "webhook": ("target", "message"),
    "node_red": ("flow", "path"),
    "command": ("device", "action"),
}

Problems = Mapping[str, list[str]]


def _number(value: Any) -> Any:
    """850.0 as 850, so a threshold typed as a whole number is written without ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _test_of(comparison: Mapping[str, Any]) -> str | None:
    for key in (*NUMBER_TESTS, *STATE_TESTS, "change"):
        if key in comparison:
            return key
    return None


def _threshold_state(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping) and "attribute" in value:
        return {f"{prefix}source": "attribute", f"{prefix}attribute": str(value["attribute"]), f"{prefix}value": None}
    return {f"{prefix}source": "number", f"{prefix}value": value, f"{prefix}attribute": ""}


def _threshold(state: Mapping[str, Any], prefix: str) -> Any:
    if state.get(f"{prefix}source") == "attribute":
        return {"attribute": str(state.get(f"{prefix}attribute") or "").strip()}
    return _number(state.get(f"{prefix}value"))


def _comparison_state(prefix: str, comparison: Mapping[str, Any]) -> dict[str, Any]:
    test = _test_of(comparison)
    state: dict[str, Any] = {f"{prefix}op": test or "above"}
    if test == "between":
        low, high = comparison["between"]
        state |= _threshold_state(prefix, low) | _threshold_state(f"{prefix}high_", high)
    elif test in NUMBER_TESTS:
        state |= _threshold_state(prefix, comparison[test]) | _threshold_state(f"{prefix}high_", None)
    else:
        state |= _threshold_state(prefix, None) | _threshold_state(f"{prefix}high_", None)
    state[f"{prefix}state"] = str(comparison[test]) if test in STATE_TESTS else ""
    return state


def _comparison(state: Mapping[str, Any], prefix: str, original: Mapping[str, Any]) -> dict[str, Any]:
    test = state.get(f"{prefix}op")
    if test == "change":
        return {"change": copy.deepcopy(original.get("change"))}
    if test == "between":
        return {"between": [_threshold(state, prefix), _threshold(state, f"{prefix}high_")]}
    if test in STATE_TESTS:
        text = str(state.get(f"{prefix}state") or "").strip()
        try:
            return {test: _number(float(text.replace(",", ".")))}
        except ValueError:
            return {test: text}
    return {str(test): _threshold(state, prefix)}


def state_from_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """Return the widget values for editing ``rule``, keyed without the ``rules_`` prefix."""
    when = rule.get("when") or {}
    clear = rule.get("clear") or {}
    schedule = rule.get("schedule")
    select_by = next((key for key in SELECTORS if key in when), "device")
    state: dict[str, Any] = {
        "id": str(rule.get("id", "")),
        "name": str(rule.get("name", "")),
        "agency": str(rule.get("agency", "")),
        "severity": rule.get("severity", "medium"),
        "enabled": bool(rule.get("enabled", True)),
        "select_by": select_by,
        "select_value": str(when.get(select_by, "")),
        "trigger": "offline" if "offline" in when else "compare",
        "offline": str(when.get("offline", "30m")),
        "metric": str(when.get("metric", "")),
        "for": str(when.get("for", "")),
        "clear_on": bool(clear) and _test_of(clear) is not None,
        "clear_for": str(clear.get("for", "")),
        "cooldown": str(rule.get("cooldown", "")),
        "schedule_on": schedule is not None,
        "days": list((schedule or {}).get("days", WEEKDAYS)),
        "from": str((schedule or {}).get("from", "00:00")),
        "to": str((schedule or {}).get("to", "24:00")),
        "actions": [_action_state(action) for action in rule.get("then") or []],
    }
    state |= _comparison_state("", when)
    state |= _comparison_state("clear_", clear if state["clear_on"] else {"below": None})
    return state


def _action_state(action: Mapping[str, Any]) -> dict[str, Any]:
    kind = next(iter(action), "")
    spec = action.get(kind) or {}
    if kind in ACTION_FIELDS and set(spec) <= set(ACTION_FIELDS[kind]):
        return {"type": kind, **{name: str(spec.get(name, "")) for name in ACTION_FIELDS[kind]}}
    return {"type": kind, "raw": copy.deepcopy(dict(action))}


def rule_from_state(state: Mapping[str, Any], original: Mapping[str, Any]) -> dict[str, Any]:
    """Build the rule that the form describes on top of ``original``, so that unmodelled parts are kept."""
    rule = copy.deepcopy(dict(original))
    rule["id"] = str(state["id"]).strip()
    rule["name"] = str(state["name"]).strip()
    rule["agency"] = state["agency"]
    rule["severity"] = state["severity"]
    if state["enabled"]:
        if "enabled" in rule:
            rule["enabled"] = True
    else:
        rule["enabled"] = False

    when: dict[str, Any] = {state["select_by"]: str(state["select_value"])}
    if state["trigger"] == "offline":
        when["offline"] = str(state["offline"]).strip()
    else:
        when["metric"] = state["metric"]
        when |= _comparison(state, "", original.get("when") or {})
        if str(state["for"]).strip():
            when["for"] = str(state["for"]).strip()
    rule["when"] = when

    if state["clear_on"]:
        clear = _comparison(state, "clear_", original.get("clear") or {})
        if str(state["clear_for"]).strip():
            clear["for"] = str(state["clear_for"]).strip()
        rule["clear"] = clear
    elif str(state["clear_for"]).strip():
        rule["clear"] = {"for": str(state["clear_for"]).strip()}
    else:
        rule.pop("clear", None)

    for key in ("cooldown",):
        if str(state[key]).strip():
            rule[key] = str(state[key]).strip()
        else:
            rule.pop(key, None)
    if state["schedule_on"]:
        rule["schedule"] = {"days": list(state["days"]), "from": state["from"], "to": state["to"]}
    else:
        rule.pop("schedule", None)
    rule["then"] = [_action(action) for action in state["actions"]]
    return rule


def _action(action: Mapping[str, Any]) -> dict[str, Any]:
    if "raw" in action:
        return copy.deepcopy(dict(action["raw"]))
    kind = action["type"]
    spec = {name: str(action.get(name, "")).strip() for name in ACTION_FIELDS[kind]}
    return {kind: {name: value for name, value in spec.items() if value}}


def new_rule(agency: str, device: str) -> dict[str, Any]:
    return {
        "id": "",
        "name": "",
        "agency": agency,
        "severity": "medium",
        "when": {"device": device, "metric": "", "above": 0},
        "then": [{"alert": {"message": "{rule.name}: {value} di {device.name}"}}],
    }


# --- session state -------------------------------------------------------------------------------


INITIAL = "rules_form_initial"


def load_state(rule: Mapping[str, Any]) -> None:
    """Put ``rule``'s values into the session state, replacing what the form held."""
    values = state_from_rule(rule)
    for key, value in values.items():
        st.session_state[PREFIX + key] = value
    st.session_state[INITIAL] = values
    st.session_state[PREFIX + "generation"] = st.session_state.get(PREFIX + "generation", 0) + 1


def current_state() -> dict[str, Any]:
    """Read the form's values from the session state, with the action field edits applied.

    Streamlit drops the state of a widget that a run does not draw, such as the clear fields
    while the clear toggle is off. The values the rule was loaded with are used for those.
    """
    state = dict(st.session_state.get(INITIAL, {}))
    state |= {
        key.removeprefix(PREFIX): value
        for key, value in st.session_state.items()
        if key.startswith(PREFIX) and key != INITIAL
    }
    generation = state.get("generation", 0)
    actions = []
    for index, action in enumerate(state.get("actions", [])):
        edited = dict(action)
        for name in ACTION_FIELDS.get(action["type"], ()):
            widget = f"{PREFIX}action_{generation}_{index}_{name}"
            if widget in st.session_state and "raw" not in action:
                edited[name] = st.session_state[widget]
        actions.append(edited)
    state["actions"] = actions
    return state


# --- widgets -------------------------------------------------------------------------------------


def _problems_at(problems: Problems, *paths: str) -> None:
    for path in paths:
        for message in problems.get(path, []):
            st.error(message, icon=":material/error:")


def render(config: Config, agency_ids: list[str], problems: Problems, lang: str, *, is_new: bool) -> None:
    """Draw the form's widgets, each followed by the problems found at its key path."""
    state = current_state()
    key: Callable[[str], str] = lambda name: PREFIX + name  # noqa: E731
    devices = [device for device in config.devices if device.agency in agency_ids or device.id == state["select_value"]]

    st.subheader(t("rules.basics", lang))
    first, second = st.columns(2)
    first.text_input("id", key=key("id"), disabled=not is_new, help=t("rules.id_help", lang))
    _problems_at(problems, "id")
    second.text_input(t("rules.name", lang), key=key("name"))
    _problems_at(problems, "name")
    first.selectbox(
        t("common.agency", lang),
        agency_ids,
        key=key("agency"),
        format_func=lambda option: next((a.name for a in config.agencies if a.id == option), option),
    )
    second.selectbox(
        t("common.severity", lang), SEVERITIES, key=key("severity"), format_func=lambda s: t(f"severity.{s}", lang)
    )
    st.toggle(t("rules.enabled", lang), key=key("enabled"))

    st.subheader(t("rules.when", lang))
    first, second = st.columns(2)
    first.selectbox(
        t("rules.select_by", lang),
        SELECTORS,
        key=key("select_by"),
        format_func=lambda option: t(f"rules.select_by.{option}", lang),
    )
    options = _selector_options(config, devices, state["select_by"])
    if state["select_value"] not in options:
        options = [state["select_value"], *options] if state["select_value"] else options
    second.selectbox(t("rules.select_value", lang), options, key=key("select_value"))
    _problems_at(problems, *(f"when.{name}" for name in SELECTORS))
    st.radio(
        t("rules.trigger", lang),
        ("compare", "offline"),
        key=key("trigger"),
        horizontal=True,
        format_func=lambda option: t(f"rules.trigger.{option}", lang),
    )
    if state["trigger"] == "offline":
        st.text_input(t("rules.offline", lang), key=key("offline"), help=t("rules.duration_help", lang))
        _problems_at(problems, "when.offline")
    else:
        metrics = sorted({name for kind in config.kinds.values() for name in kind.metrics})
        if state["metric"] not in metrics:
            metrics = [state["metric"], *metrics]
        st.selectbox(t("rules.metric", lang), metrics, key=key("metric"))
        _problems_at(problems, "when.metric")
        _comparison_widgets("", state, problems, "when", lang)
        st.text_input(t("rules.for", lang), key=key("for"), help=t("rules.duration_help", lang))
        _problems_at(problems, "when.for", "when")

    st.subheader(t("rules.clear", lang))
    st.toggle(t("rules.clear_on", lang), key=key("clear_on"))
    if state["clear_on"]:
        _comparison_widgets("clear_", state, problems, "clear", lang)
    st.text_input(t("rules.clear_for", lang), key=key("clear_for"), help=t("rules.duration_help", lang))
    _problems_at(problems, "clear.for", "clear")

    st.subheader(t("rules.timing", lang))
    st.text_input(t("rules.cooldown", lang), key=key("cooldown"), help=t("rules.cooldown_help", lang))
    _problems_at(problems, "cooldown")
    st.toggle(t("rules.schedule_on", lang), key=key("schedule_on"))
    if state["schedule_on"]:
        st.multiselect(t("rules.days", lang), WEEKDAYS, key=key("days"), format_func=lambda day: t(f"day.{day}", lang))
        first, second = st.columns(2)
        first.text_input(t("rules.from", lang), key=key("from"), help="HH:MM")
        second.text_input(t("rules.to", lang), key=key("to"), help="HH:MM")
        _problems_at(problems, "schedule.days", "schedule.from", "schedule.to", "schedule")

    _action_widgets(config, state, problems, lang)


def _selector_options(config: Config, devices: list[Any], select_by: str) -> list[str]:
    if select_by == "device":
        return [device.id for device in devices]
    if select_by == "kind":
        return list(config.kinds)
    if select_by == "tag":
        return sorted({tag for device in devices for tag in device.tags})
    return [agency.id for agency in config.agencies]


def _comparison_widgets(prefix: str, state: Mapping[str, Any], problems: Problems, path: str, lang: str) -> None:
    key: Callable[[str], str] = lambda name: PREFIX + prefix + name  # noqa: E731
    tests = [*NUMBER_TESTS, *STATE_TESTS] + (["change"] if state.get(f"{prefix}op") == "change" else [])
    st.selectbox(t("rules.test", lang), tests, key=key("op"), format_func=lambda test: t(f"rules.test.{test}", lang))
    test = state.get(f"{prefix}op")
    if test == "change":
        st.info(t("rules.change_in_yaml", lang))
        return
    if test in STATE_TESTS:
        st.text_input(t("rules.state_value", lang), key=key("state"))
        _problems_at(problems, f"{path}.{test}")
        return
    bounds = [("", "value")] + ([("high_", "value_high")] if test == "between" else [])
    for part, label in bounds:
        first, second = st.columns([1, 2])
        first.radio(
            t(f"rules.{label}", lang),
            ("number", "attribute"),
            key=key(f"{part}source"),
            format_func=lambda option: t(f"rules.source.{option}", lang),
        )
        if state.get(f"{prefix}{part}source") == "attribute":
            second.text_input(
                t("rules.attribute", lang), key=key(f"{part}attribute"), help=t("rules.attribute_help", lang)
            )
        else:
            second.number_input(t("rules.threshold", lang), key=key(f"{part}value"), step=1.0, format="%g")
    _problems_at(problems, f"{path}.{test}", *(f"{path}.{test}[{index}]" for index in range(2)))


def _action_widgets(config: Config, state: Mapping[str, Any], problems: Problems, lang: str) -> None:
    st.subheader(t("rules.actions", lang))
    generation = state.get("generation", 0)
    teams = [team.id for agency in config.agencies for team in agency.teams]
    for index, action in enumerate(state["actions"]):
        with st.container(border=True):
            head, remove = st.columns([5, 1])
            title = t(f"action.{action['type']}", lang, default=action["type"])
            head.markdown(f"**{index + 1}. {title}**")
            if remove.button(t("rules.remove_action", lang), key=f"{PREFIX}remove_{generation}_{index}"):
                kept = [item for position, item in enumerate(state["actions"]) if position != index]
                st.session_state[PREFIX + "actions"] = kept
                st.session_state[PREFIX + "generation"] = generation + 1
                st.rerun()
            if "raw" in action:
                st.caption(t("rules.action_in_yaml", lang))
                continue
            for name in ACTION_FIELDS[action["type"]]:
                widget = f"{PREFIX}action_{generation}_{index}_{name}"
                label = t(f"action.field.{name}", lang)
                if name == "team":
                    options = teams if action.get(name) in teams else [action.get(name, ""), *teams]
                    st.selectbox(label, options, index=options.index(action.get(name, "")), key=widget)
                else:
                    st.text_input(label, value=action.get(name, ""), key=widget)
            _problems_at(
                problems,
                f"then[{index}]",
                *(f"then[{index}].{action['type']}.{n}" for n in ACTION_FIELDS[action["type"]]),
            )

    first, second = st.columns([2, 1])
    kind = first.selectbox(
        t("rules.new_action", lang),
        list(ACTION_FIELDS),
        key=f"{PREFIX}new_action",
        format_func=lambda option: t(f"action.{option}", lang),
    )
    if second.button(t("rules.add_action", lang), key=f"{PREFIX}add_action"):
        st.session_state[PREFIX + "actions"] = [
            *state["actions"],
            {"type": kind, **dict.fromkeys(ACTION_FIELDS[kind], "")},
        ]
        st.session_state[PREFIX + "generation"] = generation + 1
        st.rerun()
