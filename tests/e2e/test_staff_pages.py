"""The staff pages in headless Chromium against a running hub: every page in Indonesian with a
screenshot, the language switch, and who may acknowledge an alert."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import StaffSite, choose, log_in, open_page, page_text, save_screenshot, settle

expect = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed").expect

# (screenshot name, Indonesian title in the navigation and on the page, text the page must show)
PAGES = [
    ("overview", "Ringkasan", ["Kritis", "Peta perangkat", "Siaga 2 tinggi muka air · katulampa", "Bendung Katulampa"]),
    ("devices", "Perangkat", ["Cari nama atau id", "Aturan pada perangkat ini"]),
    ("rules", "Aturan", ["Manggarai Siaga 2"]),
    ("backtest", "Uji pada riwayat", ["Jalankan uji"]),
    ("alerts", "Peringatan", ["Siaga 2 tinggi muka air", "Terima", "Selesaikan"]),
    ("dispatch", "Penugasan", ["Pantau bantaran sungai dekat Bendung Katulampa", "Buka peta"]),
    ("actions", "Aksi & integrasi", ["Kesehatan integrasi", "Berhasil"]),
    ("audit", "Audit", ["Akun dibuat", "user:sari"]),
    ("users", "Pengguna", ["Sari Wulandari", "Budi Santoso"]),
]

PHONE = {"width": 390, "height": 844}

# Streamlit's own placeholders of multiselects and selectboxes, which are English whatever the page's language.
STREAMLIT_PLACEHOLDERS = {"Choose options", "Choose an option"}


def _english_placeholders(page: Any) -> list[str]:
    """Labels of the multiselects in the main area that show Streamlit's English placeholder."""
    found: list[list[str]] = (
        page.get_by_test_id("stMain")
        .locator("[data-testid=stMultiSelect] input")
        .evaluate_all("inputs => inputs.map(input => [input.getAttribute('aria-label'), input.placeholder])")
    )
    return [label for label, placeholder in found if placeholder in STREAMLIT_PLACEHOLDERS]


def _open_alert(page: Any, alert: dict[str, Any]) -> None:
    """Pick ``alert`` in the alerts page's selector and wait for its detail."""
    label = f"#{alert['id']} · {alert['rule_name']} · {alert['device_id']}"
    choose(page, page.get_by_label("Pilih peringatan"), label)
    expect(page.get_by_role("heading", name=f"#{alert['id']} · {alert['rule_name']}", exact=True)).to_be_visible()
    settle(page)


def test_every_page_in_indonesian(page: Any, staff_site: StaffSite) -> None:
    log_in(page, staff_site, "admin")
    nav_titles = page.get_by_test_id("stSidebarNav").get_by_role("link").get_by_role("paragraph").all_inner_texts()
    assert nav_titles == [title for _, title, _ in PAGES]

    for name, title, expected in PAGES:
        open_page(page, title)
        text = page_text(page)
        for snippet in expected:
            assert snippet in text, f"page {title!r} does not show {snippet!r}"
        assert _english_placeholders(page) == [], f"page {title!r} shows Streamlit's English placeholder"
        if name == "overview":
            expect(page.get_by_test_id("stDeckGlJsonChart")).to_be_visible()
        save_screenshot(page, f"id-{name}")


def test_language_switch_to_english(page: Any, staff_site: StaffSite) -> None:
    log_in(page, staff_site, "admin")

    page.get_by_test_id("stSidebar").get_by_text("English", exact=True).click()

    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    settle(page)
    text = page_text(page)
    for snippet in ("Critical", "Device map", "Latest firings", "Device states"):
        assert snippet in text
    for snippet in ("Kritis", "Peta perangkat", "Peringatan terbaru"):
        assert snippet not in text
    expect(page.get_by_test_id("stSidebarNav").get_by_role("link", name="Alerts", exact=True)).to_be_visible()
    save_screenshot(page, "en-overview")


def test_operator_acknowledges_alert(page: Any, staff_site: StaffSite) -> None:
    alert = staff_site.wait_for_alert(
        lambda alert: alert["rule_id"] == "siaga-3" and alert["device_id"] == "depok" and alert["status"] == "open",
        "from siaga-3 at depok, open",
    )
    log_in(page, staff_site, "rina")
    open_page(page, "Peringatan")
    _open_alert(page, alert)

    page.get_by_label("Catatan").fill("Petugas TRC sudah di lokasi")
    page.get_by_role("button", name="Terima", exact=True).click()

    expect(page.get_by_text("Peringatan diterima.", exact=True)).to_be_visible()
    settle(page)
    acknowledged = next(item for item in staff_site.alerts() if item["id"] == alert["id"])
    assert acknowledged["status"] == "acknowledged"
    assert acknowledged["acknowledged_by"] == "rina"
    assert acknowledged["acknowledge_note"] == "Petugas TRC sudah di lokasi"
    _open_alert(page, alert)
    assert "· rina — Petugas TRC sudah di lokasi" in page_text(page)
    expect(page.get_by_role("button", name="Terima", exact=True)).to_be_disabled()


def test_viewer_cannot_acknowledge(page: Any, staff_site: StaffSite) -> None:
    alert = staff_site.wait_for_alert(
        lambda alert: alert["rule_id"] == "siaga-2" and alert["device_id"] == "katulampa" and alert["status"] == "open",
        "from siaga-2 at katulampa, open",
    )
    log_in(page, staff_site, "budi")
    open_page(page, "Peringatan")
    _open_alert(page, alert)

    expect(page.get_by_text("Anda hanya dapat melihat peringatan ini", exact=False)).to_be_visible()
    expect(page.get_by_role("button", name="Terima", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name="Selesaikan", exact=True)).to_have_count(0)
    save_screenshot(page, "id-alerts-viewer")
    unchanged = next(item for item in staff_site.alerts() if item["id"] == alert["id"])
    assert unchanged["status"] == "open"


def test_operator_updates_job_on_phone(page: Any, staff_site: StaffSite) -> None:
    job = next(
        job
        for job in staff_site.team_jobs("bpbd", "tim-reaksi-cepat")
        if job.device_id == "katulampa" and job.status == "new"
    )
    page.set_viewport_size(PHONE)
    log_in(page, staff_site, "rina")
    page.get_by_test_id("stExpandSidebarButton").click()
    open_page(page, "Penugasan")
    page.get_by_test_id("stSidebarCollapseButton").get_by_role("button").click()
    expect(page.get_by_test_id("stSidebar")).to_have_attribute("data-collapsed", "true")

    card = page.get_by_test_id("stVerticalBlock").filter(has_text=f"#{job.id} · {job.title}").last
    card.get_by_text("Perbarui tugas", exact=True).click()
    expect(card.get_by_label("Petugas")).to_be_visible()
    choose(page, card.get_by_label("Status"), "Ditugaskan")
    card.get_by_label("Petugas").fill("Andi (TRC)")
    card.get_by_role("button", name="Simpan", exact=True).click()

    expect(page.get_by_text(f"Tugas #{job.id} disimpan.", exact=True)).to_be_visible()
    settle(page)
    updated = next(item for item in staff_site.team_jobs("bpbd", "tim-reaksi-cepat") if item.id == job.id)
    assert updated.status == "assigned"
    assert updated.assignee == "Andi (TRC)"
    page.get_by_role("tab", name="Ditugaskan (1)").click()
    expect(page.get_by_text("petugas: Andi (TRC)")).to_be_visible()
    save_screenshot(page, "id-dispatch-phone", viewport=PHONE)
