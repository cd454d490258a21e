"""The Home Assistant source against a websocket server in this file that speaks Home Assistant's
websocket API (as captured from Home Assistant 2024.3.3), with a real pipeline, ingestor and
SQLite store.

The server runs on its own event loop thread on 127.0.0.1 with a free port. It checks the
token, replies to ``subscribe_events``, ``get_states``, ``call_service`` and ``ping``, sends
``state_changed`` events to subscribed connections, and can drop every open connection, stop
listening and listen again on the same port. The service calls are tested in
test_home_assistant_actions.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from sqlalchemy import Engine as DbEngine

from integrations.home_assistant import HomeAssistantFeed
from rules.config import Config, HomeAssistantSource
from rules.ingest import Ingestor
from rules.loader import load_config_text
from rules.pipeline import Pipeline
from tests.conftest import fetch_alerts, fetch_readings, fetch_rejected, load_config

TOKEN = "test-long-lived-token"
TOKEN_ENV = "SIMPUL_TEST_HA_TOKEN"
HA_VERSION = "2024.3.3"
WAIT_SECONDS = 10.0

CONFIG = """
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
  pump:
    metrics:
      running: {states: [on, off]}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - {id: pompa-1, name: Pompa Pluit 1, agency: dinas-sda, kind: pump}
sources:
  - id: rumah
    type: home_assistant
    url: ws://127.0.0.1:8123/api/websocket
    token: ${SIMPUL_TEST_HA_TOKEN}
    entities:
      - {entity_id: input_number.level, device: manggarai, metric: level}
      - {entity_id: binary_sensor.pompa, device: pompa-1, metric: running}
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    then:
      - alert: {message: "Tinggi muka air {value} cm di {device.name}"}
"""


def state_object(entity_id: str, state: str, updated: datetime) -> dict[str, Any]:
    stamp = updated.isoformat()
    return {
        "entity_id": entity_id,
        "state": state,
        "attributes": {"friendly_name": entity_id},
        "last_changed": stamp,
        "last_updated": stamp,
        "context": {"id": "01HSTATE", "parent_id": None, "user_id": None},
    }


class FakeHomeAssistant:
    """A websocket server that follows Home Assistant's auth, command and event messages.

    ``services`` lists the services that ``call_service`` knows, as Home Assistant's
    ``domain.service``; ``turn_on`` and ``turn_off`` set their target entities to ``on`` and
    ``off``. Every call it receives is kept in ``calls``, answered or not. ``on_call`` makes it
    answer calls normally (``"answer"``), not at all (``"silent"``) or by dropping the
    connection (``"drop"``).
    """

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.states: dict[str, dict[str, Any]] = {}
        self.services = {"switch.turn_on", "switch.turn_off", "input_text.set_value"}
        self.calls: list[dict[str, Any]] = []
        self.on_call = "answer"
        self.subscribe_count = 0
        self.get_states_count = 0
        self.pongs = 0
        self._subscribed: dict[web.WebSocketResponse, int] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT_SECONDS)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(WAIT_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_SECONDS)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/websocket"

    def set_state(self, entity_id: str, state: str, updated: datetime) -> None:
        """Change an entity's state and send ``state_changed`` to every subscribed connection."""
        asyncio.run_coroutine_threadsafe(self._set_state(entity_id, state, updated), self._loop).result(WAIT_SECONDS)

    def drop_connections(self) -> None:
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(WAIT_SECONDS)

    def go_down(self) -> None:
        """Drop every connection and stop listening, as a stopped Home Assistant would."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(WAIT_SECONDS)

    def come_back(self) -> None:
        """Listen again on the same port."""
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(WAIT_SECONDS)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/websocket", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await self._drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _drop(self) -> None:
        for socket in list(self._sockets):
            await socket.close()

    async def _set_state(self, entity_id: str, state: str, updated: datetime) -> None:
        """Change an entity's state and send ``state_changed`` to every subscribed connection."""
        old_state = self.states.get(entity_id)
        new_state = state_object(entity_id, state, updated)
        self.states[entity_id] = new_state
        for socket, subscription_id in list(self._subscribed.items()):
            await socket.send_json(
                {
                    "type": "event",
                    "event": {
                        "event_type": "state_changed",
                        "data": {"entity_id": entity_id, "old_state": old_state, "new_state": new_state},
                        "origin": "LOCAL",
                        "time_fired": updated.isoformat(),
                        "context": new_state["context"],
                    },
                    "id": subscription_id,
                }
            )

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.add(socket)
        try:
            await socket.send_json({"type": "auth_required", "ha_version": HA_VERSION})
            auth = await socket.receive_json()
            if auth.get("type") != "auth" or auth.get("access_token") != self.token:
                await socket.send_json({"type": "auth_invalid", "message": "Invalid access token or password"})
                await socket.close()
                return socket
            await socket.send_json({"type": "auth_ok", "ha_version": HA_VERSION})
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    break
                await self._answer(socket, message.json())
        finally:
            self._sockets.discard(socket)
            self._subscribed.pop(socket, None)
        return socket

    async def _answer(self, socket: web.WebSocketResponse, command: dict[str, Any]) -> None:
        command_id = command["id"]
        kind = command["type"]
        if kind == "subscribe_events" and command.get("event_type") == "state_changed":
            self.subscribe_count += 1
            self._subscribed[socket] = command_id
            await socket.send_json({"id": command_id, "type": "result", "success": True, "result": None})
        elif kind == "get_states":
            self.get_states_count += 1
            result = list(self.states.values())
            await socket.send_json({"id": command_id, "type": "result", "success": True, "result": result})
        elif kind == "call_service":
            await self._call_service(socket, command)
        elif kind == "ping":
            self.pongs += 1
            await socket.send_json({"id": command_id, "type": "pong"})
        else:
            error = {"code": "unknown_command", "message": "Unknown command."}
            await socket.send_json({"id": command_id, "type": "result", "success": False, "error": error})

    async def _call_service(self, socket: web.WebSocketResponse, command: dict[str, Any]) -> None:
        """Answer ``call_service`` the way Home Assistant 2024.3.3 does: the state changes it causes
        are sent before the result, and an unknown service is a ``not_found`` error."""
        self.calls.append(command)
        if self.on_call == "silent":
            return
        if self.on_call == "drop":
            await socket.close()
            return

        command_id = command["id"]
        name = f"{command['domain']}.{command['service']}"
        if name not in self.services:
            error = {"code": "not_found", "message": f"Service {name} not found."}
            await socket.send_json({"id": command_id, "type": "result", "success": False, "error": error})
            return
        new_state = {"turn_on": "on", "turn_off": "off"}.get(command["service"])
        entity_ids = (command.get("target") or {}).get("entity_id") or []
        for entity_id in [entity_ids] if isinstance(entity_ids, str) else entity_ids:
            if new_state is not None and entity_id in self.states:
                await self._set_state(entity_id, new_state, datetime.now(UTC))
        context = {"id": "01HCALL", "parent_id": None, "user_id": "simpul"}
        await socket.send_json({"id": command_id, "type": "result", "success": True, "result": {"context": context}})


