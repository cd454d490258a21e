"""Audit: every config change with its diff, and every action on alerts, jobs, runs and accounts."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from rules.store import queries
from ui import context, format
from ui.text import t

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
zone = config.simpul.timezone

st.title(t("nav.audit", lang))

entries = queries.list_audit(engine=db, limit=300)
actions = sorted({entry.action for entry in entries})
chosen = st.multiselect(
    t("audit.actions", lang),
    options=actions,
    format_func=lambda action: t(f"audit.action.{action}", lang, default=action),
    key="audit_actions",
)
shown = [entry for entry in entries if not chosen or entry.action in chosen]
if not shown:
    st.info(t("audit.none", lang))
    st.stop()

st.dataframe(
    pd.DataFrame(
        [
            {
                t("audit.when", lang): format.when(entry.at, zone, lang),
                t("audit.who", lang): entry.actor,
                t("audit.what", lang): t(f"audit.action.{entry.action}", lang, default=entry.action),
                t("audit.target", lang): entry.target or "",
                t("audit.detail", lang): json.dumps(
                    {key: value for key, value in entry.detail.items() if key != "diff"}, ensure_ascii=False
                ),
            }
            for entry in shown
        ]
    ),
    hide_index=True,
    width="stretch",
)

changes = [entry for entry in shown if entry.detail.get("diff")]
if changes:
    st.subheader(t("audit.config_changes", lang))
    for entry in changes[:20]:
        title = (
            f"{format.when(entry.at, zone, lang)} · {entry.actor} · {entry.detail.get('message', entry.target or '')}"
        )
        with st.expander(title):
            if entry.detail.get("commit"):
                st.caption(t("audit.commit", lang, commit=str(entry.detail["commit"])[:12]))
            st.code(entry.detail["diff"], language="diff")
