"""Peers stopped and started again mid-stream, against a real hub process: an outgoing webhook
receiver, Node-RED and a Mosquitto broker of the test's own. (Home Assistant's restart test is
in test_home_assistant_e2e.py.)

Each test lets rules fire while the peer is up, stops the peer by the PID of the process (or the
server) the test started, lets more readings arrive and more rules fire while it is away, starts
it again and lets more rules fire. Every action must reach the peer exactly once, every reading
must be stored once, and the hub's health must report the peer unhealthy while it is away and
healthy once it is back.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from integrations.node_red import NodeRedClient, NodeRedSettings, load_flow_files
from integrations.webhook_out import verify_signature
from tests.hub_peers import GATEWAY_SOURCE, Hub, wait_for
from tests.hub_process import free_port
from tests.integrations.test_node_red import FLOWS, NODE_RED_BIN, PASSWORD, SETTINGS_TEMPLATE, USERNAME, _bcrypt_hash

# Long enough for a second copy of an action to arrive if one were sent.
QUIET_SECONDS = 2.0
DEVICES = ("pos-1", "pos-2", "pos-3", "pos-4")

BASE_CONFIG = """
agencies:
  - {id: bpbd, name: BPBD DKI Jakarta}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: 0, max: 2000}
  pump:
    metrics:
      state: {states: ["on", "off"]}
devices:
  - {id: pos-1, name: Pos 1, agency: bpbd, kind: water_level}
  - {id: pos-2, name: Pos 2, agency: bpbd, kind: water_level}
  - {id: pos-3, name: Pos 3, agency: bpbd, kind: water_level}
  - {id: pos-4, name: Pos 4, agency: bpbd, kind: water_level}
"""

# One rule for every gauge, so each gauge's instance fires on its own.
SIAGA_RULE = """
rules:
  - id: siaga
    name: Siaga
    agency: bpbd
    when: {kind: water_level, metric: level, above: 850}
    then:
      - %s
"""


def fire(send: Callable[[str, float], None], device: str) -> None:
    """Make ``device``'s instance fire once: a level below the threshold, then one above it."""
    send(device, 700)
    send(device, 900)


def restart_mid_stream(
    hub: Hub,
    *,
    stop_peer: Callable[[], None],
    start_peer: Callable[[], None],
    delivered: Callable[[], list[str]],
    peer_healthy: Callable[[dict[str, Any]], bool],
    send_while_up: Callable[[str, float], None] | None = None,
) -> None:
    """Fire rules before, while and after the peer is away, and check what arrived.

    ``delivered`` returns the ids of the action runs the peer received, one per delivery.
    ``send_while_up`` sends readings while the peer is up (the gateway when not given); while
    the peer is away, readings come through the gateway.
    """

    def gateway(device: str, value: float) -> None:
        hub.post(device, "level", value)

    send = send_while_up or gateway

    # 1. The peer is up: one firing, delivered.
    fire(send, "pos-1")
    hub.wait_for_runs(1)
    wait_for(lambda: len(delivered()) == 1, what="the first action to arrive")
    assert peer_healthy(hub.health()) is True

    # 2. The peer goes away: readings keep coming and rules keep firing, and the actions wait.
    stop_peer()
    fire(gateway, "pos-2")
    fire(gateway, "pos-3")
    gateway("pos-1", 710)
    gateway("pos-1", 910)
    wait_for(
        lambda: sorted(run.status for run in hub.runs()) == ["failed", "failed", "failed", "succeeded"],
        what=f"three actions to fail while the peer is away; the hub's log:\n{hub.log()[-3000:]}",
    )
    assert peer_healthy(hub.health()) is False

    # 3. The peer comes back: the waiting actions arrive, and rules fire as before.
    start_peer()
    fire(send, "pos-4")
    runs = hub.wait_for_runs(5)
    time.sleep(QUIET_SECONDS)

    assert {run.status for run in runs} == {"succeeded"}
    assert sorted(delivered()) == sorted(str(run.id) for run in runs)
    wait_for(lambda: peer_healthy(hub.health()), what="the health report to show the peer healthy again")
    readings = hub.readings()
    assert len(readings) == 10
    assert len({(reading.device_id, reading.ts) for reading in readings}) == 10


# --- an outgoing webhook receiver -------------------------------------------------------------

WEBHOOK_SECRET = "peer-restart-webhook-secret"


