"""A real hub process for the tests that stop and start its peers: post readings to it, read its
health and its store, and wait for outcomes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine
from sqlmodel import Session, select

from rules.store.models import ActionRun, Alert, Reading
from tests.hub_process import free_port, start_hub

GATEWAY_TOKEN = "peer-restart-gateway-token"
GATEWAY_TOKEN_ENV = "SIMPUL_TEST_GATEWAY_TOKEN"
# The gateway source that the configs of these tests declare, for readings posted over HTTP.
GATEWAY_SOURCE = "  - {id: gateway, type: http, auth: {token: '${SIMPUL_TEST_GATEWAY_TOKEN}'}}\n"


def wait_for(condition: Callable[[], bool], *, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


@dataclass
class Hub:
    """``hub.py run`` on a free port with its own SQLite store in ``folder``."""

    folder: Path
    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, folder: Path, config: str, env: dict[str, str] | None = None) -> Hub:
        (folder / "config.yaml").write_text(config, encoding="utf-8")
        port = free_port()
        process = start_hub(
            config_path=folder / "config.yaml",
            db_url=f"sqlite:///{folder}/hub.db",
            port=port,
            log_path=folder / "hub.log",
            env={GATEWAY_TOKEN_ENV: GATEWAY_TOKEN, **(env or {})},
        )
        return cls(folder, process, port)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return (self.folder / "hub.log").read_text(errors="replace")

    def post(self, device: str, metric: str, value: float) -> None:
        """Post one reading stamped now through the gateway source and check that it was accepted."""
        reading = {"device": device, "metric": metric, "value": value, "ts": datetime.now(UTC).isoformat()}
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/api/v1/readings",
            json=reading,
            headers={"X-Simpul-Source": "gateway", "Authorization": f"Bearer {GATEWAY_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 1, response.text

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/health", timeout=10)
        body: dict[str, Any] = response.json()
        return body

    def runs(self) -> list[ActionRun]:
        return self._select(ActionRun, ActionRun.id)

    def alerts(self) -> list[Alert]:
        return self._select(Alert, Alert.id)

    def readings(self) -> list[Reading]:
        return self._select(Reading, Reading.id)

    def wait_for_runs(self, count: int, *, seconds: float = 90.0) -> list[ActionRun]:
        """Wait until ``count`` runs exist and none is pending or failed; return them."""

        def settled() -> bool:
            runs = self.runs()
            return len(runs) == count and all(run.status not in ("pending", "failed") for run in runs)

        wait_for(settled, what=f"{count} action runs to finish; the hub's log:\n{self.log()[-3000:]}", seconds=seconds)
        return self.runs()

    def _select(self, model: Any, order: Any) -> list[Any]:
        # Read without rules.store.db.connect, which would run the migrations in a write
        # transaction beside the hub's own writes.
        db = create_engine(f"sqlite:///{self.folder}/hub.db", connect_args={"timeout": 10})
        try:
            with Session(db) as session:
                return list(session.exec(select(model).order_by(order)).all())
        finally:
            db.dispose()
