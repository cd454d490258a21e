"""Audit: every config change with its diff, and every action on alerts, jobs, runs and accounts."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from rules.config_edit import list_config_commits
from rules.store import queries
from ui import context, format
from ui.text import t

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
zone = config.simpul.timezone

st.title(t("nav.audit", lang))

commits = list_config_commits(context.config_path(), limit=30)
if commits:
    st.subheader(t("audit.commits", lang))
    for commit in commits:
        title = (
            f"{format.when(commit.authored_at, zone, lang)} · {commit.author_name} · {commit.message.splitlines()[0]}"
        )
        with st.expander(title):
            st.caption(t("audit.commit", lang, commit=commit.id[:12]) + f" · {commit.author_email}")
            st.code(commit.diff, language="diff", wrap_lines=True)

st.subheader(t("audit.entries", lang))
entries = queries.list_audit(engine=db, limit=300)
actions = sorted({entry.action for entry in entries})
chosen = st.multiselect(
    t("audit.actions", lang),
    options=actions,
    format_func=lambda action: t(f"audit.action.{action}", lang, default=action),
    placeholder=t("common.choose", lang),
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

# Outside git, the audit entries of saves from the pages are the only record of their diffs.
changes = [entry for entry in shown if entry.detail.get("diff")]
if changes and not commits:
    st.subheader(t("audit.config_changes", lang))
    for entry in changes[:20]:
        title = (
            f"{format.when(entry.at, zone, lang)} · {entry.actor} · {entry.detail.get('message', entry.target or '')}"
        )
        with st.expander(title):
            if entry.detail.get("commit"):
                st.caption(t("audit.commit", lang, commit=str(entry.detail["commit"])[:12]))
            st.code(entry.detail["diff"], language="diff", wrap_lines=True)