class Receiver:
    """An HTTP server on a fixed loopback port that checks each webhook's signature and keeps its
    ``X-Simpul-Delivery``; it can stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signed = verify_signature(
                    WEBHOOK_SECRET.encode(),
                    self.headers["X-Simpul-Timestamp"],
                    body,
                    self.headers["X-Simpul-Signature"],
                    now=time.time(),
                    max_skew_seconds=300,
                )
                if signed:
                    with receiver._lock:
                        receiver.deliveries.append(self.headers["X-Simpul-Delivery"])
                self.send_response(200 if signed else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[str]:
        with self._lock:
            return list(self.deliveries)


def test_webhook_receiver_restart(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.start()
    webhooks = (
        "webhooks:\n"
        f"  - {{id: penerima, url: 'http://127.0.0.1:{receiver.port}/simpul', "
        "secret: '${SIMPUL_TEST_WEBHOOK_SECRET}', timeout: 2s}\n"
    )
    config = BASE_CONFIG + "sources:\n" + GATEWAY_SOURCE + webhooks + SIAGA_RULE % "webhook: {target: penerima}"
    hub = Hub.start(tmp_path, config, env={"SIMPUL_TEST_WEBHOOK_SECRET": WEBHOOK_SECRET})
    try:
        restart_mid_stream(
            hub,
            stop_peer=receiver.stop,
            start_peer=receiver.start,
            delivered=receiver.delivered,
            peer_healthy=lambda health: bool(health["actions"]["webhook"]["healthy"]),
        )
        assert hub.health()["actions"]["webhook"]["targets"]["penerima"]["last_error"] is None
    finally:
        hub.stop()
        receiver.stop()


# --- Node-RED -----------------------------------------------------------------------------------

# A flow that appends the delivery id of every request to a file and responds with 200.
RECORDER_FLOW = [
    {"id": "uji.catat.tab", "type": "tab", "label": "Uji: catat kiriman"},
    {
        "id": "uji.catat.masuk",
        "type": "http in",
        "z": "uji.catat.tab",
        "name": "Terima kiriman",
        "url": "/uji/catat",
        "method": "post",
        "upload": False,
        "swaggerDoc": "",
        "wires": [["uji.catat.id"]],
    },
    {
        "id": "uji.catat.id",
        "type": "function",
        "z": "uji.catat.tab",
        "name": "Ambil id kiriman",
        "func": 'msg.payload = msg.req.headers["x-simpul-delivery"];\nreturn msg;',
        "outputs": 1,
        "wires": [["uji.catat.berkas"]],
    },
    {
        "id": "uji.catat.berkas",
        "type": "file",
        "z": "uji.catat.tab",
        "name": "Catat",
        "filename": "__FILE__",
        "filenameType": "str",
        "appendNewline": True,
        "createDir": True,
        "overwriteFile": "false",
        "encoding": "none",
        "wires": [["uji.catat.jawab"]],
    },
    {"id": "uji.catat.jawab", "type": "http response", "z": "uji.catat.tab", "statusCode": "200", "wires": []},
]


class NodeRedProcess:
    """Node-RED from flows/node_modules on a fixed loopback port and user folder, started and stopped by PID."""

    def __init__(self, user_dir: Path) -> None:
        self.user_dir = user_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings_path = user_dir / "settings.js"
        self.settings_path.write_text(
            SETTINGS_TEMPLATE
            % {
                "port": self.port,
                "user_dir": json.dumps(str(user_dir)),
                "username": json.dumps(USERNAME),
                "password_hash": json.dumps(_bcrypt_hash(PASSWORD)),
            },
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.user_dir / "node-red.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(NODE_RED_BIN), "--settings", str(self.settings_path), "--userDir", str(self.user_dir)],
                cwd=self.user_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(lambda: _answers(f"{self.url}/auth/login"), what="Node-RED to start", seconds=30)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _answers(url: str, expected: int = 200, **post: Any) -> bool:
    try:
        if post:
            return httpx.post(url, timeout=2, **post).status_code == expected
        return httpx.get(url, timeout=2).status_code == expected
    except httpx.TransportError:
        return False


@pytest.fixture
def node_red(tmp_path: Path) -> Iterator[NodeRedProcess]:
    if not NODE_RED_BIN.exists() or shutil.which("node") is None:
        pytest.skip("Node-RED is not installed: run `make test`, or `npm ci --prefix flows`, with node and npm on PATH")
    user_dir = tmp_path / "node-red"
    user_dir.mkdir()
    process = NodeRedProcess(user_dir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_node_red_restart(node_red: NodeRedProcess, tmp_path: Path) -> None:
    received = node_red.user_dir / "diterima.txt"
    recorder = json.loads(json.dumps(RECORDER_FLOW).replace("__FILE__", str(received)))
    settings = NodeRedSettings(url=node_red.url, username=USERNAME, password=PASSWORD)
    with NodeRedClient(settings) as client:
        client.deploy([*load_flow_files(FLOWS), *recorder])
    # http-in endpoints respond with 404 for a moment after a deployment.
    wait_for(lambda: _answers(f"{node_red.url}/simpul/alert", json={}), what="the deployed flows to answer")

    def delivered() -> list[str]:
        return received.read_text().split() if received.exists() else []

    hub_folder = tmp_path / "hub"
    hub_folder.mkdir()
    config = (
        BASE_CONFIG + "sources:\n" + GATEWAY_SOURCE + SIAGA_RULE % ("node_red: {flow: uji-catat, path: /uji/catat}")
    )
    hub = Hub.start(hub_folder, config, env={"SIMPUL_NODE_RED_URL": node_red.url})
    try:
        restart_mid_stream(
            hub,
            stop_peer=node_red.stop,
            start_peer=node_red.start,
            delivered=delivered,
            peer_healthy=lambda health: bool(health["actions"]["node_red"]["healthy"]),
        )
    finally:
        hub.stop()


# --- a Mosquitto broker of the test's own -------------------------------------------------------

MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")

MQTT_SOURCE = """\
  - id: broker
    type: mqtt
    port: __PORT__
    topics:
      - topic: __PREFIX__/sungai/+/level
        device: {topic_segment: 2}
        metric: level
        value: level
        timestamp: time
        id: id
