"""Rules: the list with state and last firing, and a form editor with a live YAML preview.

Every change is validated against the whole config as it is typed. Saving writes config.yaml
with its comments kept, commits it and audits it, and the running hub then reloads it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pandas as pd
import streamlit as st

from rules import staff as desk
from rules.config_edit import ConfigEditError, render_rule_yaml
from rules.store import queries
from ui import context, format, rule_form
from ui.saving import editor_since, save
from ui.text import t

NEW = "__new__"
DRAFT = "backtest_draft"
EDITOR = "rules_editor"

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
agency_ids = desk.visible_agencies(member, config)
editable = member.agencies("edit_config", agency_ids)
agencies = context.agencies()

st.title(t("nav.rules", lang))
if "rules_done" in st.session_state:
    st.success(st.session_state.pop("rules_done"))
if not agency_ids:
    st.info(t("common.no_agency", lang))
    st.stop()

visible = [rule for rule in config.rules if rule.agency in agency_ids]
instances = queries.list_instances(engine=db)
last_fired = queries.last_firing_per_rule(engine=db)
states: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
for instance in instances:
    states[instance.rule_id][instance.state] += 1

st.dataframe(
    pd.DataFrame(
        [
            {
                "id": rule.id,
                t("rules.name", lang): rule.name,
                t("common.agency", lang): agencies[rule.agency].name if rule.agency in agencies else rule.agency,
                t("common.severity", lang): t(f"severity.{rule.severity}", lang),
                t("rules.enabled", lang): bool(rule.enabled),
                t("rules.firing_now", lang): states[rule.id]["firing"] + states[rule.id]["clearing"],
                t("rules.pending_now", lang): states[rule.id]["pending"],
                t("rules.last_firing", lang): format.when(
                    last_fired.get(rule.id), context.agency_zone(rule.agency), lang
                ),
            }
            for rule in visible
        ]
    ),
    hide_index=True,
    width="stretch",
)

choices = [rule.id for rule in visible] + ([NEW] if editable else [])
# A rule saved as new is chosen on the next run; a widget's value cannot change once it is drawn.
if st.session_state.get("rules_select_next") in choices:
    st.session_state["rules_chosen"] = st.session_state.pop("rules_select_next")
names = {rule.id: f"{rule.name} ({rule.id})" for rule in visible}
chosen = st.selectbox(
    t("rules.choose", lang),
    choices,
    format_func=lambda key: t("rules.new_rule", lang) if key == NEW else names[key],
    key="rules_chosen",
)
reload = st.session_state.get("rules_loaded_for") != chosen
try:
    editor = editor_since(EDITOR, reload=reload)
except (ConfigEditError, OSError) as error:
    st.error(error.message(lang) if isinstance(error, ConfigEditError) else str(error))
    st.stop()
rule_agency = next((rule.agency for rule in visible if rule.id == chosen), editable[0] if editable else None)
if chosen != NEW and (rule_agency not in editable or chosen not in editor.rule_ids()):
    st.caption(t("rules.read_only", lang))
    if chosen in editor.rule_ids():
        st.code(editor.rule_yaml(chosen), language="yaml", wrap_lines=True)
    st.stop()

original: dict[str, Any]
if chosen == NEW:
    first_device = next((device.id for device in config.devices if device.agency in editable), "")
    original = rule_form.new_rule(editable[0], first_device)
else:
    original = editor.get_rule(chosen)
if st.button(t("rules.discard", lang), key="rules_discard", help=t("rules.discard_help", lang)):
    editor = editor_since(EDITOR, reload=True)
    original = editor.get_rule(chosen) if chosen != NEW else original
    reload = True
if reload:
    rule_form.load_state(original)
    st.session_state["rules_loaded_for"] = chosen

draft = rule_form.rule_from_state(rule_form.current_state(), original)
try:
    if chosen == NEW:
        editor.add_rule(draft)
    else:
        editor.replace_rule(chosen, draft)
    problems = editor.check()
    edit_error = None
except ConfigEditError as error:
    problems, edit_error = [], error.message(lang)

index = editor.rule_ids().index(draft["id"]) if draft["id"] in editor.rule_ids() else -1
prefix = f"rules[{index}]"
by_field: dict[str, list[str]] = defaultdict(list)
elsewhere = []
for problem in problems:
    if problem.path == prefix or problem.path.startswith(prefix + "."):
        by_field[problem.path.removeprefix(prefix).removeprefix(".")].append(problem.message(lang))
    else:
        elsewhere.append(problem.format(lang))

form, preview = st.columns([3, 2], gap="large")
with form:
    rule_form.render(config, editable, by_field, lang, is_new=chosen == NEW)
with preview:
    st.subheader(t("rules.preview", lang))
    try:
        st.code(render_rule_yaml(draft), language="yaml", wrap_lines=True)
    except ConfigEditError as error:
        st.caption(error.message(lang))
    if editor.changes:
        st.markdown(t("rules.changes", lang))
        for change in editor.changes:
            st.markdown(f"- `{change}`")
    if edit_error:
        st.error(edit_error)
    count = sum(len(messages) for messages in by_field.values()) + len(elsewhere)
    if count:
        st.error(t("rules.problems", lang, count=count))
        for message in elsewhere:
            st.markdown(f"- {message}")
    unchanged = not editor.changes
    if st.button(t("rules.try", lang), key="rules_try", disabled=bool(count) or bool(edit_error)):
        st.session_state[DRAFT] = {"rule_id": None if chosen == NEW else chosen, "rule": draft}
        st.switch_page("views/backtest.py")
    if st.button(t("common.save", lang), key="rules_save", type="primary", disabled=bool(count) or unchanged):
        result = save(editor, member=member, db=db, lang=lang)
        if result is not None:
            st.session_state["rules_done"] = t(
                "rules.saved", lang, commit=result.commit[:10] if result.commit else t("save.no_git", lang)
            )
            st.session_state["rules_loaded_for"] = None
            if chosen == NEW:
                st.session_state["rules_select_next"] = draft["id"]
            st.rerun()
