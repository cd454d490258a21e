"""Alerts: open, acknowledged and resolved; acknowledge or resolve with a note; who did what and when."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from rules import staff as desk
from rules.store import ops, queries
from rules.store.models import Alert
from rules.users import AccessDenied
from ui import context, format
from ui.text import t

STATUSES = ("open", "acknowledged", "resolved")

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
agency_ids = desk.visible_agencies(member, config)
agencies = context.agencies()

st.title(t("nav.alerts", lang))
if "alerts_done" in st.session_state:
    st.success(st.session_state.pop("alerts_done"))
if not agency_ids:
    st.info(t("common.no_agency", lang))
    st.stop()

filters = st.columns(2)
statuses = filters[0].multiselect(
    t("common.status", lang),
    options=STATUSES,
    default=["open", "acknowledged"],
    format_func=lambda status: t(f"alert.status.{status}", lang),
    placeholder=t("common.choose", lang),
    key="alerts_status",
)
chosen_agencies = filters[1].multiselect(
    t("common.agency", lang),
    options=agency_ids,
    default=agency_ids,
    format_func=lambda agency_id: agencies[agency_id].name,
    placeholder=t("common.choose", lang),
    key="alerts_agency",
)
alerts = queries.list_alerts(engine=db, agency_ids=chosen_agencies, statuses=statuses or STATUSES)


def when(alert: Alert, moment: object) -> str:
    return format.when(moment, context.agency_zone(alert.agency_id), lang)  # type: ignore[arg-type]


if not alerts:
    st.info(t("alerts.none", lang))
    st.stop()

table = pd.DataFrame(
    [
        {
            "#": alert.id,
            t("common.status", lang): t(f"alert.status.{alert.status}", lang),
            t("common.severity", lang): t(f"severity.{alert.severity}", lang),
            t("common.rule", lang): alert.rule_name,
            t("common.device", lang): alert.device_id,
            t("common.value", lang): alert.value if alert.value is not None else "–",
            t("alerts.opened", lang): when(alert, alert.opened_at),
            t("alerts.flapping", lang): bool(alert.flapping),
            t("common.message", lang): alert.message,
        }
        for alert in alerts
    ]
)
st.dataframe(table, hide_index=True, width="stretch")

by_id = {alert.id: alert for alert in alerts}
chosen = st.selectbox(
    t("alerts.choose", lang),
    options=list(by_id),
    format_func=lambda alert_id: f"#{alert_id} · {by_id[alert_id].rule_name} · {by_id[alert_id].device_id}",
    key="alerts_chosen",
)
alert = by_id[chosen]

st.subheader(f"#{alert.id} · {alert.rule_name}")
if alert.flapping:
    st.warning(t("alerts.flapping_note", lang))
st.write(alert.message)
history = [(t("alerts.opened", lang), alert.opened_at, None, None)]
if alert.acknowledged_at is not None:
    history.append(
        (t("alerts.acknowledged", lang), alert.acknowledged_at, alert.acknowledged_by, alert.acknowledge_note)
    )
if alert.resolved_at is not None:
    history.append((t("alerts.resolved", lang), alert.resolved_at, alert.resolved_by, alert.resolve_note))
for step, moment, by, note in history:
    who = by or t("alerts.by_hub", lang)
    line = f"- **{step}** · {when(alert, moment)} · {who}"
    st.markdown(line + (f" — {note}" if note else ""))

if alert.status == "resolved":
    st.stop()
if not member.can("handle_alerts", alert.agency_id):
    st.caption(t("alerts.read_only", lang, role=t("role.operator", lang)))
    st.stop()

with st.form("alerts_action", clear_on_submit=True):
    note = st.text_area(t("common.note", lang), key="alerts_note", max_chars=1000)
    buttons = st.columns(2)
    acknowledge = buttons[0].form_submit_button(
        t("alerts.acknowledge", lang), disabled=alert.status != "open", key="alerts_acknowledge"
    )
    resolve = buttons[1].form_submit_button(t("alerts.resolve", lang), type="primary", key="alerts_resolve")

if acknowledge or resolve:
    step = desk.acknowledge_alert if acknowledge else desk.resolve_alert
    assert alert.id is not None
    try:
        step(engine=db, staff=member, alert_id=alert.id, note=note)
    except (ops.AlertNotFound, ops.AlertStateError, desk.NotFound, AccessDenied) as error:
        st.error(t("alerts.failed", lang, detail=str(error)))
    else:
        st.session_state["alerts_done"] = t("alerts.acknowledged_ok" if acknowledge else "alerts.resolved_ok", lang)
        st.rerun()
