"""Dispatch: the jobs board of a team, one tab per status, each job with its place and an update form.

Jobs are stacked cards rather than a wide table, so the board works on a phone.
"""

from __future__ import annotations

import streamlit as st

from rules import staff as desk
from rules.store import ops, queries
from rules.store.models import DispatchJob, utc_now
from rules.users import AccessDenied
from ui import context, format
from ui.text import t

lang = context.lang()
member = context.require_staff()
config = context.config()
db = context.store()
agency_ids = desk.visible_agencies(member, config)
devices = {device.id: device for device in config.devices}

st.title(t("nav.dispatch", lang))
if "dispatch_done" in st.session_state:
    st.success(st.session_state.pop("dispatch_done"))
teams = {team.id: (agency, team) for agency in config.agencies if agency.id in agency_ids for team in agency.teams}
if not teams:
    st.info(t("dispatch.no_teams", lang))
    st.stop()

# The board opens on the first team with open jobs.
open_jobs = queries.list_jobs(engine=db, agency_ids=agency_ids, statuses=["new", "assigned", "in_progress"])
busy = [team_id for team_id in teams if any(job.team_id == team_id for job in open_jobs)]
options = busy + [team_id for team_id in teams if team_id not in busy]
team_id = st.selectbox(
    t("dispatch.team", lang),
    options=options,
    format_func=lambda key: f"{teams[key][1].name} · {teams[key][0].name}",
    key="dispatch_team",
)
agency, team = teams[team_id]
jobs = queries.list_jobs(engine=db, agency_ids=[agency.id], team_id=team_id)
can_update = member.can("update_jobs", agency.id)
now = utc_now()


def card(job: DispatchJob) -> None:
    assert job.id is not None
    with st.container(border=True):
        overdue = job.status not in ("done", "cancelled") and job.due_at < now
        st.markdown(f"**#{job.id} · {job.title}**" + (f" :red[{t('dispatch.overdue', lang)}]" if overdue else ""))
        device = devices.get(job.device_id or "")
        st.caption(
            t(
                "dispatch.job_line",
                lang,
                device=device.name if device else (job.device_id or "–"),
                due=format.when(job.due_at, agency.timezone, lang),
                assignee=job.assignee or "–",
            )
        )
        if job.lat is not None and job.lon is not None:
            link = f"https://www.openstreetmap.org/?mlat={job.lat}&mlon={job.lon}#map=17/{job.lat}/{job.lon}"
            st.markdown(f"[{t('dispatch.open_map', lang)}]({link}) · {job.lat:.5f}, {job.lon:.5f}")
        if not can_update or not ops.JOB_NEXT[job.status]:
            return
        with st.expander(t("dispatch.update", lang)), st.form(f"dispatch_form_{job.id}"):
            choices = [job.status, *ops.JOB_NEXT[job.status]]
            status = st.selectbox(
                t("common.status", lang),
                options=choices,
                format_func=lambda key: t(f"job.status.{key}", lang),
                key=f"dispatch_status_{job.id}",
            )
            assignee = st.text_input(
                t("dispatch.assignee", lang), value=job.assignee or "", key=f"dispatch_who_{job.id}"
            )
            note = st.text_input(t("common.note", lang), key=f"dispatch_note_{job.id}")
            if st.form_submit_button(t("common.save", lang), type="primary"):
                try:
                    desk.update_job(
                        engine=db, staff=member, job=job, status=status, assignee=assignee, note=note or None
                    )
                except (ops.JobStateError, LookupError, AccessDenied) as error:
                    st.error(t("dispatch.failed", lang, detail=str(error)))
                else:
                    st.session_state["dispatch_done"] = t("dispatch.saved", lang, id=job.id)
                    st.rerun()


tabs = st.tabs(
    [
        f"{t(f'job.status.{status}', lang)} ({sum(1 for job in jobs if job.status == status)})"
        for status in ops.JOB_STATUSES
    ]
)
for tab, status in zip(tabs, ops.JOB_STATUSES, strict=True):
    with tab:
        listed = [job for job in jobs if job.status == status]
        if not listed:
            st.caption(t("dispatch.empty", lang))
        for job in listed:
            card(job)
