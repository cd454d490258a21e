"""The MQTT source against the Mosquitto broker on 127.0.0.1:1883, with a real pipeline, ingestor
and SQLite store.

Every test uses its own topic prefix, so retained messages of one test never reach another, and
clears the retained messages it published. Tests that need the broker are skipped when nothing
accepts connections on that port.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine as DbEngine

from integrations.mqtt import MqttFeed
from rules.config import Config, MqttSource
from rules.ingest import Ingestor
from rules.loader import load_config_text
from rules.pipeline import Pipeline
from tests.conftest import fetch_alerts, fetch_readings, fetch_rejected, load_config

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883
WAIT_SECONDS = 10.0

CONFIG = """
agencies:
  - {{id: dinas-sda, name: Dinas SDA}}
kinds:
  water_level:
    metrics:
      level: {{unit: cm, min: -100, max: 2000}}
      battery: {{unit: V, min: 0, max: 20}}
devices:
  - {{id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}}
  - {{id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level}}
sources:
  - id: broker
    type: mqtt
    port: {port}
    timezone: Asia/Jakarta
    topics:
      - topic: {prefix}/sungai/+/level
        device: {{topic_segment: 2}}
        metric: level
      - topic: {prefix}/logger/manggarai
        device: manggarai
        metrics: {{data.level: level, data.battery: battery}}
        timestamp: time
        id: seq
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    when: {{device: manggarai, metric: level, above: 850}}
    then:
      - alert: {{message: "Tinggi muka air {{value}} cm di {{device.name}}"}}
"""


def broker_answers() -> bool:
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=1):
            return True
    except OSError:
        return False


def closed_port() -> int:
    """Return a loopback port that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind((BROKER_HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until(condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Publisher:
    """A plain paho client that publishes test messages and clears the retained ones afterwards."""

    def __init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"simpul-test-{uuid.uuid4().hex[:8]}")
        self.client.connect(BROKER_HOST, BROKER_PORT)
        self.client.loop_start()
        self.retained: set[str] = set()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=WAIT_SECONDS)
        if retain:
            self.retained.add(topic)

    def close(self) -> None:
        for topic in self.retained:
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=WAIT_SECONDS)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker() -> None:
    if not broker_answers():
        pytest.skip(f"no MQTT broker answers on {BROKER_HOST}:{BROKER_PORT}: start mosquitto (.ci/run does)")


@pytest.fixture
def prefix() -> str:
    return f"simpul-test-{uuid.uuid4().hex}"


@pytest.fixture
def publisher(broker: None) -> Iterator[Publisher]:
    client = Publisher()
    yield client
    client.close()


@pytest.fixture
def config(prefix: str) -> Config:
    return load_config(CONFIG.format(prefix=prefix, port=BROKER_PORT))


@pytest.fixture
def ingestor(db: DbEngine, config: Config) -> Iterator[Ingestor]:
    running = Ingestor(Pipeline(config, db, event_clock=False))
    running.start()
    yield running
    running.stop()


class Feeds:
    """Starts feeds on the test ingestor and stops whichever are still running at the end."""

    def __init__(self, config: Config, ingestor: Ingestor) -> None:
        self.config = config
        self.ingestor = ingestor
        self.stops: list[Callable[[], None]] = []

    def start(self, source: MqttSource | None = None) -> tuple[MqttFeed, Callable[[], None]]:
        mqtt_source = source or self.config.sources[0]
        assert isinstance(mqtt_source, MqttSource)
        feed = MqttFeed(mqtt_source, self.config)
        stop = feed.start(self.ingestor.submit)
        self.stops.append(stop)
        return feed, stop

    def start_subscribed(self) -> MqttFeed:
        """Start a feed and wait until the broker has confirmed the subscriptions."""
        feed, _stop = self.start()
        assert wait_until(lambda: feed.connected), "the feed did not connect to the broker"
        # A round trip through the broker after the SUBSCRIBE shows that it is in effect.
        feed.client.publish(f"simpul-test-ready/{uuid.uuid4().hex}", b"").wait_for_publish(timeout=WAIT_SECONDS)
        time.sleep(0.2)
        return feed


@pytest.fixture
def feeds(config: Config, ingestor: Ingestor) -> Iterator[Feeds]:
    started = Feeds(config, ingestor)
    yield started
    for stop in started.stops:
        stop()


# --- config -----------------------------------------------------------------------------------


def test_mqtt_source_config_is_accepted(prefix: str) -> None:
    loaded = load_config_text(CONFIG.format(prefix=prefix, port=BROKER_PORT), "config.yaml")

    assert loaded.problems == []
    assert isinstance(loaded.config.sources[0], MqttSource)


@pytest.mark.parametrize(
    ("topic_yaml", "path", "code"),
    [
        ("{topic: sungai/#/level, device: depok, metric: level}", "sources[0].topics[0].topic", "mqtt_topic_filter"),
        (
            "{topic: sungai/depok, device: depok, metric: level, metrics: {a: level}}",
            "sources[0].topics[0]",
            "mqtt_metric_choice",
        ),
        (
            "{topic: sungai/depok, device: depok, metric: level, timestamp: time}",
            "sources[0].topics[0]",
            "mqtt_fields_need_json",
        ),
        ("{topic: sungai/+, device: {topic_segment: 2}, metric: level}", "sources[0].topics[0]", "mqtt_segment_range"),
        ("{topic: sungai/depok, device: depk, metric: level}", "sources[0].topics[0].device", "unknown_device"),
        ("{topic: sungai/depok, device: depok, metric: levl}", "sources[0].topics[0].metric", "unknown_metric"),
    ],
)
def test_bad_mqtt_topic_is_reported(topic_yaml: str, path: str, code: str) -> None:
    text = CONFIG.format(prefix="p", port=BROKER_PORT).split("sources:")[0]
    text += f"sources:\n  - id: broker\n    type: mqtt\n    topics:\n      - {topic_yaml}\n"

    loaded = load_config_text(text, "config.yaml")

    assert [(problem.path, problem.code) for problem in loaded.problems] == [(path, code)]


