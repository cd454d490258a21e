"""Fixtures for the page tests: a copy of the example config, a store with alerts and jobs made by
the real pipeline, staff accounts, and an AppTest of the app logged in as one of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

from rules import users
from rules.loader import load_config
from rules.pipeline import Pipeline
from rules.store.db import connect
from tests.conftest import feed
from tests.hub_process import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "ui" / "app.py"
PASSWORD = "kata-sandi-uji-123"
ACCOUNTS = {
    "sari": ("Sari Wulandari", {"dinas-sda": "editor"}),
    "budi": ("Budi Santoso", {"dlh": "viewer"}),
    "rina": ("Rina Operator", {"dinas-sda": "operator", "dlh": "operator"}),
    "admin": ("Admin Kota", {"*": "admin"}),
    "bpbd-operator": ("Operator BPBD", {"bpbd": "operator"}),
}


@dataclass
class Site:
    config_path: Path
    port: int
    db: Engine
    url: str


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The example config.yaml, and a store where Manggarai reached Siaga 2 and a bin filled up."""
    # tests/fixtures/kota.yaml is the example config.yaml as shipped, so a staff member's edit of
    # config.yaml does not change what these tests expect.
    config_path = tmp_path / "config.yaml"
    # A free port with no listener, so the pages find no running hub.
    text = (
        (ROOT / "tests" / "fixtures" / "kota.yaml")
        .read_text()
        .replace("simpul:\n", f"simpul:\n  port: {free_port()}\n", 1)
    )
    config_path.write_text(text)
    url = f"sqlite:///{tmp_path}/simpul.db"
    db = connect(url)
    config = load_config(config_path).config
    pipeline = Pipeline(config, db, event_clock=True)
    feed(pipeline, "manggarai", "level", [(0, 870), (10, 880), (20, 890)])
    feed(pipeline, "tps-pasar-kota", "fill", [(21, 95)])
    for username, (full_name, roles) in ACCOUNTS.items():
        users.create_user(engine=db, username=username, full_name=full_name, password=PASSWORD, roles=roles, by="test")
    monkeypatch.setenv("SIMPUL_CONFIG", str(config_path))
    monkeypatch.setenv("SIMPUL_DATABASE_URL", url)
    yield Site(config_path=config_path, port=config.simpul.port, db=db, url=url)
    db.dispose()


def log_in(app: AppTest, username: str, password: str = PASSWORD) -> AppTest:
    app.text_input(key="login_username").input(username)
    app.text_input(key="login_password").input(password)
    next(button for button in app.button if button.label in ("Masuk", "Log in")).click()
    return app.run()


@pytest.fixture
def open_page(site: Site) -> Callable[..., AppTest]:
    """Start the app, log in as ``username`` and go to ``page`` (e.g. ``views/alerts.py``)."""

    def start(username: str, page: str | None = None, lang: str = "id") -> AppTest:
        app = AppTest.from_file(str(APP), default_timeout=60)
        app.session_state["lang"] = lang
        app.run()
        log_in(app, username)
        assert not app.exception, app.exception
        if page is not None:
            app.switch_page(page).run()
            assert not app.exception, app.exception
        return app

    return start
