"""The ``command`` action: a rule fires, the pipeline writes a pending run, and the outbox worker
publishes the command through the Mosquitto broker on 127.0.0.1:1883, where a subscriber in the
test receives it. Each test uses its own topic prefix, and tests that need the broker are
skipped when nothing accepts connections on that port.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine as DbEngine

from integrations.mqtt import MqttCommandExecutor
from rules.config import Config, MqttSource
from rules.loader import load_config_text
from rules.outbox import OutboxWorker
from rules.pipeline import Pipeline
from rules.readings import RawReading
from rules.store import ops
from rules.store.models import ActionRun, utc_now
from tests.conftest import at, fetch_action_runs
from tests.integrations.test_mqtt import BROKER_HOST, BROKER_PORT, WAIT_SECONDS, broker, closed_port, wait_until

__all__ = ["broker"]

# Long enough for a second copy of a command to arrive if one were sent.
QUIET_SECONDS = 0.5

CONFIG = """
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
  pump:
    metrics:
      state: {states: ["on", "off"]}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - id: pompa-manggarai-1
    name: Pompa Manggarai 1
    agency: dinas-sda
    kind: pump
    commands:
      via: broker
      topic: "__PREFIX__/pompa/{device.id}/set"
      payloads: {turn_on: "ON", turn_off: "OFF"}
      qos: 1
      retain: false
sources:
  - id: broker
    type: mqtt
    port: __PORT__
    topics:
      - {topic: __PREFIX__/sungai/+/level, device: {topic_segment: 2}, metric: level}
  - id: relay
    type: simulated
rules:
  - id: manggarai-pompa
    name: Pompa Manggarai menyala
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    then:
      - command: {device: pompa-manggarai-1, action: turn_on}
