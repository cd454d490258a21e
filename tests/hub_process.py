"""Run ``hub.py run`` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_hub(
    *, config_path: Path, db_url: str, port: int, log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start the hub without its simulated feed and wait until its health endpoint returns 200."""
    command = [
        sys.executable,
        str(ROOT / "hub.py"),
        "run",
        "--config",
        str(config_path),
        "--db",
        db_url,
        "--port",
        str(port),
        "--no-simulate",
    ]
    with log_path.open("w") as log:
        hub = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, **env), stdout=log, stderr=subprocess.STDOUT)
    for _ in range(150):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return hub
        except httpx.TransportError:
            time.sleep(0.1)
    hub.terminate()
    hub.wait(timeout=20)
    raise AssertionError(f"the hub did not start:\n{log_path.read_text()}")