def test_password_needs_username() -> None:
    text = (
        "sources:\n  - {id: b, type: mqtt, password: '${MQTT_PASSWORD}', topics: [{topic: a, device: d, metric: m}]}\n"
    )

    loaded = load_config_text(text, "config.yaml")

    assert [problem.code for problem in loaded.problems] == ["mqtt_password_without_username"]


# --- messages to readings ---------------------------------------------------------------------


def test_plain_value_takes_device_from_topic(db: DbEngine, prefix: str, publisher: Publisher, feeds: Feeds) -> None:
    feeds.start_subscribed()

    publisher.publish(f"{prefix}/sungai/depok/level", "812.5")

    assert wait_until(lambda: len(fetch_readings(db)) == 1)
    reading = fetch_readings(db)[0]
    assert reading.device_id == "depok"
    assert reading.metric == "level"
    assert reading.value_num == 812.5
    assert reading.source_id == "broker"


def test_json_payload_gives_several_metrics(db: DbEngine, prefix: str, publisher: Publisher, feeds: Feeds) -> None:
    feeds.start_subscribed()
    payload = '{"seq": 41, "time": "2025-01-06T10:00:00", "data": {"level": 700, "battery": 12.6}}'

    publisher.publish(f"{prefix}/logger/manggarai", payload)

    assert wait_until(lambda: len(fetch_readings(db)) == 2)
    readings = {reading.metric: reading for reading in fetch_readings(db)}
    assert readings["level"].value_num == 700
    assert readings["battery"].value_num == 12.6
    # The naive time is read in the source's zone, Asia/Jakarta (UTC+7).
    assert readings["level"].ts == datetime(2025, 1, 6, 3, 0, tzinfo=UTC)
    assert readings["battery"].uid == "41/battery"


def test_reading_above_threshold_opens_alert(db: DbEngine, prefix: str, publisher: Publisher, feeds: Feeds) -> None:
    feeds.start_subscribed()

    publisher.publish(f"{prefix}/sungai/manggarai/level", "900")

    assert wait_until(lambda: len(fetch_alerts(db)) == 1)
    alert = fetch_alerts(db)[0]
    assert alert.rule_id == "manggarai-siaga-2"
    assert alert.device_id == "manggarai"


def test_bad_payloads_do_not_stop_feed(db: DbEngine, prefix: str, publisher: Publisher, feeds: Feeds) -> None:
    feed = feeds.start_subscribed()

    publisher.publish(f"{prefix}/logger/manggarai", "not json {")
    publisher.publish(f"{prefix}/sungai/depok/level", b"\xff\xfe")
    publisher.publish(
        f"{prefix}/logger/manggarai", '{"seq": 1, "time": "2025-01-06T10:00:00", "data": {"battery": 12}}'
    )
    publisher.publish(f"{prefix}/sungai/depok/level", "sepuluh")
    publisher.publish(f"{prefix}/sungai/depok/level", "640")

    assert wait_until(lambda: any(reading.device_id == "depok" for reading in fetch_readings(db)))
    assert wait_until(lambda: feed.rejected == 2)
    assert feed.unreadable == 2
    assert sorted(row.reason for row in fetch_rejected(db)) == ["missing_value", "not_a_number"]
    assert feed.health()["healthy"] is True


# --- retained messages and reconnects ---------------------------------------------------------


def test_retained_message_fires_once_after_reconnect(
    db: DbEngine, prefix: str, publisher: Publisher, feeds: Feeds
) -> None:
    publisher.publish(f"{prefix}/sungai/manggarai/level", "900", retain=True)
    feed = feeds.start_subscribed()
    assert wait_until(lambda: len(fetch_alerts(db)) == 1)

    # Shutting the socket down makes paho see a lost connection and reconnect by itself.
    sock = feed.client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)

    assert wait_until(lambda: feed.retained_skipped == 1)
    assert feed.health()["reconnects"] == 1
    assert len(fetch_readings(db)) == 1
    assert len(fetch_alerts(db)) == 1


def test_retained_message_fires_once_after_restart(
    db: DbEngine, prefix: str, publisher: Publisher, feeds: Feeds
) -> None:
    publisher.publish(f"{prefix}/sungai/manggarai/level", "900", retain=True)
    _first, stop_first = feeds.start()
    assert wait_until(lambda: len(fetch_alerts(db)) == 1)
    stop_first()

    second, _stop = feeds.start()

    # The new feed stores the retained value again, stamped at its arrival.
    assert wait_until(lambda: len(fetch_readings(db)) == 2)
    assert second.messages == 1
    assert len(fetch_alerts(db)) == 1


def test_unreachable_broker_is_reported_unhealthy(config: Config, feeds: Feeds) -> None:
    source = config.sources[0]
    assert isinstance(source, MqttSource)
    feed, stop = feeds.start(source.model_copy(update={"port": closed_port()}))

    assert wait_until(lambda: feed.last_error is not None)
    assert feed.health()["healthy"] is False
    started = time.monotonic()
    stop()
    assert time.monotonic() - started < 5