def wait_until(condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def server() -> Iterator[FakeHomeAssistant]:
    running = FakeHomeAssistant()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def config(server: FakeHomeAssistant, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return load_config(CONFIG.replace("ws://127.0.0.1:8123/api/websocket", server.url))


@pytest.fixture
def ingestor(db: DbEngine, config: Config) -> Iterator[Ingestor]:
    running = Ingestor(Pipeline(config, db, event_clock=False))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def start_feed(config: Config, ingestor: Ingestor) -> Iterator[Callable[..., HomeAssistantFeed]]:
    stops: list[Callable[[], None]] = []

    def start(**changes: Any) -> HomeAssistantFeed:
        source = config.sources[0]
        assert isinstance(source, HomeAssistantSource)
        feed = HomeAssistantFeed(source.model_copy(update=changes), config)
        stops.append(feed.start(ingestor.submit))
        return feed

    yield start
    for stop in stops:
        stop()


def now_minus(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


# --- config -----------------------------------------------------------------------------------


def test_home_assistant_config_is_accepted() -> None:
    loaded = load_config_text(CONFIG, "config.yaml")

    assert loaded.problems == []
    assert isinstance(loaded.config.sources[0], HomeAssistantSource)


@pytest.mark.parametrize(
    ("entity_yaml", "path", "code"),
    [
        ("{entity_id: sensor.a, device: manggaray, metric: level}", "sources[0].entities[0].device", "unknown_device"),
        ("{entity_id: sensor.a, device: manggarai, metric: levl}", "sources[0].entities[0].metric", "unknown_metric"),
        ("{entity_id: tinggi, device: manggarai, metric: level}", "sources[0].entities[0].entity_id", None),
    ],
)
def test_bad_entity_is_reported(entity_yaml: str, path: str, code: str | None) -> None:
    text = CONFIG.split("sources:")[0]
    text += (
        "sources:\n  - id: rumah\n    type: home_assistant\n    url: ws://127.0.0.1:8123/api/websocket\n"
        f"    token: ${{{TOKEN_ENV}}}\n    entities:\n      - {entity_yaml}\n"
    )

    loaded = load_config_text(text, "config.yaml")

    expected_code = code or "home_assistant_entity_id"
    assert [(problem.path, problem.code) for problem in loaded.problems] == [(path, expected_code)]


def test_literal_token_is_rejected() -> None:
    text = CONFIG.replace("${SIMPUL_TEST_HA_TOKEN}", "abc.def.ghi")

    loaded = load_config_text(text, "config.yaml")

    assert [problem.code for problem in loaded.problems] == ["literal_secret"]


# --- states to readings -----------------------------------------------------------------------


def test_current_states_are_fetched_on_connect(
    db: DbEngine, server: FakeHomeAssistant, start_feed: Callable[..., HomeAssistantFeed]
) -> None:
    updated = now_minus(60)
    server.states["input_number.level"] = state_object("input_number.level", "180.0", updated)
    server.states["sensor.other"] = state_object("sensor.other", "3", updated)

    feed = start_feed()

    assert wait_until(lambda: len(fetch_readings(db)) == 1)
    reading = fetch_readings(db)[0]
    assert reading.device_id == "manggarai"
    assert reading.value_num == 180.0
    assert reading.ts == updated
    assert reading.uid == f"input_number.level@{updated.isoformat()}"
    assert reading.source_id == "rumah"
    assert feed.health()["healthy"] is True


def test_state_change_fires_rule(
    db: DbEngine, server: FakeHomeAssistant, start_feed: Callable[..., HomeAssistantFeed]
) -> None:
    feed = start_feed()
    assert wait_until(lambda: feed.connected)

    server.set_state("input_number.level", "900.0", now_minus(1))

    assert wait_until(lambda: len(fetch_alerts(db)) == 1)
    assert fetch_alerts(db)[0].rule_id == "manggarai-siaga-2"
    assert fetch_readings(db)[0].value_num == 900.0
    assert feed.health()["events"] == 1


def test_unavailable_state_is_rejected(
    db: DbEngine, server: FakeHomeAssistant, start_feed: Callable[..., HomeAssistantFeed]
) -> None:
    feed = start_feed()
    assert wait_until(lambda: feed.connected)

    server.set_state("input_number.level", "unavailable", now_minus(1))

    assert wait_until(lambda: feed.rejected == 1)
    assert [row.reason for row in fetch_rejected(db)] == ["unavailable"]
    assert fetch_readings(db) == []


def test_on_off_entity_maps_to_state(
    db: DbEngine, server: FakeHomeAssistant, start_feed: Callable[..., HomeAssistantFeed]
) -> None:
    feed = start_feed()
    assert wait_until(lambda: feed.connected)

    server.set_state("binary_sensor.pompa", "on", now_minus(2))
    server.set_state("binary_sensor.pompa", "off", now_minus(1))

    assert wait_until(lambda: len(fetch_readings(db)) == 2)
    readings = sorted(fetch_readings(db), key=lambda reading: reading.ts)
    assert [reading.device_id for reading in readings] == ["pompa-1", "pompa-1"]
    assert [reading.metric for reading in readings] == ["running", "running"]
    assert [reading.value_text for reading in readings] == ["on", "off"]


def test_unmapped_entity_is_ignored(
    db: DbEngine, server: FakeHomeAssistant, start_feed: Callable[..., HomeAssistantFeed]
) -> None:
    feed = start_feed()
    assert wait_until(lambda: feed.connected)

    server.set_state("sensor.other", "12", now_minus(2))
    server.set_state("input_number.level", "200", now_minus(1))

    assert wait_until(lambda: len(fetch_readings(db)) == 1)
    assert fetch_readings(db)[0].device_id == "manggarai"
    assert feed.events == 1


# --- failures and reconnects ------------------------------------------------------------------


def test_wrong_token_is_reported_unhealthy(
    server: FakeHomeAssistant, start_feed: Callable[..., HomeAssistantFeed], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wrong-token")

    feed = start_feed()

    assert wait_until(lambda: feed.last_error is not None)
    health = feed.health()
    assert health["healthy"] is False
    assert "Invalid access token" in str(health["last_error"])
    assert "wrong-token" not in str(health["last_error"])
    assert server.subscribe_count == 0


def test_dropped_connection_resubscribes_without_doubles(
    db: DbEngine, server: FakeHomeAssistant, ingestor: Ingestor, start_feed: Callable[..., HomeAssistantFeed]
) -> None:
    server.states["input_number.level"] = state_object("input_number.level", "900.0", now_minus(60))
    feed = start_feed()
    assert wait_until(lambda: len(fetch_alerts(db)) == 1)

    server.drop_connections()

    assert wait_until(lambda: server.get_states_count == 2)
    assert wait_until(lambda: feed.connected)
    assert feed.health()["reconnects"] == 1
    assert server.subscribe_count == 2
    # The state fetched again has the same id, so the store counts it as a duplicate.
    assert wait_until(lambda: ingestor.pipeline.tally.readings["duplicate"] == 1)
    assert len(fetch_readings(db)) == 1
    assert len(fetch_alerts(db)) == 1

    server.set_state("input_number.level", "950.0", now_minus(1))
    assert wait_until(lambda: len(fetch_readings(db)) == 2)
    assert len(fetch_alerts(db)) == 1


def test_stop_ends_feed_quickly(server: FakeHomeAssistant, config: Config, ingestor: Ingestor) -> None:
    source = config.sources[0]
    assert isinstance(source, HomeAssistantSource)
    feed = HomeAssistantFeed(source, config)
    stop = feed.start(ingestor.submit)
    assert wait_until(lambda: feed.connected)

    started = time.monotonic()
    stop()

    assert time.monotonic() - started < 5
    assert feed.health()["connected"] is False
