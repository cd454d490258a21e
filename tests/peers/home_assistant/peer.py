"""A real Home Assistant 2024.3.3 for Simpul's end-to-end tests, run from the virtual environment
that install.sh beside this file makes in ``.peers/home-assistant/venv``.

``HomeAssistantPeer`` writes a config folder from ``configuration.yaml`` with a free port, adds a
user with ``hass --script auth``, starts Home Assistant as a child process on 127.0.0.1, logs in
through ``/auth/login_flow`` and ``/auth/token`` and creates a long-lived access token over the
websocket API, as a person would in the profile page. It stops the process by its PID and can
start it again on the same folder and port.

It needs only the standard library and aiohttp, so it runs in the hub's environment (for the
tests) and in Home Assistant's own (for ``python peer.py warm-up``, which install.sh runs once so
that Home Assistant installs the requirements of its default integrations before any test).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
VERSION = "2024.3.3"
DEFAULT_VENV = ROOT / ".peers" / "home-assistant" / "venv"
INSTALLED_STAMP = f".installed-{VERSION}"
USERNAME = "simpul-uji"
# Only for the throwaway instances of the tests, which listen on 127.0.0.1.
PASSWORD = "kata-sandi-uji-saja"
START_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 30.0


def venv_dir() -> Path:
    return Path(os.environ.get("SIMPUL_HA_VENV", str(DEFAULT_VENV)))


def installed() -> bool:
    """Return whether install.sh has finished installing (and warming up) Home Assistant."""
    venv = venv_dir()
    return (venv / "bin" / "hass").exists() and (venv / INSTALLED_STAMP).exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HomeAssistantPeer:
    """One Home Assistant process on 127.0.0.1 with its own config folder."""

    def __init__(self, config_dir: Path, port: int | None = None, venv: Path | None = None) -> None:
        self.config_dir = config_dir
        self.port = port or free_port()
        self.venv = venv or venv_dir()
        self.log_path = config_dir / "hass.out"
        self.process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/websocket"

    @property
    def token(self) -> str:
        """The long-lived access token, created on the first start."""
        assert self._token is not None, "start Home Assistant first"
        return self._token

    # --- lifecycle ---

    def prepare(self) -> None:
        """Write the config folder and add the test user."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        template = (HERE / "configuration.yaml").read_text(encoding="utf-8")
        (self.config_dir / "configuration.yaml").write_text(template.replace("__PORT__", str(self.port)))
        hass = str(self.venv / "bin" / "hass")
        subprocess.run(
            [hass, "--script", "auth", "-c", str(self.config_dir), "add", USERNAME, PASSWORD],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start Home Assistant and wait until it runs every integration; log in on the first start."""
        assert self.process is None or self.process.poll() is not None, "Home Assistant is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.venv / "bin" / "hass"), "-c", str(self.config_dir)],
                cwd=self.config_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_running(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_until_running(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Home Assistant exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._running():
                return
            time.sleep(0.5)
        raise RuntimeError(f"Home Assistant did not start within {timeout:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the process this peer started, by its PID, and wait for it to exit."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 40) -> str:
        texts = []
        for path in (self.log_path, self.config_dir / "home-assistant.log"):
            if path.exists():
                texts.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)

    def _running(self) -> bool:
        try:
            if self._token is None:
                self._token = self._log_in()
            config = self.request("GET", "/api/config")
        except (OSError, urllib.error.URLError, ValueError):
            return False
        if config.get("recovery_mode"):
            raise RuntimeError(f"Home Assistant started in recovery mode:\n{self.log_tail()}")
        return config.get("state") == "RUNNING"

    def _log_in(self) -> str:
        """Log in as the test user and return a new long-lived access token."""
        client_id = f"{self.http_url}/"
        flow = self._post_json(
            "/auth/login_flow",
            {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id},
        )
        step = self._post_json(
            f"/auth/login_flow/{flow['flow_id']}",
            {"client_id": client_id, "username": USERNAME, "password": PASSWORD},
        )
        if step.get("type") != "create_entry":
            raise RuntimeError(f"Home Assistant refused the test user's login: {step.get('errors')}")
        form = urllib.parse.urlencode(
            {"grant_type": "authorization_code", "code": step["result"], "client_id": client_id}
        ).encode()
        with urllib.request.urlopen(f"{self.http_url}/auth/token", data=form, timeout=10) as response:
            access_token = json.load(response)["access_token"]
        # A thread of its own, because the caller's thread may already run an event loop.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._long_lived_token(access_token)).result(60)

    async def _long_lived_token(self, access_token: str) -> str:
        async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url) as socket:
            await socket.receive_json()
            await socket.send_json({"type": "auth", "access_token": access_token})
            answer = await socket.receive_json()
            if answer.get("type") != "auth_ok":
                raise RuntimeError(f"Home Assistant refused the access token: {answer}")
            await socket.send_json(
                {"id": 1, "type": "auth/long_lived_access_token", "client_name": "simpul-uji", "lifespan": 30}
            )
            result = await socket.receive_json()
            if not result.get("success"):
                raise RuntimeError(f"Home Assistant did not create a long-lived token: {result}")
            return str(result["result"])

    # --- REST API ---

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call Home Assistant's REST API with the token and return the JSON response."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.http_url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def state(self, entity_id: str) -> str:
        return str(self.request("GET", f"/api/states/{entity_id}")["state"])

    def call(self, service: str, **data: Any) -> None:
        domain, name = service.split(".", 1)
        self.request("POST", f"/api/services/{domain}/{name}", data)

    def _post_json(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            f"{self.http_url}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


def warm_up() -> None:
    """Start Home Assistant once in a throwaway folder, so it installs what its default integrations need."""
    folder = Path(tempfile.mkdtemp(prefix="simpul-ha-warm-up-"))
    peer = HomeAssistantPeer(folder)
    started = time.monotonic()
    try:
        peer.prepare()
        peer.start()
        print(f"Home Assistant {VERSION} ran on 127.0.0.1:{peer.port} after {time.monotonic() - started:.0f} s")
    finally:
        peer.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["warm-up"]:
        sys.exit("usage: peer.py warm-up")
    warm_up()