"""


class Mosquitto:
    """A Mosquitto process on a free loopback port with persistence in its own folder, so that a
    persistent session survives its restart; never the system broker on 1883."""

    def __init__(self, folder: Path) -> None:
        assert MOSQUITTO is not None
        self.folder = folder
        self.port = free_port()
        self.config_path = folder / "mosquitto.conf"
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {folder}/\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self._answers, what="Mosquitto to accept connections", seconds=15)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        process.wait(timeout=15)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


class PumpListener:
    """A persistent-session subscriber to the pump command topics: the broker keeps its QoS 1
    messages while it is away, including across the broker's restart."""

    def __init__(self, port: int, prefix: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._topic = f"{prefix}/pompa/#"
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"simpul-uji-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = lambda client, *_args: client.subscribe(self._topic, qos=1)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the broker did not confirm the subscription"

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))


def publish_reading(port: int, prefix: str, device: str, value: float) -> None:
    """Publish one reading with its id and timestamp (QoS 1) and wait for the broker's acknowledgement."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"simpul-uji-kirim-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        payload = {"id": uuid.uuid4().hex, "time": datetime.now(UTC).isoformat(), "level": value}
        info = client.publish(f"{prefix}/sungai/{device}/level", json.dumps(payload), qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto)")
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    running = Mosquitto(folder)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def prefix() -> str:
    return f"simpul-uji-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def listener(broker: Mosquitto, prefix: str) -> Iterator[PumpListener]:
    subscriber = PumpListener(broker.port, prefix)
    try:
        yield subscriber
    finally:
        subscriber.close()


def test_mqtt_broker_restart(broker: Mosquitto, listener: PumpListener, prefix: str, tmp_path: Path) -> None:
    pumps = "".join(
        f"  - id: pompa-{n}\n    name: Pompa {n}\n    agency: bpbd\n    kind: pump\n"
        f"    commands: {{via: broker, topic: '{prefix}/pompa/{{device.id}}/set',"
        " payloads: {turn_on: 'ON {value}'}}\n"
        for n in range(1, 5)
    )
    rules = "rules:\n" + "".join(
        f"  - id: pompa-{n}\n    name: Pompa {n}\n    agency: bpbd\n"
        f"    when: {{device: pos-{n}, metric: level, above: 850}}\n"
        f"    then: [{{command: {{device: pompa-{n}, action: turn_on}}}}]\n"
        for n in range(1, 5)
    )
    sources = "sources:\n" + GATEWAY_SOURCE + MQTT_SOURCE.replace("__PORT__", str(broker.port))
    config = BASE_CONFIG + pumps + sources.replace("__PREFIX__", prefix) + rules
    hub_folder = tmp_path / "hub"
    hub_folder.mkdir()
    hub = Hub.start(hub_folder, config)

    def broker_healthy(health: dict[str, Any]) -> bool:
        commands = health["commands"].get("broker", {"connected": True})
        return bool(health["sources"]["broker"]["healthy"] and commands["connected"])

    def start_broker() -> None:
        broker.start()
        # The hub's subscription is a clean session, so readings published before it is back are not for it.
        wait_for(lambda: hub.health()["sources"]["broker"]["connected"], what="the hub to reconnect to the broker")

    def delivered() -> list[str]:
        # A command's topic names the pump and its payload the level that fired it, so each run has its own message.
        run_of = {(run.payload["topic"], run.payload["payload"].encode()): str(run.id) for run in hub.runs()}
        return [run_of.get(message, repr(message)) for message in listener.received()]

    try:
        wait_for(lambda: hub.health()["sources"]["broker"]["connected"], what="the hub to connect to the broker")
        restart_mid_stream(
            hub,
            stop_peer=broker.stop,
            start_peer=start_broker,
            delivered=delivered,
            peer_healthy=broker_healthy,
            send_while_up=lambda device, value: publish_reading(broker.port, prefix, device, value),
        )
        sources = [reading.source_id for reading in hub.readings()]
        assert sources.count("broker") == 4
        assert sources.count("gateway") == 6
    finally:
        hub.stop()
