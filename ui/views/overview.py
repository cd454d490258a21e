"""Overview: the device map coloured by state, unresolved alerts by severity and agency, latest firings."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from rules import staff as desk
from rules.store import queries
from rules.store.models import utc_now
from ui import context, format
from ui.text import STATE_COLOURS, t

REFRESH = timedelta(seconds=15)
SEVERITIES = ("critical", "high", "medium", "low")

lang = context.lang()
member = context.require_staff()
config = context.config()
agency_ids = desk.visible_agencies(member, config)
agencies = context.agencies()

st.title(t("nav.overview", lang))
if not agency_ids:
    st.info(t("common.no_agency", lang))
    st.stop()


@st.fragment(run_every=REFRESH)
def live() -> None:
    db = context.store()
    now = utc_now()
    statuses = desk.device_statuses(config=config, engine=db, agency_ids=agency_ids, now=now)
    counts = queries.count_unresolved_alerts(engine=db, agency_ids=agency_ids)

    columns = st.columns(len(SEVERITIES))
    for column, severity in zip(columns, SEVERITIES, strict=True):
        total = sum(count for (_, level), count in counts.items() if level == severity)
        column.metric(t(f"severity.{severity}", lang), format.number(total, lang, 0))

    st.subheader(t("overview.map", lang))
    # The most urgent states are drawn last, so a firing gauge is not hidden under a pump or a
    # rain gauge at the same place.
    located = sorted(
        (status for status in statuses if status.device.location is not None),
        key=lambda status: -desk.DEVICE_STATES.index(status.state),
    )
    legend = " &nbsp; ".join(
        f'<span style="color:{STATE_COLOURS[state]}">●</span> {t(f"state.{state}", lang)} '
        f"({sum(1 for status in statuses if status.state == state)})"
        for state in desk.DEVICE_STATES
    )
    st.markdown(legend, unsafe_allow_html=True)
    if located:
        points = pd.DataFrame(
            {
                "lat": [status.device.location.lat for status in located if status.device.location],
                "lon": [status.device.location.lon for status in located if status.device.location],
                "colour": [STATE_COLOURS[status.state] for status in located],
            }
        )
        st.map(points, latitude="lat", longitude="lon", color="colour", size=120)
    unlocated = len(statuses) - len(located)
    if unlocated:
        st.caption(t("overview.without_location", lang, count=unlocated))

    left, right = st.columns(2)
    with left:
        st.subheader(t("overview.by_agency", lang))
        rows = [
            {
                t("common.agency", lang): agencies[agency_id].name,
                **{t(f"severity.{level}", lang): counts.get((agency_id, level), 0) for level in SEVERITIES},
            }
            for agency_id in agency_ids
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    with right:
        st.subheader(t("overview.latest_firings", lang))
        latest = queries.list_alerts(engine=db, agency_ids=agency_ids, limit=8)
        if not latest:
            st.caption(t("overview.no_firings", lang))
        for alert in latest:
            zone = context.agency_zone(alert.agency_id)
            st.markdown(
                f"**{alert.rule_name}** · {alert.device_id} · {t(f'severity.{alert.severity}', lang)} · "
                f"{format.when(alert.opened_at, zone, lang)} · {t(f'alert.status.{alert.status}', lang)}"
            )

    st.subheader(t("overview.devices", lang))
    table = [
        {
            t("common.device", lang): status.device.name,
            t("common.agency", lang): agencies[status.device.agency].name,
            t("common.state", lang): t(f"state.{status.state}", lang),
            t("common.last_seen", lang): format.ago(status.last_seen, now, lang),
        }
        for status in statuses
    ]
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
    st.caption(t("overview.refreshed", lang, time=format.when(now, config.simpul.timezone, lang)))


live()
