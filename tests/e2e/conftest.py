"""Fixtures of the browser tests of the staff pages.

``staff_site`` sets up what a city runs, once for the tests in this folder. That is a temporary
git repository with a copy of the repository's config.yaml, a SQLite store, staff accounts made
with ``hub.py users add``, and the hub (``hub.py run``) and the staff pages (``hub.py ui``) as
real processes on free loopback ports. Readings posted to the hub's HTTP API make alerts and
dispatch jobs exist. ``page`` is a fresh headless Chromium tab driven by Playwright.

The tests skip when Debian's chromium or Playwright is missing. Screenshots go to
``test-artifacts/screenshots/``, which each run empties first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rules.store import queries
from rules.store.db import connect
from rules.store.models import AuditEntry, DispatchJob
from tests.hub_process import ROOT, free_port, start_hub

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
FAILURES = ROOT / "test-artifacts" / "failures"
CHROMIUM = Path("/usr/bin/chromium")
# Flags that let Chromium run headless as root in a container without a GPU or network. Playwright
# gives every launch a fresh temporary profile itself and rejects --user-data-dir among the args.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}
# Playwright's limit for each expectation and action. Streamlit pages render in about a second
# on a 2-core machine, so this only matters on a stalled one.
TIMEOUT_MS = 30_000
SERVER_START_SECONDS = 60.0
STOP_SECONDS = 20.0

PASSWORD = "kata-sandi-uji-e2e-123"
GATEWAY_TOKEN = "e2e-gateway-token"
# username -> (full name, roles as --role values)
ACCOUNTS = {
    "admin": ("Admin Kota", ["*=admin"]),
    "sari": ("Sari Wulandari", ["dinas-sda=editor"]),
    "rina": ("Rina Operator", ["bpbd=operator", "dinas-sda=operator"]),
    "budi": ("Budi Santoso", ["bpbd=viewer"]),
}


@dataclass
class StaffSite:
    """The running hub and staff pages shared by the tests in this folder, and where their files are."""

    repo: Path
    config_path: Path
    committed_text: str
    db_url: str
    hub_url: str
    ui_url: str
    hub_log: Path
    ui_log: Path

    def post_readings(self, readings: list[dict[str, Any]]) -> dict[str, Any]:
        """Post readings as the ``gateway`` source and return the response body, which must have status 200."""
        response = httpx.post(
            f"{self.hub_url}/api/v1/readings",
            json=readings,
            headers=_gateway_headers(),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert, newest first, from the hub's ``GET /api/v1/alerts``."""
        response = httpx.get(f"{self.hub_url}/api/v1/alerts", params={"limit": 1000}, headers=_gateway_headers())
        assert response.status_code == 200, response.text
        alerts: list[dict[str, Any]] = response.json()["alerts"]
        return alerts

    def audit_entries(self, action: str) -> list[AuditEntry]:
        """The store's audit entries of kind ``action``, newest first."""
        db = connect(self.db_url)
        try:
            return queries.list_audit(engine=db, actions=[action], limit=1000)
        finally:
            db.dispose()

    def team_jobs(self, agency_id: str, team_id: str) -> list[DispatchJob]:
        """The store's dispatch jobs of one team, by due time."""
        db = connect(self.db_url)
        try:
            return queries.list_jobs(engine=db, agency_ids=[agency_id], team_id=team_id)
        finally:
            db.dispose()

    def wait_for_alert(
        self, matches: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll the hub's alerts until one matches, or fail naming ``what`` and listing the alerts seen."""
        deadline = time.monotonic() + timeout
        while True:
            alerts = self.alerts()
            found = [alert for alert in alerts if matches(alert)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no alert {what} after {timeout:.0f} s: {_summary(alerts)}")
            time.sleep(0.2)


def _gateway_headers() -> dict[str, str]:
    return {"X-Simpul-Source": "gateway", "Authorization": f"Bearer {GATEWAY_TOKEN}"}


def _summary(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(alert["id"], alert["rule_id"], alert["device_id"], alert["status"], alert["value"]) for alert in alerts]


def reading(device: str, metric: str, value: object, minutes_ago: float) -> dict[str, Any]:
    """One reading for ``POST /api/v1/readings``, stamped ``minutes_ago`` before now."""
    ts = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"device": device, "metric": metric, "value": value, "ts": ts.isoformat()}


# Readings that give every page something to show. Manggarai went above 850 cm three hours ago and
# fell back below 800 cm, so manggarai-siaga-2 fired once and its alert is resolved. Katulampa and
# Depok are above their Siaga levels now, and a waste bin is full. A rain gauge, the pump and an
# air station report normal values, and one reading is rejected as "unavailable".
SEED_READINGS = [
    ("manggarai", "level", 870, 180),
    ("manggarai", "level", 872, 160),
    ("manggarai", "level", 700, 120),
    ("manggarai", "level", 690, 80),
    ("katulampa", "level", 160, 60),
    ("katulampa", "level", 165, 10),
    ("depok", "level", 210, 60),
    ("depok", "level", 215, 10),
    ("depok", "level", "unavailable", 5),
    ("tps-pasar-kota", "fill", 95, 15),
    ("tps-terminal", "fill", 40, 15),
    ("udara-balai-kota", "ispu", 60, 15),
    ("hujan-katulampa", "rain", 12, 10),
    ("pompa-manggarai-1", "state", "on", 10),
]


def chromium_path() -> Path | None:
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def _run_checked(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"


def _make_repository(repo: Path, hub_port: int) -> Path:
    """Copy config.yaml into a new git repository, commit it and return the config's path.

    The copy gains one line, ``port:`` under ``simpul``, because the staff pages find the running
    hub (for the integrations' health) at that port.
    """
    repo.mkdir()
    text = (ROOT / "tests" / "fixtures" / "kota.yaml").read_text()
    database_line = "  database: sqlite:///var/simpul.db\n"
    assert database_line in text, "config.yaml no longer has the simpul.database line this fixture extends"
    text = text.replace(database_line, f"{database_line}  port: {hub_port}\n", 1)
    config_path = repo / "config.yaml"
    config_path.write_text(text)

    _run_checked(["git", "init", "--quiet", "--initial-branch=main"], cwd=repo)
    _run_checked(["git", "config", "user.name", "Simpul Test"], cwd=repo)
    _run_checked(["git", "config", "user.email", "simpul-test@example.invalid"], cwd=repo)
    _run_checked(["git", "add", "config.yaml"], cwd=repo)
    _run_checked(["git", "commit", "--quiet", "-m", "Add the city's config"], cwd=repo)
    return config_path


def _add_accounts(config_path: Path, db_url: str) -> None:
    env = dict(os.environ, SIMPUL_E2E_PASSWORD=PASSWORD)
    for username, (full_name, roles) in ACCOUNTS.items():
        command = [sys.executable, str(ROOT / "hub.py"), "users", "--config", str(config_path), "--db", db_url]
        command += ["add", username, "--name", full_name, "--password-env", "SIMPUL_E2E_PASSWORD"]
        for role in roles:
            command += ["--role", role]
        _run_checked(command, cwd=ROOT, env=env)


def _start_ui(*, config_path: Path, db_url: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``hub.py ui`` and wait until Streamlit's health endpoint returns 200."""
    command = [sys.executable, str(ROOT / "hub.py"), "ui", "--config", str(config_path), "--db", db_url]
    command += ["--port", str(port)]
    # Other edits to the working tree must not show Streamlit's "source file changed" banner.
    env = dict(os.environ, STREAMLIT_SERVER_FILE_WATCHER_TYPE="none")
    with log_path.open("w") as log:
        ui = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline and ui.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).status_code == 200:
                return ui
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    _stop(ui)
    raise AssertionError(f"the staff pages did not start:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this fixture started, by its PID: SIGTERM, then SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_SECONDS)


@pytest.fixture(scope="package")
def chromium() -> Path:
    pytest.importorskip("playwright", reason="Playwright is not installed: pip install -r requirements-dev.txt")
    path = chromium_path()
    if path is None:
        pytest.skip(f"browser tests need chromium, found none at {CHROMIUM} or on PATH: apt-get install chromium")
    return path


@pytest.fixture(scope="package")
def staff_site(tmp_path_factory: pytest.TempPathFactory, chromium: Path) -> Iterator[StaffSite]:
    """A git repository with config.yaml, a store with accounts and readings, and the hub and pages running."""
    base = tmp_path_factory.mktemp("staff-site")
    for old_screenshot in SCREENSHOTS.glob("*.png"):
        old_screenshot.unlink()
    hub_port = free_port()
    ui_port = free_port()
    config_path = _make_repository(base / "repo", hub_port)
    committed_text = config_path.read_text()
    db_url = f"sqlite:///{base}/simpul.db"
    _add_accounts(config_path, db_url)

    hub = start_hub(
        config_path=config_path,
        db_url=db_url,
        port=hub_port,
        log_path=base / "hub.log",
        env={"SIMPUL_GATEWAY_TOKEN": GATEWAY_TOKEN},
    )
    ui: subprocess.Popen[bytes] | None = None
    try:
        ui = _start_ui(config_path=config_path, db_url=db_url, port=ui_port, log_path=base / "ui.log")
        site = StaffSite(
            repo=config_path.parent,
            config_path=config_path,
            committed_text=committed_text,
            db_url=db_url,
            hub_url=f"http://127.0.0.1:{hub_port}",
            ui_url=f"http://127.0.0.1:{ui_port}",
            hub_log=base / "hub.log",
            ui_log=base / "ui.log",
        )
        body = site.post_readings([reading(*step) for step in SEED_READINGS])
        assert (body["accepted"], body["rejected"]) == (len(SEED_READINGS) - 1, 1), body
        site.wait_for_alert(
            lambda alert: alert["rule_id"] == "siaga-2" and alert["device_id"] == "katulampa",
            "from siaga-2 at katulampa",
        )
        site.wait_for_alert(
            lambda alert: alert["rule_id"] == "manggarai-siaga-2" and alert["status"] == "resolved",
            "from manggarai-siaga-2, resolved",
        )
        yield site
    finally:
        if ui is not None:
            _stop(ui)
        _stop(hub)


@pytest.fixture(scope="package")
def browser(chromium: Path) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Record on the test item whether its call phase failed, for the ``page`` fixture's teardown."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new tab in its own browser context, so that every test starts logged out.

    When the test fails, the tab as it was then is saved in ``test-artifacts/failures/``.
    """
    context = browser.new_context(viewport=VIEWPORT, locale="id-ID", timezone_id="Asia/Jakarta")
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    yield tab
    if request.node.stash.get(CALL_FAILED, False):
        FAILURES.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(FAILURES / f"{request.node.name}.png"), full_page=True)
    context.close()


# --- helpers for the tests: Streamlit pages as staff see them ---


def settle(page: Any) -> None:
    """Wait until the script run has finished and every element, chart and map has been drawn.

    Fails when the page shows a Python exception.
    """
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0)
    expect(page.locator("[data-testid=stVegaLiteChart]:not(:has(canvas, svg))")).to_have_count(0)
    expect(page.locator("[data-testid=stDeckGlJsonChart]:not(:has(canvas))")).to_have_count(0)
    # A table's accessible cells appear a moment after its canvas; every table here has rows.
    expect(page.locator("[data-testid=stDataFrame]:not(:has([data-testid^=glide-cell]))")).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)


def log_in(page: Any, site: StaffSite, username: str) -> None:
    """Open the pages, log in as ``username`` in Indonesian and wait for the overview."""
    from playwright.sync_api import expect

    page.goto(site.ui_url)
    page.get_by_label("Nama pengguna").fill(username)
    page.get_by_label("Kata sandi").fill(PASSWORD)
    page.get_by_role("button", name="Masuk").click()
    expect(page.get_by_role("heading", name="Ringkasan", exact=True)).to_be_visible()
    settle(page)


# Resolves once every finite CSS transition and animation on the page has finished, such as an
# expander opening. Endless ones, like a spinner, are left out.
ANIMATIONS_FINISHED = """() => Promise.all(document.getAnimations()
    .filter(animation => animation.effect?.getComputedTiming().iterations !== Infinity)
    .map(animation => animation.finished.catch(() => null)))"""


def choose(page: Any, select: Any, option: str) -> None:
    """Pick ``option`` in a Streamlit selectbox, given its combobox, as a keyboard user does.

    On the phone-sized dispatch page the list now and then stayed closed while the expander
    around the box was still opening, so this first waits for running animations to end. Typing
    the option's text filters the list down to it, and Enter picks it.
    """
    from playwright.sync_api import expect

    page.evaluate(ANIMATIONS_FINISHED)
    select.click()
    select.press_sequentially(option)
    expect(page.get_by_role("option", name=option, exact=True)).to_be_visible()
    select.press("Enter")
    expect(select).to_have_value(option)


def open_page(page: Any, title: str) -> None:
    """Follow the sidebar link ``title`` and wait until that page has been drawn."""
    from playwright.sync_api import expect

    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    settle(page)


def save_screenshot(page: Any, name: str, viewport: dict[str, int] = VIEWPORT) -> Path:
    """Save the whole page, below the fold too, as ``test-artifacts/screenshots/NAME.png``.

    Streamlit scrolls inside its main element rather than the document, so the window is made as
    tall as that element's content for the shot.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], int(height))})
    settle(page)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)
    return path


def page_text(page: Any) -> str:
    """The text of the main area and of its tables, with runs of white space collapsed.

    Streamlit draws tables on a canvas, so their cells are read from the hidden accessible grid
    that the table widget keeps beside the canvas.
    """
    cells = page.get_by_test_id("stMain").locator("[data-testid^=glide-cell]").all_text_contents()
    text = page.get_by_test_id("stMain").inner_text() + " " + " ".join(cells)
    return re.sub(r"\s+", " ", text)
