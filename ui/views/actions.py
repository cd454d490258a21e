"""Actions and integrations: action runs with their failures and attempts, retry of a dead run, and the
health of each integration as the running hub reports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from rules import staff as desk
from rules.store import queries
from rules.users import AccessDenied
from ui import context, format
from ui.text import t

STATUSES = ("pending", "failed", "dead", "held", "succeeded", "skipped")

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
agency_ids = desk.visible_agencies(member, config)
rule_ids = [rule.id for rule in config.rules if rule.agency in agency_ids]
zone = config.simpul.timezone

st.title(t("nav.actions", lang))
if "actions_done" in st.session_state:
    st.success(st.session_state.pop("actions_done"))

counts = queries.count_runs(engine=db, rule_ids=rule_ids)
columns = st.columns(len(STATUSES))
for column, status in zip(columns, STATUSES, strict=True):
    column.metric(t(f"run.status.{status}", lang), format.number(counts.get(status, 0), lang, 0))

chosen = st.multiselect(
    t("common.status", lang),
    options=STATUSES,
    default=["pending", "failed", "dead"],
    format_func=lambda status: t(f"run.status.{status}", lang),
    placeholder=t("common.choose", lang),
    key="actions_status",
)
runs = queries.list_runs(engine=db, rule_ids=rule_ids, statuses=chosen or STATUSES)
if runs:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "#": run.id,
                    t("common.status", lang): t(f"run.status.{run.status}", lang),
                    t("actions.type", lang): run.type,
                    t("actions.target", lang): run.target or "–",
                    t("common.rule", lang): run.rule_id,
                    t("common.device", lang): run.device_id,
                    t("actions.attempts", lang): run.attempts,
                    t("actions.next_attempt", lang): format.when(run.next_attempt_at, zone, lang),
                    t("actions.last_error", lang): run.last_error or "",
                }
                for run in runs
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.caption(t("actions.none", lang))

dead = {run.id: run for run in runs if run.status == "dead"}
if dead:
    st.subheader(t("actions.retry_title", lang))
    run_id = st.selectbox(
        t("actions.dead_run", lang),
        options=list(dead),
        format_func=lambda key: f"#{key} · {dead[key].type} · {dead[key].rule_id} · {dead[key].last_error or ''}"[:120],
        key="actions_dead",
    )
    if st.button(t("actions.retry", lang), key="actions_retry", type="primary"):
        try:
            desk.retry_run(engine=db, config=config, staff=member, run=dead[run_id])
        except (AccessDenied, desk.NotFound, LookupError, ValueError) as error:
            st.error(t("actions.failed", lang, detail=str(error)))
        else:
            st.session_state["actions_done"] = t("actions.retried", lang, id=run_id)
            st.rerun()

st.subheader(t("actions.integrations", lang))
health = desk.hub_health(config)
if health is None:
    st.warning(t("actions.hub_down", lang, port=config.simpul.port))
    st.stop()


def describe(report: dict[str, Any]) -> str:
    """Render a health report as ``label: value`` pairs in the page's language, times in the hub's zone."""
    parts = []
    for key, value in report.items():
        if key == "healthy" or value is None or value == {}:
            continue
        if isinstance(value, bool):
            shown = t("common.yes" if value else "common.no", lang)
        elif isinstance(value, dict):
            shown = "; ".join(
                f"{name} ({describe(inner) if isinstance(inner, dict) else inner})" for name, inner in value.items()
            )
        elif isinstance(value, str) and key.endswith("_at"):
            shown = format.when(datetime.fromisoformat(value), zone, lang)
        else:
            shown = format.number(value, lang, 0) if isinstance(value, int) else str(value)
        parts.append(f"{t(f'health.{key}', lang, default=key.replace('_', ' '))}: {shown}")
    return ", ".join(parts)


def row(part: str, healthy: bool, report: dict[str, Any]) -> dict[str, Any]:
    return {
        t("actions.part", lang): part,
        t("actions.healthy", lang): healthy,
        t("actions.detail", lang): describe(report),
    }


outbox = health.get("outbox", {})
rows = [row(t("actions.outbox", lang), bool(outbox.get("healthy")), outbox)]
for source_id, report in sorted(health.get("sources", {}).items()):
    rows.append(row(f"{t('actions.source', lang)} {source_id}", bool(report.get("healthy")), report))
for action_type, report in sorted(health.get("actions", {}).items()):
    name = t(f"action.{action_type}", lang, default=action_type)
    rows.append(row(f"{t('actions.executor', lang)} {name}", bool(report.get("healthy")), report))
for source_id, report in sorted(health.get("commands", {}).items()):
    rows.append(row(f"{t('actions.commands', lang)} {source_id}", bool(report.get("connected")), report))
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
