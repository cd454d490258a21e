"""The Rules, Try on history and Devices pages: edits are validated, written with comments kept,
committed with the staff member as author, and tried on stored readings first."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rules.loader import load_config
from tests.ui.conftest import Site

OpenPage = Callable[..., AppTest]


def _button(app: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(button for button in app.button if button.label == label)


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repository(site: Site) -> Path:
    """Put the site's config.yaml under git, as agencies keep it."""
    folder = site.config_path.parent
    _git(folder, "init", "-q")
    _git(folder, "config", "user.name", "Simpul Test")
    _git(folder, "config", "user.email", "test@simpul.local")
    _git(folder, "add", "config.yaml")
    _git(folder, "commit", "-qm", "Start")
    return folder


def _edit_manggarai_threshold(app: AppTest, value: float) -> None:
    app.selectbox(key="rules_chosen").select("manggarai-siaga-2").run()
    app.number_input(key="rules_value").set_value(value).run()


def test_rule_save_keeps_comments(open_page: OpenPage, site: Site, repository: Path) -> None:
    before = site.config_path.read_text()
    app = open_page("sari", "views/rules.py")

    _edit_manggarai_threshold(app, 800)

    assert "at_least: 800" in app.code[0].value
    assert "- `Change rule manggarai-siaga-2: when.at_least 850 -> 800`" in [item.value for item in app.markdown]
    _button(app, "Simpan").click().run()

    after = site.config_path.read_text()
    changed = [(old, new) for old, new in zip(before.splitlines(), after.splitlines(), strict=True) if old != new]
    assert changed == [
        (
            "    when: {device: manggarai, metric: level, at_least: 850, for: 15m}",
            "    when: {device: manggarai, metric: level, at_least: 800, for: 15m}",
        )
    ]
    author = _git(repository, "log", "-1", "--format=%an <%ae>|%s")
    assert author == "Sari Wulandari <sari@simpul.local>|Change rule manggarai-siaga-2: when.at_least 850 -> 800\n"
    assert app.success[0].value.startswith("Aturan disimpan ke config.yaml (commit ")


def test_invalid_duration_blocks_save(open_page: OpenPage, site: Site) -> None:
    before = site.config_path.read_text()
    app = open_page("sari", "views/rules.py", lang="en")
    app.selectbox(key="rules_chosen").select("manggarai-siaga-2").run()

    app.text_input(key="rules_for").input("15 menit").run()

    assert app.error[0].value.startswith("invalid duration '15 menit'")
    assert app.error[1].value == "1 problems must be fixed before saving."
    assert _button(app, "Save").disabled
    assert site.config_path.read_text() == before


def test_changed_file_is_not_overwritten(open_page: OpenPage, site: Site) -> None:
    app = open_page("sari", "views/rules.py")
    _edit_manggarai_threshold(app, 800)
    theirs = site.config_path.read_text().replace("name: Manggarai Siaga 2", "name: Manggarai Siaga II")
    site.config_path.write_text(theirs)

    _button(app, "Simpan").click().run()

    assert app.error[0].value.startswith("Tidak disimpan: config.yaml diubah orang lain")
    assert site.config_path.read_text() == theirs
    assert "Manggarai Siaga II" in app.code[-2].value


def test_other_agency_editor_reads_only(open_page: OpenPage, site: Site) -> None:
    from rules import users
    from tests.ui.conftest import PASSWORD

    users.create_user(
        engine=site.db,
        username="eko",
        full_name="Eko",
        password=PASSWORD,
        roles={"dlh": "editor", "dinas-sda": "viewer"},
        by="t",
    )
    app = open_page("eko", "views/rules.py")

    app.selectbox(key="rules_chosen").select("manggarai-siaga-2").run()

    assert app.caption[0].value.startswith("Anda dapat melihat aturan ini")
    assert not [button for button in app.button if button.label == "Simpan"]


def test_new_rule_is_added(open_page: OpenPage, site: Site) -> None:
    app = open_page("sari", "views/rules.py")
    app.selectbox(key="rules_chosen").select("__new__").run()
    app.text_input(key="rules_id").input("depok-siaga-1").run()
    app.text_input(key="rules_name").input("Depok Siaga 1").run()
    app.selectbox(key="rules_select_value").select("depok").run()
    app.selectbox(key="rules_metric").select("level").run()
    app.selectbox(key="rules_op").select("at_least").run()
    app.number_input(key="rules_value").set_value(350).run()

    _button(app, "Simpan").click().run()

    assert not app.exception
    rule = next(rule for rule in load_config(site.config_path).config.rules if rule.id == "depok-siaga-1")
    assert (rule.name, rule.when.device, rule.when.at_least) == ("Depok Siaga 1", "depok", 350)