"""


def config_text(prefix: str, port: int = BROKER_PORT) -> str:
    return CONFIG.replace("__PREFIX__", prefix).replace("__PORT__", str(port))


def loaded_config(prefix: str, port: int = BROKER_PORT) -> Config:
    loaded = load_config_text(config_text(prefix, port), "config.yaml")
    assert loaded.problems == [], [problem.format("en") for problem in loaded.problems]
    return loaded.config


def mqtt_sources(config: Config) -> list[MqttSource]:
    return [source for source in config.sources if isinstance(source, MqttSource)]


def fire(pipeline: Pipeline) -> None:
    """Make the rule fire once: a level below the threshold, then one above it."""
    pipeline.process("test", [RawReading("manggarai", "level", 700, at(0))])
    pipeline.process("test", [RawReading("manggarai", "level", 900, at(1))])


def only_run(db: DbEngine) -> ActionRun:
    (run,) = fetch_action_runs(db)
    return run


class Subscriber:
    """A plain paho client that records every message on one topic filter."""

    def __init__(self, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"simpul-test-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda _client, _userdata, message: self.messages.append(message)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.connect(BROKER_HOST, BROKER_PORT)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(WAIT_SECONDS), f"the broker did not confirm the subscription to {topic}"

    def payloads(self) -> list[bytes]:
        return [bytes(message.payload) for message in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def prefix() -> str:
    return f"simpul-test-{uuid.uuid4().hex}"


@pytest.fixture
def subscriber(broker: None, prefix: str) -> Iterator[Subscriber]:
    client = Subscriber(f"{prefix}/pompa/#")
    yield client
    client.close()


@pytest.fixture
def executors() -> Iterator[list[MqttCommandExecutor]]:
    """Collects the executors a test builds and closes them at the end."""
    built: list[MqttCommandExecutor] = []
    yield built
    for executor in built:
        executor.close()


def make_worker(db: DbEngine, config: Config, executors: list[MqttCommandExecutor]) -> OutboxWorker:
    executor = MqttCommandExecutor(mqtt_sources(config), connect_timeout_seconds=WAIT_SECONDS)
    executors.append(executor)
    return OutboxWorker(db, {"command": executor})


# --- publishing ---------------------------------------------------------------------------------


def test_firing_publishes_command_once(
    db: DbEngine, prefix: str, subscriber: Subscriber, executors: list[MqttCommandExecutor]
) -> None:
    config = loaded_config(prefix)
    fire(Pipeline(config, db, event_clock=True))
    pending = only_run(db)

    assert pending.status == ops.RUN_PENDING
    assert pending.type == "command"
    assert pending.target == "pompa-manggarai-1"
    assert pending.payload["topic"] == f"{prefix}/pompa/pompa-manggarai-1/set"

    worker = make_worker(db, config, executors)
    assert worker.run_once() == 1
    assert wait_until(lambda: len(subscriber.messages) >= 1), "the subscriber received no command"
    time.sleep(QUIET_SECONDS)

    assert subscriber.payloads() == [b"ON"]
    (message,) = subscriber.messages
    assert message.topic == f"{prefix}/pompa/pompa-manggarai-1/set"
    assert message.retain is False
    assert only_run(db).status == ops.RUN_SUCCEEDED
    assert only_run(db).attempts == 1


def test_succeeded_command_is_not_sent_again(
    db: DbEngine, prefix: str, subscriber: Subscriber, executors: list[MqttCommandExecutor]
) -> None:
    config = loaded_config(prefix)
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(db, config, executors)

    assert worker.run_once() == 1
    assert worker.run_once(utc_now() + timedelta(hours=1)) == 0
    assert wait_until(lambda: len(subscriber.messages) >= 1), "the subscriber received no command"
    time.sleep(QUIET_SECONDS)

    assert subscriber.payloads() == [b"ON"]


def test_unreachable_broker_keeps_command_until_sent(
    db: DbEngine, prefix: str, subscriber: Subscriber, executors: list[MqttCommandExecutor]
) -> None:
    down = loaded_config(prefix, port=closed_port())
    fire(Pipeline(down, db, event_clock=True))
    failing = make_worker(db, down, executors)

    first_try = utc_now()
    failing.run_once(first_try)
    after_first = only_run(db)
    failing.run_once(after_first.next_attempt_at)
    after_second = only_run(db)

    assert after_first.status == ops.RUN_FAILED
    assert after_second.status == ops.RUN_FAILED
    assert after_second.attempts == 2
    assert after_first.next_attempt_at is not None and after_second.next_attempt_at is not None
    first_wait = after_first.next_attempt_at - first_try
    second_wait = after_second.next_attempt_at - after_first.next_attempt_at
    assert second_wait > first_wait
    assert "cannot connect" in (after_second.last_error or "")
    assert subscriber.messages == []

    working = make_worker(db, loaded_config(prefix), executors)
    assert working.run_once(after_second.next_attempt_at) == 1
    assert wait_until(lambda: len(subscriber.messages) >= 1), "the subscriber received no command"
    time.sleep(QUIET_SECONDS)

    assert subscriber.payloads() == [b"ON"]
    assert only_run(db).status == ops.RUN_SUCCEEDED
    assert only_run(db).attempts == 3


def test_command_through_unknown_source_is_dead(
    db: DbEngine, prefix: str, executors: list[MqttCommandExecutor]
) -> None:
    config = loaded_config(prefix)
    fire(Pipeline(config, db, event_clock=True))
    executor = MqttCommandExecutor([])
    executors.append(executor)

    OutboxWorker(db, {"command": executor}).run_once()

    run = only_run(db)
    assert run.status == ops.RUN_DEAD
    assert "mqtt source broker is not in the config" in (run.last_error or "")


# --- config -------------------------------------------------------------------------------------


def problem_codes(text: str) -> list[tuple[str, str]]:
    return [(problem.path, problem.code) for problem in load_config_text(text, "config.yaml").problems]


def test_command_config_is_accepted(prefix: str) -> None:
    config = loaded_config(prefix)

    (rule,) = config.rules
    assert rule.then[0].type == "command"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "command: {device: pompa-manggarai-1, action: turn_on}",
            "command: {device: pompa-manggarai-9, action: turn_on}",
            [("rules[0].then[0].command.device", "unknown_device")],
        ),
        (
            "command: {device: pompa-manggarai-1, action: turn_on}",
            "command: {device: manggarai, action: turn_on}",
            [("rules[0].then[0].command.device", "device_without_commands")],
        ),
        (
            "command: {device: pompa-manggarai-1, action: turn_on}",
            "command: {device: pompa-manggarai-1, action: turn_of}",
            [("rules[0].then[0].command.action", "unknown_command")],
        ),
        (
            "via: broker",
            "via: brokr",
            [
                ("devices[1].commands.via", "unknown_command_source"),
                ("rules[0].then[0].command.device", "skipped_commands"),
            ],
        ),
        (
            "via: broker",
            "via: relay",
            [
                ("devices[1].commands.via", "command_source_not_mqtt"),
                ("rules[0].then[0].command.device", "skipped_commands"),
            ],
        ),
        (
            '{turn_on: "ON", turn_off: "OFF"}',
            '{turn_on: ON, turn_off: "OFF"}',
            [
                ("devices[1].commands.payloads.turn_on", "command_payload_boolean"),
                ("rules[0].then[0].command.device", "skipped_reference"),
            ],
        ),
        (
            'topic: "__PREFIX__/pompa/{device.id}/set"',
            'topic: "__PREFIX__/pompa/+/set"',
            [
                ("devices[1].commands.topic", "command_topic_wildcard"),
                ("rules[0].then[0].command.device", "skipped_reference"),
            ],
        ),
    ],
)
def test_invalid_command_config_is_reported(prefix: str, old: str, new: str, expected: list[tuple[str, str]]) -> None:
    text = CONFIG.replace(old, new)
    assert text != CONFIG, f"the test config does not contain {old!r}"

    assert problem_codes(text.replace("__PREFIX__", prefix).replace("__PORT__", str(BROKER_PORT))) == expected


def test_unknown_command_suggests_and_lists_commands(prefix: str) -> None:
    text = config_text(prefix).replace("action: turn_on}", "action: turn_of}")
    (problem,) = load_config_text(text, "config.yaml").problems

    assert "turn_off, turn_on" in problem.message("en")
    assert "turn_off" in problem.message("id")
    assert problem.params["suggestion"] == "turn_off"


# --- flapping -----------------------------------------------------------------------------------

# Fires at 0, 10, 20 and 30. The third and fourth firings each follow two others within an hour,
# and at 95 the instance has not fired for a whole hour, so it is stable again.
FLAPPING_STEPS = [(0, 900), (5, 700), (10, 900), (15, 700), (20, 900), (25, 700), (30, 900), (95, 910)]


def test_flapping_holds_then_releases_commands(db: DbEngine, prefix: str) -> None:
    text = config_text(prefix).replace("    then:\n", "    flapping: {fires: 3, window: 1h}\n    then:\n")
    loaded = load_config_text(text, "config.yaml")
    assert loaded.problems == []
    pipeline = Pipeline(loaded.config, db, event_clock=True)

    for minute, level in FLAPPING_STEPS:
        pipeline.process("test", [RawReading("manggarai", "level", level, at(minute))])

    commands = [run for run in fetch_action_runs(db) if run.type == "command"]
    assert [run.status for run in commands] == ["pending", "pending", "skipped", "pending"]
    released = commands[-1]
    assert released.target == "pompa-manggarai-1"
    assert released.payload["topic"] == f"{prefix}/pompa/pompa-manggarai-1/set"
    assert released.payload["payload"] == "ON"


def test_reloaded_sources_reach_the_new_broker(
    db: DbEngine, prefix: str, subscriber: Subscriber, executors: list[MqttCommandExecutor]
) -> None:
    down = loaded_config(prefix, port=closed_port())
    fire(Pipeline(down, db, event_clock=True))
    executor = MqttCommandExecutor(mqtt_sources(down), connect_timeout_seconds=WAIT_SECONDS)
    executors.append(executor)
    worker = OutboxWorker(db, {"command": executor})
    worker.run_once()
    failed = only_run(db)

    executor.use_sources(mqtt_sources(loaded_config(prefix)))
    assert worker.run_once(failed.next_attempt_at) == 1
    assert wait_until(lambda: len(subscriber.messages) >= 1), "the subscriber received no command"

    assert failed.status == ops.RUN_FAILED
    assert subscriber.payloads() == [b"ON"]
    assert only_run(db).status == ops.RUN_SUCCEEDED
