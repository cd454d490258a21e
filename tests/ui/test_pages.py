"""Each monitoring page driven through AppTest on a store filled by the real pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from rules import users
from rules.store.models import Alert, AuditEntry, DispatchJob
from tests.hub_process import start_hub
from tests.ui.conftest import PASSWORD, Site

OpenPage = Callable[..., AppTest]


def _button(app: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(button for button in app.button if button.label == label)


def test_overview_counts_and_colours(open_page: OpenPage) -> None:
    app = open_page("admin", "views/overview.py")

    assert [(metric.label, metric.value) for metric in app.metric] == [
        ("Kritis", "0"),
        ("Tinggi", "2"),
        ("Sedang", "1"),
        ("Rendah", "1"),
    ]
    legend = app.markdown[0].value
    assert '<span style="color:#d62728">●</span> Menyala (2)' in legend
    states = app.dataframe[1].value
    firing = states[states["Keadaan"] == "Menyala"]["Perangkat"].tolist()
    assert sorted(firing) == ["Pintu Air Manggarai", "TPS Pasar Kota"]


def test_overview_limited_to_reader_agencies(open_page: OpenPage) -> None:
    app = open_page("budi", "views/overview.py", lang="en")

    assert [(metric.label, metric.value) for metric in app.metric] == [
        ("Critical", "0"),
        ("High", "0"),
        ("Medium", "0"),
        ("Low", "1"),
    ]
    assert set(app.dataframe[0].value["Agency"]) == {"Dinas Lingkungan Hidup"}


def test_operator_acknowledges_and_resolves(open_page: OpenPage, site: Site) -> None:
    app = open_page("rina", "views/alerts.py")
    with Session(site.db) as session:
        manggarai = session.exec(select(Alert).where(Alert.rule_id == "manggarai-siaga-2")).one()
    app.selectbox(key="alerts_chosen").select(manggarai.id).run()

    app.text_area(key="alerts_note").input("Pompa sudah disiagakan")
    _button(app, "Terima").click().run()

    assert [message.value for message in app.success] == ["Peringatan diterima."]
    with Session(site.db) as session:
        stored = session.get(Alert, manggarai.id)
        assert stored is not None
        assert (stored.status, stored.acknowledged_by, stored.acknowledge_note) == (
            "acknowledged",
            "rina",
            "Pompa sudah disiagakan",
        )

    app.selectbox(key="alerts_chosen").select(manggarai.id).run()
    app.text_area(key="alerts_note").input("Air sudah surut")
    _button(app, "Selesaikan").click().run()

    with Session(site.db) as session:
        stored = session.get(Alert, manggarai.id)
        assert stored is not None
        assert (stored.status, stored.resolved_by, stored.resolve_note) == ("resolved", "rina", "Air sudah surut")
        actions = session.exec(select(AuditEntry.action).where(AuditEntry.actor == "rina")).all()
    assert sorted(actions) == ["alert_acknowledged", "alert_resolved"]


def test_viewer_alerts_are_read_only(open_page: OpenPage) -> None:
    app = open_page("budi", "views/alerts.py", lang="en")

    assert set(app.dataframe[0].value["Device"]) == {"tps-pasar-kota"}
    assert "You can only view this alert" in app.caption[0].value
    assert not [button for button in app.button if button.label in ("Acknowledge", "Resolve")]


def test_dispatch_job_moves_to_in_progress(open_page: OpenPage, site: Site) -> None:
    app = open_page("rina", "views/dispatch.py")
    app.selectbox(key="dispatch_team").select("tim-pompa").run()
    with Session(site.db) as session:
        job = session.exec(select(DispatchJob).where(DispatchJob.team_id == "tim-pompa")).one()

    assert f"**#{job.id} · Siagakan pompa di Pintu Air Manggarai**" in app.markdown[0].value
    app.selectbox(key=f"dispatch_status_{job.id}").select("in_progress")
    app.text_input(key=f"dispatch_who_{job.id}").input("Joko")
    _button(app, "Simpan").click().run()

    assert [message.value for message in app.success] == [f"Tugas #{job.id} disimpan."]
    with Session(site.db) as session:
        stored = session.get(DispatchJob, job.id)
        assert stored is not None
        assert (stored.status, stored.assignee) == ("in_progress", "Joko")
    assert app.tabs[2].label == "Dikerjakan (1)"


def test_dispatch_viewer_cannot_update(open_page: OpenPage) -> None:
    app = open_page("budi", "views/dispatch.py")

    assert app.tabs[0].label == "Baru (1)"
    assert not app.expander


def test_actions_page_hub_down(open_page: OpenPage, site: Site) -> None:
    app = open_page("admin", "views/actions.py", lang="en")

    counts = {metric.label: metric.value for metric in app.metric}
    assert counts["Succeeded"] == "6"
    assert counts["Dead"] == "0"
    assert app.warning[0].value.startswith(f"The hub does not answer on port {site.port}")


def test_audit_lists_alert_actions(open_page: OpenPage, site: Site) -> None:
    from rules.store import ops

    with Session(site.db) as session:
        alert_id = session.exec(select(Alert.id).where(Alert.rule_id == "tps-penuh")).one()
    ops.acknowledge_alert(engine=site.db, alert_id=alert_id, by="rina", note="Truk berangkat")

    app = open_page("admin", "views/audit.py")

    table = app.dataframe[0].value
    row = table[table["Oleh"] == "rina"].iloc[0]
    assert row["Kejadian"] == "Peringatan diterima"
    assert row["Sasaran"] == f"alert:{alert_id}"
    assert "Truk berangkat" in row["Rincian"]


def test_admin_adds_account(open_page: OpenPage, site: Site) -> None:
    app = open_page("admin", "views/users.py")

    app.text_input(key="users_new_username").input("dewi")
    app.text_input(key="users_new_name").input("Dewi Lestari")
    app.selectbox(key="users_new_agency").select("dlh")
    app.selectbox(key="users_new_role").select("operator")
    app.text_input(key="users_new_password").input("sandi-dewi-2026")
    app.text_input(key="users_new_repeat").input("sandi-dewi-2026")
    _button(app, "Buat akun").click().run()

    assert [message.value for message in app.success] == ["Akun dewi dibuat."]
    member = users.authenticate(engine=site.db, username="dewi", password="sandi-dewi-2026")
    assert member is not None
    assert member.roles == {"dlh": "operator"}


def test_short_password_is_rejected(open_page: OpenPage, site: Site) -> None:
    app = open_page("admin", "views/users.py", lang="en")

    app.text_input(key="users_new_username").input("dewi")
    app.text_input(key="users_new_password").input("pendek")
    app.text_input(key="users_new_repeat").input("pendek")
    _button(app, "Create account").click().run()

    assert [message.value for message in app.error] == ["the password is too short: use at least 10 characters"]
    assert users.authenticate(engine=site.db, username="dewi", password="pendek") is None


def test_users_page_hidden_from_editor(open_page: OpenPage) -> None:
    app = open_page("sari")

    with pytest.raises(ValueError, match="Could not find a navigation page"):
        app.switch_page("views/users.py")


def test_agency_admin_lists_own_accounts(open_page: OpenPage, site: Site) -> None:
    users.create_user(
        engine=site.db, username="ketua-dlh", full_name="Ketua DLH", password=PASSWORD, roles={"dlh": "admin"}, by="t"
    )

    app = open_page("ketua-dlh", "views/users.py")

    listed = set(app.dataframe[0].value["Nama pengguna"])
    assert listed == {"budi", "rina", "ketua-dlh"}
    assert app.selectbox(key="users_new_agency").options == ["Dinas Lingkungan Hidup"]


def test_actions_page_hub_health(open_page: OpenPage, site: Site, tmp_path: Path) -> None:
    hub = start_hub(
        config_path=site.config_path,
        db_url=site.url,
        port=site.port,
        log_path=tmp_path / "hub.log",
        env={"SIMPUL_GATEWAY_TOKEN": "token-uji"},
    )
    try:
        app = open_page("admin", "views/actions.py", lang="en")
    finally:
        hub.terminate()
        hub.wait(timeout=20)

    assert not app.warning
    parts = app.dataframe[-1].value
    outbox = parts[parts["Part"] == "Outbox worker"].iloc[0]
    assert outbox["Healthy"]
    assert "running: yes" in outbox["Detail"]
    assert "last poll: " in outbox["Detail"]
    assert "Action executor Outgoing webhook" in set(parts["Part"])


def test_watched_devices_are_visible(open_page: OpenPage) -> None:
    app = open_page("bpbd-operator", "views/devices.py", lang="en")

    shown = set(app.dataframe[0].value["id"])
    assert {"katulampa", "depok", "manggarai", "hujan-katulampa"} <= shown
    assert "tps-pasar-kota" not in shown
    assert not [expander for expander in app.expander if expander.label == "Edit this device"]
