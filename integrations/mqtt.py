"""An MQTT subscriber that turns messages on configured topics into readings.

The client runs on paho-mqtt's network thread (``loop_start``). paho reconnects by itself
after a lost connection, waiting ``MIN_RECONNECT_DELAY`` seconds at first and doubling the wait
up to ``MAX_RECONNECT_DELAY``. The session is clean, so ``on_connect`` subscribes again on
every connection. Each message is mapped to readings and handed to ``emit`` without waiting
for the commit, so a slow store does not stall the network thread.

Payloads:

- ``value: payload`` (or no ``value``): the payload is UTF-8 text holding one value.
- otherwise the payload is a JSON object, and ``value``, ``metrics``, ``timestamp`` and ``id``
  are dotted field paths in it (``data.level``; a number indexes a list).
- A missing value or timestamp field becomes a reading without that field, which the hub
  rejects and stores as ``missing_value`` or ``missing_timestamp``. A payload that is not
  UTF-8, not JSON where JSON is expected, or a topic too short for ``topic_segment`` cannot
  become a reading: it is counted as ``unreadable`` and logged at WARNING with the topic.
- An empty payload is ignored, because publishing one is how MQTT deletes a retained message.

Retained messages: the broker sends the retained message of every matching topic after each
subscribe, so after every (re)connect. The feed applies these rules so that they do not fire
rules twice:

1. A retained message whose payload is identical to the last payload this feed received on
   the same topic is skipped.
2. For a topic without ``timestamp`` (stamped at arrival), a retained message that arrives
   after a reconnect is skipped, because its age is unknown: it may be older than live
   messages already received, and stamping it now would store an old value as new.
3. Otherwise a retained message is processed. With ``timestamp`` or ``id`` fields, the store
   treats a repeat as a duplicate and an older reading as late, so neither fires again. On the
   first connection of a feed, a retained message stamped at arrival gives the hub the current
   value at start-up; after a hub restart that value is stored again as a new reading, and the
   engine does not fire an instance that is still firing.

Skipped retained messages are counted as ``retained_skipped`` in ``health()``.

NOTE: the session is clean and paho acknowledges QoS 1 messages on receipt, before the hub has
committed them, so messages in flight when the hub stops are lost. A persistent session with
manual acknowledgement after the commit would close that gap.

``MqttCommandExecutor`` carries out ``command`` action runs for the outbox worker: it publishes
the run's message to an actuator's topic through its own client, separate from the feed's.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from integrations.base import Emit, ReadingSubmitter, Stop
from integrations.json_paths import field_value, timestamp_value
from rules.config import Config, MqttSource, MqttTopic
from rules.errors import PermanentActionError, RetryableActionError
from rules.readings import RawReading
from rules.secrets import MissingSecret, resolve_secret
from rules.store.models import ActionRun

logger = logging.getLogger(__name__)

MIN_RECONNECT_DELAY = 1
MAX_RECONNECT_DELAY = 60
# An unreadable topic is logged on its first message and then once per this many messages.
WARN_EVERY = 100
COMMAND_MAX_ATTEMPTS = 6
COMMAND_RUN_FIELDS = ("via", "topic", "payload", "qos", "retain")


class UnreadableMessage(ValueError):
    """Raised when a message cannot become a reading. The exception message gives the reason."""


class MqttFeed(ReadingSubmitter):
    """Subscribes to the topics of a ``type: mqtt`` source and emits their readings."""

    kind = "mqtt"

    def __init__(self, source: MqttSource, config: Config) -> None:
        self.id = source.id
        self.source = source
        self.config = config
        self.connected = False
        self.last_error: str | None = None
        self.messages = 0
        self.rejected = 0
        self.unreadable = 0
        self.retained_skipped = 0
        self.reconnects = 0
        self._connections = 0
        self._last_payload: dict[str, bytes] = {}
        self._unreadable_by_topic: dict[str, int] = {}
        self._lock = threading.Lock()
        self._emit: Emit | None = None
        self.client = self._build_client()

    def _build_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.source.client_id or "",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if self.source.username is not None:
            password = resolve_secret(self.source.password) if self.source.password is not None else None
            client.username_pw_set(self.source.username, password)
        client.reconnect_delay_set(MIN_RECONNECT_DELAY, MAX_RECONNECT_DELAY)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def start(self, emit: Emit) -> Stop:
        self._emit = emit
        self.client.connect_async(self.source.host, self.source.port, self.source.keepalive)
        self.client.loop_start()
        logger.info("mqtt source %s: connecting to %s:%d", self.id, self.source.host, self.source.port)

        def stop() -> None:
            self.client.disconnect()
            self.client.loop_stop()
            self.connected = False
            logger.info("mqtt source %s: stopped", self.id)

        return stop

    def health(self) -> dict[str, Any]:
        return {
            "healthy": self.connected,
            "connected": self.connected,
            "last_error": self.last_error,
            "messages": self.messages,
            "rejected": self.rejected,
            "unreadable": self.unreadable,
            "retained_skipped": self.retained_skipped,
            "reconnects": self.reconnects,
        }

    # --- paho callbacks, called on the network thread ---

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"the broker refused the connection: {reason_code}"
            logger.warning("mqtt source %s: %s", self.id, self.last_error)
            return

        self._connections += 1
        self.reconnects = self._connections - 1
        self.connected = True
        logger.info(
            "mqtt source %s: connected to %s:%d (connection %d)",
            self.id,
            self.source.host,
            self.source.port,
            self._connections,
        )
        subscriptions: list[tuple[str, int]] = [(topic.topic, self.source.qos) for topic in self.source.topics]
        result, _mid = client.subscribe(subscriptions)
        if result != mqtt.MQTT_ERR_SUCCESS:
            self.last_error = f"subscribe failed: {mqtt.error_string(result)}"
            logger.warning("mqtt source %s: %s", self.id, self.last_error)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        self.connected = False
        self.last_error = f"cannot connect to {self.source.host}:{self.source.port}"
        logger.warning("mqtt source %s: %s; retrying", self.id, self.last_error)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        was_connected = self.connected
        self.connected = False
        if reason_code == 0:
            return
        self.last_error = f"connection lost: {reason_code}"
        if was_connected:
            logger.warning("mqtt source %s: %s; reconnecting", self.id, self.last_error)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages += 1
        if not message.payload:
            return
        topic = self._topic_for(message.topic)
        if topic is None:
            return
        if message.retain and self._skip_retained(message, topic):
            self.retained_skipped += 1
            logger.debug("mqtt source %s: skipped retained message on %s", self.id, message.topic)
            return
        payload = bytes(message.payload)
        self._last_payload[message.topic] = payload

        try:
            readings = self.readings(topic, message.topic, payload, datetime.now(UTC))
        except UnreadableMessage as error:
            self._count_unreadable(message.topic, str(error))
            return
        self._submit(readings)

    # --- mapping ---

    def readings(self, topic: MqttTopic, name: str, payload: bytes, arrived: datetime) -> list[RawReading]:
        """Map one message on topic ``name`` to readings; raise UnreadableMessage when none can be made."""
        device = self._device(topic, name)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise UnreadableMessage("the payload is not UTF-8 text") from None

        if not topic.is_json:
            assert topic.metric is not None
            return [RawReading(device, topic.metric, text.strip(), arrived)]

        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise UnreadableMessage(f"the payload is not valid JSON: {error}") from None

        ts = arrived if topic.timestamp is None else timestamp_value(field_value(document, topic.timestamp))
        sender_id = None if topic.id is None else field_value(document, topic.id)
        if topic.metric is not None:
            assert topic.value is not None
            reading_id = None if sender_id is None else str(sender_id)
            return [RawReading(device, topic.metric, field_value(document, topic.value), ts, reading_id)]

        readings = []
        for field_path, metric in topic.metrics.items():
            # One message yields one reading per metric, so each reading id names its metric.
            reading_id = None if sender_id is None else f"{sender_id}/{metric}"
            readings.append(RawReading(device, metric, field_value(document, field_path), ts, reading_id))
        return readings

    def _device(self, topic: MqttTopic, name: str) -> str:
        if isinstance(topic.device, str):
            return topic.device
        levels = name.split("/")
        position = topic.device.topic_segment
        if position >= len(levels) or not levels[position]:
            raise UnreadableMessage(f"the topic has no level {position} to take the device id from")
        return levels[position]

    def _topic_for(self, name: str) -> MqttTopic | None:
        for topic in self.source.topics:
            if mqtt.topic_matches_sub(topic.topic, name):
                return topic
        return None

    def _skip_retained(self, message: mqtt.MQTTMessage, topic: MqttTopic) -> bool:
        same_payload = self._last_payload.get(message.topic) == message.payload
        after_reconnect = self._connections > 1
        stamped_on_arrival = topic.timestamp is None
        return same_payload or (after_reconnect and stamped_on_arrival)

    # --- handing readings to the hub ---

    def _count_unreadable(self, name: str, reason: str) -> None:
        self.unreadable += 1
        count = self._unreadable_by_topic.get(name, 0) + 1
        self._unreadable_by_topic[name] = count
        if count == 1 or count % WARN_EVERY == 0:
            logger.warning("mqtt source %s: unreadable message on %s (%d so far): %s", self.id, name, count, reason)


# --- commands to actuators ---------------------------------------------------------------------


class _BrokerConnection:
    """One paho client that publishes commands to the broker of an mqtt source.

    paho connects on its network thread and reconnects by itself after a lost connection.
    ``attempt_ended`` is set once the first connection attempt has succeeded or failed, so a
    run against a broker that is down fails at once instead of waiting for the timeout.
    """

    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.connected = threading.Event()
        self.attempt_ended = threading.Event()
        self.last_error: str | None = None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, clean_session=True)
        if source.username is not None:
            password = resolve_secret(source.password) if source.password is not None else None
            self.client.username_pw_set(source.username, password)
        self.client.reconnect_delay_set(MIN_RECONNECT_DELAY, MAX_RECONNECT_DELAY)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect

    def open(self) -> None:
        self.client.connect_async(self.source.host, self.source.port, self.source.keepalive)
        self.client.loop_start()
        logger.info(
            "mqtt source %s: command client connecting to %s:%d", self.source.id, self.source.host, self.source.port
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def wait_connected(self, timeout_seconds: float) -> bool:
        if self.connected.is_set():
            return True
        self.attempt_ended.wait(timeout_seconds)
        return self.connected.is_set()

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"the broker refused the connection: {reason_code}"
            logger.warning("mqtt source %s: command client: %s", self.source.id, self.last_error)
        else:
            self.last_error = None
            self.connected.set()
            logger.info("mqtt source %s: command client connected", self.source.id)
        self.attempt_ended.set()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        first_failure = self.last_error is None
        self.last_error = f"cannot connect to {self.source.host}:{self.source.port}"
        if first_failure:
            logger.warning("mqtt source %s: command client: %s; retrying", self.source.id, self.last_error)
        self.attempt_ended.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        self.connected.clear()
        if reason_code != 0:
            self.last_error = f"connection lost: {reason_code}"
            logger.warning("mqtt source %s: command client: %s; reconnecting", self.source.id, self.last_error)


class MqttCommandExecutor:
    """Publishes ``command`` action runs to actuators, through the broker of the mqtt source
    that the run's ``via`` names.

    Each source gets its own client, connected on the first run for it. A run succeeds once
    the broker has acknowledged the message (QoS 1 and 2) or the message has been written to
    the socket (QoS 0). Delivery is at least once: when the acknowledgement is lost, the outbox
    retries and the actuator receives the command again.
    """

    def __init__(
        self,
        sources: Iterable[MqttSource],
        *,
        connect_timeout_seconds: float = 5.0,
        publish_timeout_seconds: float = 10.0,
        max_attempts: int = COMMAND_MAX_ATTEMPTS,
    ) -> None:
        self.sources = {source.id: source for source in sources}
        self.connect_timeout_seconds = connect_timeout_seconds
        self.publish_timeout_seconds = publish_timeout_seconds
        self._max_attempts = max_attempts
        self._connections: dict[str, _BrokerConnection] = {}
        self._lock = threading.Lock()

    def max_attempts(self, run: ActionRun) -> int:
        return self._max_attempts

    def health(self) -> dict[str, Any]:
        with self._lock:
            connections = dict(self._connections)
        return {
            source_id: {"connected": connection.connected.is_set(), "last_error": connection.last_error}
            for source_id, connection in connections.items()
        }

    def use_sources(self, sources: Iterable[MqttSource]) -> None:
        """Switch to the mqtt sources of a reloaded config.

        Clients of sources that changed or are gone are closed, so the next run through them
        connects with the new settings.
        """
        new = {source.id: source for source in sources}
        with self._lock:
            stale = [source_id for source_id in self._connections if new.get(source_id) != self.sources.get(source_id)]
            closing = [self._connections.pop(source_id) for source_id in stale]
            self.sources = new
        for connection in closing:
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()

    def run(self, run: ActionRun) -> None:
        """Publish the run's message once and wait for the broker to acknowledge it.

        Raises RetryableActionError when the broker cannot be reached or the publish times out.
        Raises PermanentActionError for a payload without the message fields, an unknown
        source or a missing password secret.
        """
        missing = [name for name in COMMAND_RUN_FIELDS if name not in run.payload]
        if missing:
            raise PermanentActionError(f"command run {run.id} has no {', '.join(missing)} in its payload")
        source_id = str(run.payload["via"])
        topic = str(run.payload["topic"])
        where = f"mqtt source {source_id}, topic {topic}"
        connection = self._connection(source_id)

        if not connection.wait_connected(self.connect_timeout_seconds):
            reason = connection.last_error or f"not connected within {self.connect_timeout_seconds:g} s"
            raise RetryableActionError(f"{where}: {reason}")

        info = connection.client.publish(
            topic,
            str(run.payload["payload"]).encode("utf-8"),
            qos=int(run.payload["qos"]),
            retain=bool(run.payload["retain"]),
        )
        try:
            info.wait_for_publish(self.publish_timeout_seconds)
        except (ValueError, RuntimeError) as error:
            self._drop(source_id, connection)
            raise RetryableActionError(f"{where}: publish failed: {error}") from error
        if not info.is_published():
            self._drop(source_id, connection)
            raise RetryableActionError(f"{where}: publish timed out after {self.publish_timeout_seconds:g} s")

    def _connection(self, source_id: str) -> _BrokerConnection:
        with self._lock:
            connection = self._connections.get(source_id)
            if connection is not None:
                return connection
            source = self.sources.get(source_id)
            if source is None:
                raise PermanentActionError(f"mqtt source {source_id} is not in the config, so it cannot send commands")
            try:
                connection = _BrokerConnection(source)
            except MissingSecret as error:
                raise PermanentActionError(f"mqtt source {source_id}: {error}") from error
            connection.open()
            self._connections[source_id] = connection
            return connection

    def _drop(self, source_id: str, connection: _BrokerConnection) -> None:
        """Close a client after a failed publish, so that paho cannot send its queued copy later
        and the outbox retry stays the only resend."""
        with self._lock:
            if self._connections.get(source_id) is connection:
                del self._connections[source_id]
        connection.close()