def test_backtest_compares_then_saves(open_page: OpenPage, site: Site) -> None:
    app = open_page("sari", "views/rules.py")
    _edit_manggarai_threshold(app, 875)
    _button(app, "Uji pada riwayat dulu").click().run()
    # AppTest does not follow st.switch_page on later runs; a browser does.
    app.switch_page("views/backtest.py").run()
    app.date_input(key="backtest_period").set_value((dt.date(2025, 1, 1), dt.date(2025, 1, 10))).run()

    _button(app, "Jalankan uji").click().run()

    assert [metric.value for metric in app.metric] == ["1", "1"]
    before, after = (table.value for table in app.dataframe)
    assert before["Dibuka"].tolist() == ["6 Jan 2025 10.15 WIB"]
    assert after["Dibuka"].tolist() == ["6 Jan 2025 10.25 WIB"]
    _button(app, "Simpan perubahan ini").click().run()
    rule = next(rule for rule in load_config(site.config_path).config.rules if rule.id == "manggarai-siaga-2")
    assert rule.when.at_least == 875


def test_backtest_quick_threshold_change(open_page: OpenPage) -> None:
    app = open_page("budi", "views/backtest.py", lang="en")
    app.selectbox(key="backtest_rule").select("tps-penuh").run()
    app.number_input(key="backtest_threshold_tps-penuh").set_value(96).run()
    app.date_input(key="backtest_period").set_value((dt.date(2025, 1, 1), dt.date(2025, 1, 10))).run()

    _button(app, "Run the test").click().run()

    assert [metric.value for metric in app.metric] == ["1", "0"]
    assert not [button for button in app.button if button.label == "Save this change"]


def test_device_chart_shows_thresholds(open_page: OpenPage) -> None:
    app = open_page("sari", "views/devices.py")

    app.selectbox(key="devices_chosen").select("manggarai").run()

    assert "**Keadaan:** Menyala" in [item.value.split(" · ")[0] for item in app.markdown]
    chart = app.get("vega_lite_chart")[0].proto.SerializeToString().decode("utf-8", "replace")
    assert "Manggarai Siaga 2: ≥ 850" in chart
    assert "Manggarai Siaga 2: pulih bila < 800" in chart
    instances = app.dataframe[1].value
    assert sorted(instances["Aturan"]) == ["Manggarai Siaga 2", "Siaga 2 tinggi muka air", "Siaga 3 tinggi muka air"]


def test_device_list_filters(open_page: OpenPage) -> None:
    app = open_page("admin", "views/devices.py", lang="en")

    app.multiselect(key="devices_state").select("firing").run()
    assert sorted(app.dataframe[0].value["id"]) == ["manggarai", "tps-pasar-kota"]
    app.text_input(key="devices_search").input("tps").run()
    assert app.dataframe[0].value["id"].tolist() == ["tps-pasar-kota"]


def test_device_registration_saves_config(open_page: OpenPage, site: Site) -> None:
    app = open_page("sari", "views/devices.py")
    app.text_input(key="devices_new_id").input("pa-karet")
    app.text_input(key="devices_new_name").input("Pintu Air Karet")
    app.selectbox(key="devices_new_kind").select("water_level")
    app.number_input(key="devices_new_lat").set_value(-6.2025)
    app.number_input(key="devices_new_lon").set_value(106.8143)
    app.text_area(key="devices_new_attributes").input("siaga_3 = 450\nsiaga_2 = 550\nsiaga_1 = 650")

    next(button for button in app.button if button.label == "Simpan").click().run()

    assert not app.exception
    device = next(device for device in load_config(site.config_path).config.devices if device.id == "pa-karet")
    assert device.attributes == {"siaga_3": 450, "siaga_2": 550, "siaga_1": 650}
    assert (device.agency, device.location.lat if device.location else None) == ("dinas-sda", -6.2025)


def test_audit_lists_config_commits(open_page: OpenPage, site: Site, repository: Path) -> None:
    app = open_page("sari", "views/rules.py")
    _edit_manggarai_threshold(app, 800)
    _button(app, "Simpan").click().run()

    app.switch_page("views/audit.py").run()

    titles = [expander.label for expander in app.expander]
    assert any("Sari Wulandari · Change rule manggarai-siaga-2: when.at_least 850 -> 800" in title for title in titles)
    assert any("Simpul Test · Start" in title for title in titles)
    assert "+    when: {device: manggarai, metric: level, at_least: 800, for: 15m}" in app.code[0].value


def test_device_chart_follows_saved_threshold(open_page: OpenPage) -> None:
    app = open_page("sari", "views/rules.py")
    _edit_manggarai_threshold(app, 820)
    _button(app, "Simpan").click().run()

    app.switch_page("views/devices.py").run()
    app.selectbox(key="devices_chosen").select("manggarai").run()

    chart = app.get("vega_lite_chart")[0].proto.SerializeToString().decode("utf-8", "replace")
    assert "Manggarai Siaga 2: ≥ 820" in chart
    assert "Manggarai Siaga 2: ≥ 850" not in chart
