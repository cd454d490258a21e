"""Try on history: run a rule as it is and as changed over recorded readings, and compare the alerts
each would have opened, side by side and on the chart, before the change is saved.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import altair as alt
import pandas as pd
import streamlit as st

from rules import staff as desk
from rules.backtest import BacktestError, BacktestResult, run_backtest
from rules.config import Rule
from rules.config_edit import ConfigEditError, ConfigEditor
from ui import context, format
from ui.saving import save
from ui.text import t

DRAFT = "backtest_draft"
RESULT = "backtest_result"
QUICK_TESTS = ("above", "below", "at_least", "at_most")

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
agency_ids = desk.visible_agencies(member, config)

st.title(t("nav.backtest", lang))
st.caption(t("backtest.intro", lang))
if "backtest_done" in st.session_state:
    st.success(st.session_state.pop("backtest_done"))
visible = {rule.id: rule for rule in config.rules if rule.agency in agency_ids}
draft: dict[str, Any] | None = st.session_state.get(DRAFT)
options = list(visible) + (["__draft__"] if draft and draft["rule_id"] is None else [])
if not options:
    st.info(t("backtest.no_rules", lang))
    st.stop()
default = (
    options.index(draft["rule_id"] or "__draft__") if draft and (draft["rule_id"] or "__draft__") in options else 0
)
chosen = st.selectbox(
    t("common.rule", lang),
    options,
    index=default,
    format_func=lambda key: t("backtest.new_draft", lang) if key == "__draft__" else f"{visible[key].name} ({key})",
    key="backtest_rule",
)

try:
    editor = ConfigEditor.load(context.config_path())
except (ConfigEditError, OSError) as error:
    st.error(error.message(lang) if isinstance(error, ConfigEditError) else str(error))
    st.stop()

from_rules_page = draft is not None and (draft["rule_id"] or "__draft__") == chosen
if from_rules_page:
    assert draft is not None
    changed = copy.deepcopy(draft["rule"])
    st.info(t("backtest.from_editor", lang))
else:
    changed = editor.get_rule(chosen)
    when = changed.get("when", {})
    test = next((name for name in QUICK_TESTS if isinstance(when.get(name), (int, float))), None)
    st.caption(t("backtest.quick", lang))
    first, second = st.columns(2)
    if test is not None:
        when[test] = first.number_input(
            t("backtest.threshold", lang, test=t(f"rules.test.{test}", lang)),
            value=float(when[test]),
            step=1.0,
            format="%g",
            key=f"backtest_threshold_{chosen}",
        )
        if float(when[test]).is_integer():
            when[test] = int(when[test])
    else:
        attribute = next(
            (
                when[name]["attribute"]
                for name in QUICK_TESTS
                if isinstance(when.get(name), dict) and "attribute" in when[name]
            ),
            None,
        )
        if attribute is not None:
            first.caption(t("backtest.attribute_threshold", lang, attribute=attribute))
    when["for"] = second.text_input(
        t("rules.for", lang), value=str(when.get("for", "0s")), key=f"backtest_for_{chosen}"
    )


def typed(rule_id: str | None, data: dict[str, Any]) -> Rule | None:
    """Load the rule as the hub would from config.yaml with ``data`` in place; return None when invalid."""
    trial = ConfigEditor.load(context.config_path())
    try:
        if rule_id is None:
            trial.add_rule(data)
        else:
            trial.replace_rule(rule_id, data)
    except ConfigEditError as error:
        st.error(error.message(lang))
        return None
    loaded = trial.validate()
    if loaded.problems:
        st.error(t("rules.problems", lang, count=len(loaded.problems)))
        for problem in loaded.problems:
            st.markdown(f"- {problem.format(lang)}")
        return None
    return next(rule for rule in loaded.config.rules if rule.id == data["id"])


rule_id = None if chosen == "__draft__" else chosen
before = visible.get(chosen)
after = typed(rule_id, changed)
if after is None:
    st.stop()

zone = context.agency_zone(after.agency)
local = ZoneInfo(zone)
today = datetime.now(local).date()
period = st.date_input(
    t("backtest.period", lang),
    value=(today - timedelta(days=7), today),
    max_value=today,
    format="DD/MM/YYYY",
    key="backtest_period",
)
if not isinstance(period, tuple) or len(period) != 2:
    st.caption(t("backtest.pick_end", lang))
    st.stop()
start = datetime.combine(period[0], time(0), local).astimezone(UTC)
end = datetime.combine(period[1] + timedelta(days=1), time(0), local).astimezone(UTC)

if st.button(t("backtest.run", lang), key="backtest_run", type="primary"):
    try:
        st.session_state[RESULT] = run_backtest(config=config, db=db, before=before, after=after, start=start, end=end)
    except BacktestError as error:
        st.error(error.message(lang))
        st.stop()

result: BacktestResult | None = st.session_state.get(RESULT)
if result is None or (result.after.rule is not None and result.after.rule.id != after.id):
    st.stop()


def alert_table(alerts: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                t("common.device", lang): alert.device_id,
                t("alerts.opened", lang): format.when(alert.opened_at, zone, lang),
                t("alerts.resolved", lang): format.when(alert.resolved_at, zone, lang),
                t("common.value", lang): format.number(alert.value, lang),
            }
            for alert in alerts
        ],
        columns=[
            t("common.device", lang),
            t("alerts.opened", lang),
            t("alerts.resolved", lang),
            t("common.value", lang),
        ],
    )


left, right = st.columns(2)
for column, variant, label in ((left, result.before, "backtest.before"), (right, result.after, "backtest.after")):
    with column:
        st.subheader(t(label, lang))
        st.metric(t("backtest.alerts", lang), format.number(len(variant.alerts), lang, 0))
        st.dataframe(alert_table(variant.alerts), hide_index=True, width="stretch")
        if variant.skipped:
            st.caption(t("backtest.skipped", lang, devices=", ".join(variant.skipped)))

devices = sorted(
    result.readings, key=lambda key: -sum(1 for a in result.after.alerts + result.before.alerts if a.device_id == key)
)
if devices:
    names = {device.id: device.name for device in config.devices}
    device_id = st.selectbox(
        t("common.device", lang),
        devices,
        format_func=lambda key: f"{names.get(key, key)} ({key})",
        key="backtest_device",
    )
    points = result.readings[device_id]
    axis_time = t("devices.time", lang, zone=format.zone_name(zone))
    values = pd.DataFrame(
        {
            axis_time: [point.ts.astimezone(local).replace(tzinfo=None) for point in points],
            "value": [point.value for point in points],
        }
    )
    span = points[-1].ts - points[0].ts if points else timedelta(0)
    time_axis = alt.X(f"{axis_time}:T", axis=alt.Axis(format=format.chart_time(lang, span)))
    metric = after.when.metric or ""
    line = (
        alt.Chart(values).mark_line().encode(x=time_axis, y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)))
    )
    variant_name = t("backtest.variant", lang)
    marks = pd.DataFrame(
        [
            {axis_time: alert.opened_at.astimezone(local).replace(tzinfo=None), variant_name: t(label, lang)}
            for variant, label in ((result.before, "backtest.before"), (result.after, "backtest.after"))
            for alert in variant.alerts
            if alert.device_id == device_id
        ],
        columns=[axis_time, variant_name],
    )
    openings = (
        alt.Chart(marks)
        .mark_rule(strokeWidth=2)
        .encode(x=time_axis, color=alt.Color(f"{variant_name}:N", legend=alt.Legend(orient="bottom", labelLimit=0)))
    )
    device = next(device for device in config.devices if device.id == device_id)
    levels = []
    for variant, label in ((result.before, "backtest.before"), (result.after, "backtest.after")):
        if variant.rule is None or variant.rule.when.metric is None:
            continue
        alone = config.model_copy(update={"rules": [variant.rule]})
        levels += [
            {"level": line_.value, variant_name: t(label, lang)}
            for line_ in desk.threshold_lines(alone, device, variant.rule.when.metric)
            if not line_.clears
        ]
    chart = line + openings
    if levels:
        chart += (
            alt.Chart(pd.DataFrame(levels))
            .mark_rule(strokeDash=[6, 4])
            .encode(y="level:Q", color=alt.Color(f"{variant_name}:N"))
        )
    st.altair_chart(chart, width="stretch")
    st.caption(t("backtest.chart_note", lang))

if from_rules_page and member.can("edit_config", after.agency):
    assert draft is not None
    if st.button(t("backtest.save", lang), key="backtest_save", type="primary"):
        saving = ConfigEditor.load(context.config_path())
        try:
            if rule_id is None:
                saving.add_rule(changed)
            else:
                saving.replace_rule(rule_id, changed)
        except ConfigEditError as error:
            st.error(error.message(lang))
            st.stop()
        saved = save(saving, member=member, db=db, lang=lang)
        if saved is not None:
            del st.session_state[DRAFT]
            st.session_state.pop(RESULT, None)
            st.session_state["backtest_done"] = t(
                "rules.saved", lang, commit=saved.commit[:10] if saved.commit else t("save.no_git", lang)
            )
            st.session_state["rules_loaded_for"] = None
            st.rerun()
