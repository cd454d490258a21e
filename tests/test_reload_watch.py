"""Config reload when config.yaml changes on disk, on a running hub process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlmodel import Session

from rules.store.db import connect
from rules.store.models import Alert, AuditEntry, RuleInstance
from tests.hub_process import free_port, start_hub
from tests.test_reload import _config_text

TOKEN = "watch-test-token"


def _post(port: int, device: str, value: float, ts: datetime) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/readings",
        json={"device": device, "metric": "level", "value": value, "ts": ts.isoformat()},
        headers={"X-Simpul-Source": "gateway", "Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1, response.text


def _wait_for_log(log_path: Path, text: str, count: int = 1, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_path.read_text().count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} did not appear {count} times in the hub log:\n{log_path.read_text()}")


def _replace(path: Path, text: str) -> None:
    """Write ``text`` the way the config editor does: a new file moved over the old one."""
    temporary = path.with_name(".config.yaml.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _rows(db_path: Path) -> tuple[list[Alert], list[RuleInstance], list[str]]:
    db = connect(f"sqlite:///{db_path}")
    with Session(db) as session:
        alerts = list(session.execute(select(Alert).order_by(Alert.id)).scalars())
        instances = list(session.execute(select(RuleInstance).order_by(RuleInstance.rule_id)).scalars())
        actions = list(session.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars())
    db.dispose()
    return alerts, instances, actions


def _stop(hub: subprocess.Popen[bytes]) -> None:
    hub.send_signal(signal.SIGTERM)
    hub.wait(timeout=20)


def test_hub_reloads_changed_file(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(_config_text(350))
    log_path = tmp_path / "hub.log"
    port = free_port()
    hub = start_hub(
        config_path=config_path,
        db_url=f"sqlite:///{tmp_path}/hub.db",
        port=port,
        log_path=log_path,
        env={"SIMPUL_TEST_GATEWAY_TOKEN": TOKEN},
    )
    t0 = datetime.now(UTC).replace(microsecond=0)
    try:
        # Manggarai is pending for 15 minutes; Depok at 300 is below its threshold of 350.
        _post(port, "manggarai", 860, t0)
        _post(port, "depok", 300, t0)

        _replace(config_path, _config_text(270))
        _wait_for_log(log_path, "config reloaded from")
        _post(port, "depok", 310, t0 + timedelta(seconds=1))

        # An invalid edit with a lower threshold is rejected, so 260 is still below the running 270.
        invalid = _config_text(250).replace("above: 850", "above: tinggi")
        _replace(config_path, invalid)
        _wait_for_log(log_path, "config reload rejected")
        _post(port, "depok", 260, t0 + timedelta(seconds=2))
        assert hub.poll() is None
    finally:
        _stop(hub)

    alerts, instances, actions = _rows(tmp_path / "hub.db")
    assert [(alert.rule_id, alert.value, alert.status, alert.resolve_note) for alert in alerts] == [
        ("depok-siaga", "310", "resolved", "condition cleared")
    ]
    assert [(row.rule_id, row.state, row.since) for row in instances] == [
        ("depok-siaga", "idle", None),
        ("manggarai-siaga-2", "pending", t0),
    ]
    assert actions == ["config_reloaded"]
    log = log_path.read_text()
    assert "rules[0].when.above" in log
    assert log.count("config reloaded from") == 1


def test_sighup_and_file_change_reload_once(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(_config_text(350))
    log_path = tmp_path / "hub.log"
    hub = start_hub(
        config_path=config_path,
        db_url=f"sqlite:///{tmp_path}/hub.db",
        port=free_port(),
        log_path=log_path,
        env={"SIMPUL_TEST_GATEWAY_TOKEN": TOKEN},
    )
    try:
        _replace(config_path, _config_text(270))
        hub.send_signal(signal.SIGHUP)
        _wait_for_log(log_path, "config reloaded from")
        # The watcher finds the content that SIGHUP loaded unchanged, and ignores a touch without a change.
        time.sleep(3)
        os.utime(config_path)
        time.sleep(3)
        hub.send_signal(signal.SIGHUP)
        _wait_for_log(log_path, "config reloaded from", count=2)
    finally:
        _stop(hub)

    _alerts, _instances, actions = _rows(tmp_path / "hub.db")
    assert actions == ["config_reloaded", "config_reloaded"]
