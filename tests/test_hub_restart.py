"""The hub process is stopped in the middle of a `for` duration and started again on the same store."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlmodel import Session

from rules.store.db import connect
from rules.store.models import Alert
from tests.hub_process import free_port, start_hub

TOKEN = "restart-test-token"

CONFIG = """
agencies: [{id: dinas-sda, name: Dinas SDA}]
kinds: {water_level: {metrics: {level: {unit: cm, min: -100, max: 2000}}}}
devices:
  - {id: manggarai, name: PA Manggarai, agency: dinas-sda, kind: water_level}
sources:
  - {id: gateway, type: http, auth: {token: "${SIMPUL_TEST_GATEWAY_TOKEN}"}}
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850, for: 8s}
    then: [{alert: {message: "Manggarai {value} cm"}}]
"""


def _start_hub(tmp_path: Path, port: int, log_name: str) -> subprocess.Popen[bytes]:
    return start_hub(
        config_path=tmp_path / "config.yaml",
        db_url=f"sqlite:///{tmp_path}/hub.db",
        port=port,
        log_path=tmp_path / log_name,
        env={"SIMPUL_TEST_GATEWAY_TOKEN": TOKEN},
    )


def _stop(hub: subprocess.Popen[bytes]) -> None:
    hub.send_signal(signal.SIGTERM)
    hub.wait(timeout=20)


def _alerts(tmp_path: Path) -> list[Alert]:
    db = connect(f"sqlite:///{tmp_path}/hub.db")
    with Session(db) as session:
        alerts = list(session.execute(select(Alert)).scalars())
    db.dispose()
    return alerts


def test_duration_survives_hub_restart(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    port = free_port()

    first = _start_hub(tmp_path, port, "first.log")
    t0 = datetime.now(UTC).replace(microsecond=0)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/readings",
            json={"device": "manggarai", "metric": "level", "value": 861, "ts": t0.isoformat()},
            headers={"X-Simpul-Source": "gateway", "Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert response.json()["accepted"] == 1
    finally:
        _stop(first)
    assert _alerts(tmp_path) == []

    second = _start_hub(tmp_path, port, "second.log")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _alerts(tmp_path):
            time.sleep(0.2)
        time.sleep(2)
    finally:
        _stop(second)

    alerts = _alerts(tmp_path)
    assert len(alerts) == 1
    assert alerts[0].opened_at == t0 + timedelta(seconds=8)
    assert alerts[0].value == "861"
