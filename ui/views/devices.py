"""Devices: the list with filters and search, and a device's readings charted against its rule thresholds,
with its rejected readings and rule instances.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import altair as alt
import pandas as pd
import streamlit as st

from rules import staff as desk
from rules.store import ops, queries
from rules.store.models import utc_now
from ui import context, format
from ui.device_form import device_form
from ui.text import t

PERIODS = {"6h": timedelta(hours=6), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
# NOTE: a chart shows at most this many readings, the oldest of its period. A device that
# reports every minute fills 30 days with about twice as many, and they are not thinned out.
MAX_POINTS = 20_000
SYMBOLS = {"above": ">", "below": "<", "at_least": "≥", "at_most": "≤"}

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
agency_ids = desk.visible_agencies(member, config)
agencies = context.agencies()
now = utc_now()

st.title(t("nav.devices", lang))
if "devices_done" in st.session_state:
    st.success(st.session_state.pop("devices_done"))
if not agency_ids:
    st.info(t("common.no_agency", lang))
    st.stop()

statuses = desk.device_statuses(config=config, engine=db, agency_ids=agency_ids, now=now)
kinds = sorted({status.device.kind for status in statuses})
tags = sorted({tag for status in statuses for tag in status.device.tags})

filters = st.columns([2, 2, 2, 2, 3])
chosen_agencies = filters[0].multiselect(
    t("common.agency", lang),
    sorted({status.device.agency for status in statuses}),
    format_func=lambda key: agencies[key].name,
    placeholder=t("common.choose", lang),
    key="devices_agency",
)
chosen_kinds = filters[1].multiselect(
    t("devices.kind", lang),
    kinds,
    format_func=lambda key: config.kinds[key].name or key,
    placeholder=t("common.choose", lang),
    key="devices_kind",
)
chosen_states = filters[2].multiselect(
    t("common.state", lang),
    desk.DEVICE_STATES,
    format_func=lambda key: t(f"state.{key}", lang),
    placeholder=t("common.choose", lang),
    key="devices_state",
)
chosen_tags = filters[3].multiselect(
    t("devices.tag", lang), tags, placeholder=t("common.choose", lang), key="devices_tag"
)
search = filters[4].text_input(t("devices.search", lang), key="devices_search").strip().lower()

shown = [
    status
    for status in statuses
    if (not chosen_agencies or status.device.agency in chosen_agencies)
    and (not chosen_kinds or status.device.kind in chosen_kinds)
    and (not chosen_states or status.state in chosen_states)
    and (not chosen_tags or set(chosen_tags) & set(status.device.tags))
    and (not search or search in status.device.name.lower() or search in status.device.id)
]
rows = [
    {
        "id": status.device.id,
        t("common.device", lang): status.device.name,
        t("common.agency", lang): agencies[status.device.agency].name,
        t("devices.kind", lang): config.kinds[status.device.kind].name or status.device.kind,
        t("common.state", lang): t(f"state.{status.state}", lang),
        t("common.last_seen", lang): format.ago(status.last_seen, now, lang),
        t("devices.tag", lang): ", ".join(status.device.tags),
    }
    for status in shown
]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(t("devices.count", lang, shown=len(shown), total=len(statuses)))

editable = member.agencies("edit_config", agency_ids)
if editable:
    with st.expander(t("devices.register", lang)):
        device_form(config=config, member=member, agency_ids=editable, device=None, lang=lang, key="devices_new")

if not shown:
    st.stop()

by_id = {status.device.id: status for status in shown}
device_id = st.selectbox(
    t("devices.choose", lang),
    list(by_id),
    format_func=lambda key: f"{by_id[key].device.name} ({key})",
    key="devices_chosen",
)
status = by_id[device_id]
device = status.device
zone = context.agency_zone(device.agency)
kind = config.kinds[device.kind]

st.header(device.name)
facts = [
    (t("common.state", lang), t(f"state.{status.state}", lang)),
    (t("common.last_seen", lang), format.ago(status.last_seen, now, lang)),
    (t("devices.kind", lang), kind.name or device.kind),
    (t("common.agency", lang), agencies[device.agency].name),
]
st.markdown(" · ".join(f"**{label}:** {value}" for label, value in facts))
if device.location is not None:
    address = f" · {device.location.address}" if device.location.address else ""
    st.caption(f"{device.location.lat:.6f}, {device.location.lon:.6f}{address}")

period = st.segmented_control(
    t("devices.period", lang),
    options=list(PERIODS),
    default="24h",
    format_func=lambda key: t(f"devices.period.{key}", lang),
    key="devices_period",
)
# The window ends at the newest reading, so a device that went quiet still shows its last hours.
end = (status.last_seen or now) + timedelta(seconds=1)
start = end - PERIODS[period or "24h"]
readings = ops.list_readings(
    engine=db, device_ids=[device.id], metrics=list(kind.metrics), start=start, end=end, limit=MAX_POINTS
)
local = ZoneInfo(zone)
axis_time = t("devices.time", lang, zone=format.zone_name(zone))
span = readings[-1].ts - readings[0].ts if readings else timedelta(0)
time_axis = alt.X(f"{axis_time}:T", axis=alt.Axis(format=format.chart_time(lang, span)))

for metric_name, metric in kind.metrics.items():
    points = [reading for reading in readings if reading.metric == metric_name]
    unit = f" ({metric.unit})" if metric.unit else ""
    st.subheader(f"{metric_name}{unit}")
    if not points:
        st.caption(t("devices.no_readings", lang))
        continue
    values = pd.DataFrame(
        {
            axis_time: [reading.ts.astimezone(local).replace(tzinfo=None) for reading in points],
            metric_name: [
                reading.value_num if reading.value_num is not None else reading.value_text for reading in points
            ],
        }
    )
    if metric.is_state:
        chart = alt.Chart(values).mark_line(interpolate="step-after", point=True)
        chart = chart.encode(x=time_axis, y=alt.Y(f"{metric_name}:N", title=metric_name))
        st.altair_chart(chart, width="stretch")
        continue
    chart = (
        alt.Chart(values)
        .mark_line(point=len(points) < 200)
        .encode(x=time_axis, y=alt.Y(f"{metric_name}:Q", title=f"{metric_name}{unit}", scale=alt.Scale(zero=False)))
    )
    lines = desk.threshold_lines(config, device, metric_name)
    if lines:
        frame = pd.DataFrame(
            {
                "value": [line.value for line in lines],
                t("devices.threshold", lang): [
                    f"{line.rule_name}: {'' if not line.clears else t('devices.clears', lang) + ' '}"
                    f"{SYMBOLS[line.test]} {format.number(line.value, lang)}"
                    for line in lines
                ],
                "dash": [line.clears for line in lines],
            }
        )
        threshold_chart = (
            alt.Chart(frame)
            .mark_rule(strokeWidth=2)
            .encode(
                y="value:Q",
                color=alt.Color(
                    f"{t('devices.threshold', lang)}:N", legend=alt.Legend(orient="bottom", columns=1, labelLimit=0)
                ),
                strokeDash=alt.condition("datum.dash", alt.value([6, 4]), alt.value([1, 0])),
            )
        )
        chart = chart + threshold_chart
    st.altair_chart(chart, width="stretch")

st.subheader(t("devices.instances", lang))
instances = queries.list_instances(engine=db, device_id=device.id)
rule_names = {rule.id: rule.name for rule in config.rules}
if instances:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    t("common.rule", lang): rule_names.get(instance.rule_id, instance.rule_id),
                    t("common.state", lang): t(f"instance.{instance.state}", lang),
                    t("devices.since", lang): format.when(instance.since, zone, lang),
                    t("devices.last_fired", lang): format.when(instance.last_fired_at, zone, lang),
                    t("alerts.flapping", lang): bool(instance.flapping),
                }
                for instance in instances
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.caption(t("devices.no_instances", lang))

st.subheader(t("devices.rejected", lang))
rejected = queries.list_rejected(engine=db, device_id=device.id)
if rejected:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    t("devices.received", lang): format.when(row.received_at, zone, lang),
                    t("devices.reason", lang): t(f"reason.{row.reason}", lang, default=row.reason),
                    t("common.value", lang): row.raw_value,
                    t("devices.raw_time", lang): row.raw_ts,
                    t("audit.detail", lang): row.detail,
                }
                for row in rejected
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.caption(t("devices.no_rejected", lang))

if member.can("edit_config", device.agency):
    with st.expander(t("devices.edit", lang)):
        device_form(config=config, member=member, agency_ids=editable, device=device, lang=lang, key="devices_edit")
