"""The hub process is stopped in the middle of a `for` duration and started again on the same store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlmodel import Session

from rules.store.db import connect
from rules.store.models import Alert

ROOT = Path(__file__).resolve().parents[1]
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_hub(tmp_path: Path, port: int, log_name: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(ROOT / "hub.py"),
        "run",
        "--config",
        str(tmp_path / "config.yaml"),
        "--db",
        f"sqlite:///{tmp_path}/hub.db",
        "--port",
        str(port),
        "--no-simulate",
    ]
    env = dict(os.environ, SIMPUL_TEST_GATEWAY_TOKEN=TOKEN)
    with (tmp_path / log_name).open("w") as log:
        hub = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(150):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return hub
        except httpx.TransportError:
            time.sleep(0.1)
    hub.terminate()
    raise AssertionError((tmp_path / log_name).read_text())


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
    port = _free_port()

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
