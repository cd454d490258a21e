"""Typed model of ``config.yaml``: agencies, kinds, devices, sources, outgoing webhooks and rules.

Only these models travel past the loader. Field-level checks (types, unknown keys, durations,
time zones, ranges inside one condition) live here; checks that need the whole config (a rule
naming a device that does not exist, duplicate ids, literal secrets) live in ``rules.validate``.

YAML 1.1, which PyYAML reads, turns bare ``on``/``off``/``yes``/``no`` into booleans. State
values are text, so booleans found where a state is expected are read back as ``on``/``off``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rules.durations import parse_duration

ENV_REFERENCE = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)\}$")
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ACTION_TYPES = ("alert", "dispatch", "webhook", "node_red", "command", "home_assistant", "log")


def config_error(code: str, english: str, **params: Any) -> PydanticCustomError:
    """Build a validation error of type ``simpul.<code>``; ``rules.i18n`` translates it by code.

    ``english`` is the pydantic message, with ``{name}`` filled from ``params``.
    """
    return PydanticCustomError(f"simpul.{code}", english, params)


def _to_duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            raise config_error(
                "invalid_duration",
                "invalid duration {input}: use a number with s, m, h or d, e.g. 15m or 1h30m",
                input=repr(value),
            ) from None
    if isinstance(value, bool):
        raise config_error(
            "invalid_duration",
            "invalid duration {input}: use a number with s, m, h or d, e.g. 15m or 1h30m",
            input=repr(value),
        )
    if isinstance(value, (int, float)):
        raise config_error(
            "duration_without_unit",
            "invalid duration {input}: add a unit, e.g. {input}m or {input}s",
            input=repr(value),
        )
    return value


def _to_state(value: Any) -> Any:
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
        raise config_error(
            "unknown_timezone",
            "unknown time zone {input}: use an IANA name such as Asia/Jakarta (WIB), "
            "Asia/Makassar (WITA) or Asia/Jayapura (WIT)",
            input=repr(value),
        ) from error
    return value


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]
State = Annotated[str, BeforeValidator(_to_state)]
TimeZone = Annotated[str, BeforeValidator(_check_zone)]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]


class Model(BaseModel):
    """Base of every config model: unknown keys are errors, and values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Model):
    """Reference to the environment variable that contains a secret, written in YAML as ``${NAME}``."""

    env: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = ENV_REFERENCE.match(value.strip())
            if not match:
                # The value is left out of the error so that the secret is not echoed.
                raise config_error(
                    "literal_secret",
                    "secrets must not be written in config.yaml: reference an environment "
                    "variable instead, e.g. ${SIMPUL_GATEWAY_TOKEN}",
                )
            return {"env": match.group(1)}
        return value


# --- agencies, kinds and devices -------------------------------------------------------------


class Team(Model):
    """A field team of an agency; dispatch jobs are assigned to teams."""

    id: Identifier
    name: str
    phone: str | None = None


class Agency(Model):
    """A tenant: owns devices, rules, teams and users."""

    id: Identifier
    name: str
    timezone: TimeZone = "Asia/Jakarta"
    teams: list[Team] = []


class Metric(Model):
    """One measured quantity of a device kind: numeric with a unit and a valid range, or a state."""

    unit: str | None = None
    min: float | None = None
    max: float | None = None
    states: list[State] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> Metric:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise config_error("metric_range", "min ({min}) must be less than max ({max})", min=self.min, max=self.max)
        if self.states is not None and (self.unit or self.min is not None or self.max is not None):
            raise config_error("state_metric_with_range", "a state metric (states) takes no unit, min or max")
        return self

    @property
    def is_state(self) -> bool:
        return self.states is not None


class Kind(Model):
    """A device kind: the metrics its devices report and how long they may stay silent."""

    name: str | None = None
    metrics: dict[str, Metric]
    offline_after: Duration | None = None


class Location(Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    address: str | None = None


def _to_payload_text(value: Any) -> Any:
    if isinstance(value, bool):
        raise config_error(
            "command_payload_boolean",
            'YAML reads a bare ON, OFF, yes or no as true or false: put the payload in quotes, e.g. "ON"',
        )
    return value


PayloadText = Annotated[str, BeforeValidator(_to_payload_text)]


class DeviceCommands(Model):
    """Command settings of an actuator: the MQTT topic that commands are published to on the
    broker of source ``via``, and the payload text of each command name.

    ``topic`` and the payloads are message templates, in which ``device`` is the commanded
    device and the other fields (value, rule, ...) come from the firing.
    """

    via: Identifier
    topic: str = Field(min_length=1)
    payloads: dict[str, PayloadText] = Field(min_length=1)
    qos: Literal[0, 1, 2] = 1
    retain: bool = False

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if "+" in value or "#" in value:
            raise config_error(
                "command_topic_wildcard",
                "invalid topic {input}: a topic to publish to has no + or # wildcards, e.g. pompa/{device.id}/set",
                input=repr(value),
            )
        return value


class Device(Model):
    """A registered sensor or actuator; ``commands`` is set on actuators that rules may command."""

    id: Identifier
    name: str
    agency: str
    kind: str
    location: Location | None = None
    tags: list[str] = []
    attributes: dict[str, float | int | str] = {}
    offline_after: Duration | None = None
    enabled: bool = True
    commands: DeviceCommands | None = None


# --- sources -----------------------------------------------------------------------------------


class HttpAuth(Model):
    """Sender authentication: a bearer token, or an HMAC-SHA256 signature of the body."""

    token: SecretRef | None = None
    hmac_secret: SecretRef | None = None
    max_skew: Duration = timedelta(minutes=5)

    @model_validator(mode="after")
    def _one_method(self) -> HttpAuth:
        if (self.token is None) == (self.hmac_secret is None):
            raise config_error("auth_method", "set exactly one of token or hmac_secret")
        return self


class Timestamp(Model):
    """Location and format of a file row's event time; ``format`` is strptime syntax or ``iso``."""

    column: str | None = None
    date_column: str | None = None
    time_column: str | None = None
    format: str = "iso"
    timezone: TimeZone | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> Timestamp:
        split = self.date_column is not None or self.time_column is not None
        if split == (self.column is not None):
            raise config_error("timestamp_layout", "set either column, or date_column with time_column")
        if split and (self.date_column is None or self.time_column is None):
            raise config_error("timestamp_split", "date_column and time_column go together")
        return self


class DeviceColumn(Model):
    """The column that names the device in a long file, and how its values map to device ids."""

    column: str
    map: dict[str, str] = {}
    strip: bool = True


class MetricColumn(Model):
    """A column that contains one metric; ``scale`` multiplies each value (e.g. 0.1 for mm to cm)."""

    column: str
    metric: str
    scale: float = 1.0


class WideColumn(MetricColumn):
    """A column of a wide file: one device's metric."""

    device: str


class FileSource(Model):
    """A CSV or JSONL export to replay, described entirely in config."""

    id: Identifier
    type: Literal["file"]
    format: Literal["csv", "jsonl"] = "csv"
    layout: Literal["long", "wide"] = "long"
    timestamp: Timestamp
    device: DeviceColumn | None = None
    metrics: list[MetricColumn] = []
    columns: list[WideColumn] = []
    missing: list[str] = ["", "-", "NaN", "nan", "null"]
    decimal: Literal[".", ","] = "."
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    skip_rows: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check_layout(self) -> FileSource:
        if self.layout == "long" and (self.device is None or not self.metrics):
            raise config_error("long_file_fields", "a long file needs device and metrics")
        if self.layout == "wide" and not self.columns:
            raise config_error("wide_file_columns", "a wide file needs columns, one per device and metric")
        return self


EPOCH_FORMATS = ("epoch", "epoch_ms")


class PayloadDevice(Model):
    """A device id read from a JSON field of each item, with ``map`` from the sender's names to device ids.

    A name that is not in ``map`` is used as the device id as it is.
    """

    path: str = Field(min_length=1)
    map: dict[str, str] = {}


class PayloadTimestamp(Model):
    """The event time of an item: its JSON field and the way to read it.

    ``format`` is ``iso`` (ISO 8601), ``epoch`` (seconds), ``epoch_ms`` (milliseconds) or
    strptime syntax such as ``%d/%m/%Y %H:%M``. ``timezone`` reads times without an offset, and
    without it they are read in the source's or the hub's time zone.
    """

    path: str = Field(min_length=1)
    format: str = "iso"
    timezone: TimeZone | None = None

    @model_validator(mode="after")
    def _check_format(self) -> PayloadTimestamp:
        known = self.format == "iso" or self.format in EPOCH_FORMATS
        if not known and "%" not in self.format:
            raise config_error(
                "timestamp_format",
                "invalid timestamp format {input}: use iso, epoch, epoch_ms or strptime syntax such as %d/%m/%Y %H:%M",
                input=repr(self.format),
            )
        if self.format in EPOCH_FORMATS and self.timezone is not None:
            raise config_error(
                "timezone_with_epoch",
                "epoch times are always UTC, so timezone does not apply to format {format}: remove timezone",
                format=self.format,
            )
        return self


class PayloadMapping(Model):
    """The mapping from a webhook source's own JSON payload to readings. Every path is a dotted JSON field path.

    ``readings`` is the list of items inside the payload, and without it the payload is one item.
    Each item gives one reading for ``metric`` (its value at ``value``), or one reading per entry
    of ``metrics`` (value path -> metric name). ``scale`` multiplies a metric's numbers, and
    ``decimal: ","`` reads numbers sent as text with a decimal comma.
    """

    readings: str | None = None
    device: Identifier | PayloadDevice
    metric: str | None = None
    value: str | None = None
    metrics: dict[str, str] = {}
    timestamp: PayloadTimestamp | None = None
    id: str | None = None
    scale: dict[str, float] = {}
    decimal: Literal[".", ","] = "."

    @model_validator(mode="after")
    def _check_metrics(self) -> PayloadMapping:
        if (self.metric is None) == (not self.metrics):
            raise config_error("mapping_metric_choice", "set exactly one of metric or metrics")
        if self.metric is not None and self.value is None:
            raise config_error(
                "mapping_value_missing", "metric needs value: the JSON field path of the value, e.g. data.level"
            )
        if self.metrics and self.value is not None:
            raise config_error(
                "mapping_value_with_metrics", "metrics already names the JSON field of each value: remove value"
            )
        mapped = {self.metric} if self.metric is not None else set(self.metrics.values())
        for metric, factor in self.scale.items():
            if metric not in mapped:
                raise config_error(
                    "mapping_scale_metric",
                    "scale names metric {metric}, which this mapping does not read: use one of {metrics}",
                    metric=metric,
                    metrics=", ".join(sorted(mapped)),
                )
            if factor == 0:
                raise config_error(
                    "mapping_scale_zero",
                    "scale for {metric} is 0, so every value would be 0: use the factor from the sender's unit, "
                    "e.g. 0.1 for mm to cm",
                    metric=metric,
                )
        return self

    def metric_paths(self) -> list[tuple[str, str]]:
        """List each (value path, metric name) that one item gives a reading for."""
        if self.metric is not None:
            assert self.value is not None
            return [(self.value, self.metric)]
        return list(self.metrics.items())


class HttpSource(Model):
    """A sender that posts readings to ``POST /api/v1/readings``.

    With ``mapping`` it may also post its own JSON format to ``POST /api/v1/webhooks/<id>``.
    """

    id: Identifier
    type: Literal["http"]
    auth: HttpAuth
    timezone: TimeZone | None = None
    mapping: PayloadMapping | None = None


class SimulatedSource(Model):
    """A clearly labelled simulated feed that drives the example config on a fresh machine."""

    id: Identifier
    type: Literal["simulated"]
    interval: Duration = timedelta(seconds=2)
    devices: list[str] = []


class TopicSegment(Model):
    """A device id taken from one level of the topic name, counted from 0 (``a/b/c``: 1 is ``b``)."""

    topic_segment: int = Field(ge=0)


class MqttTopic(Model):
    """One subscription of an MQTT source and how its messages become readings.

    ``value`` is ``payload`` when the whole payload is the value, or a dotted JSON field path
    such as ``data.level``. ``metrics`` maps JSON field paths to metric names for payloads that
    carry several values. ``timestamp`` and ``id`` are JSON field paths; without ``timestamp``
    a reading is stamped with its time of arrival.
    """

    topic: str
    device: Identifier | TopicSegment
    metric: str | None = None
    metrics: dict[str, str] = {}
    value: str | None = None
    timestamp: str | None = None
    id: str | None = None

    @field_validator("topic")
    @classmethod
    def _check_filter(cls, value: str) -> str:
        levels = value.split("/")
        wildcard_misused = any(("+" in level or "#" in level) and len(level) > 1 for level in levels)
        hash_not_last = "#" in levels[:-1]
        if not value or wildcard_misused or hash_not_last:
            raise config_error(
                "mqtt_topic_filter",
                "invalid MQTT topic filter {input}: + and # must fill a whole level, and # must be the last level, "
                "e.g. sungai/+/level or sungai/#",
                input=repr(value),
            )
        return value

    @model_validator(mode="after")
    def _check_mapping(self) -> MqttTopic:
        if (self.metric is None) == (not self.metrics):
            raise config_error("mqtt_metric_choice", "set exactly one of metric or metrics")
        if self.metrics and self.value is not None:
            raise config_error(
                "mqtt_value_with_metrics", "metrics already names the JSON field of each value: remove value"
            )
        plain = self.metric is not None and self.value in (None, "payload")
        if plain and (self.timestamp is not None or self.id is not None):
            raise config_error(
                "mqtt_fields_need_json",
                "timestamp and id are JSON field paths, so they need a JSON payload: "
                "set value to a JSON field path such as data.level",
            )
        levels = self.topic.split("/")
        if isinstance(self.device, TopicSegment) and "#" not in levels and self.device.topic_segment >= len(levels):
            raise config_error(
                "mqtt_segment_range",
                "topic_segment {segment} is past the end of {topic}, which has {count} levels counted from 0",
                segment=self.device.topic_segment,
                topic=self.topic,
                count=len(levels),
            )
        return self

    @property
    def is_json(self) -> bool:
        return self.value not in (None, "payload") or bool(self.metrics)


class MqttSource(Model):
    """An MQTT broker to subscribe to; ``timezone`` reads timestamps that carry no offset."""

    id: Identifier
    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password: SecretRef | None = None
    keepalive: int = Field(default=60, ge=5, le=65535)
    qos: Literal[0, 1, 2] = 1
    timezone: TimeZone | None = None
    topics: list[MqttTopic] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_login(self) -> MqttSource:
        if self.password is not None and self.username is None:
            raise config_error(
                "mqtt_password_without_username", "MQTT sends a password only with a username: set username"
            )
        return self


# Home Assistant entity ids are ``<domain>.<object_id>`` in lower case, e.g. ``sensor.tinggi_air``.
ENTITY_ID = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")


class HomeAssistantEntity(Model):
    """One Home Assistant entity whose state becomes readings of a device metric.

    The state is passed on as text: a numeric metric parses it (``"180.0"``), and an on/off
    entity such as a ``binary_sensor`` maps to a state metric with ``states: [on, off]``.
    """

    entity_id: str
    device: Identifier
    metric: str

    @field_validator("entity_id")
    @classmethod
    def _check_entity_id(cls, value: str) -> str:
        if not ENTITY_ID.match(value):
            raise config_error(
                "home_assistant_entity_id",
                "invalid entity id {input}: write it as domain.object_id, e.g. sensor.tinggi_air",
                input=repr(value),
            )
        return value


class HomeAssistantSource(Model):
    """A Home Assistant instance whose entity state changes are read over its websocket API, and
    whose services ``home_assistant`` actions call.

    ``token`` is a long-lived access token, created under the user's profile in Home Assistant.
    ``max_attempts`` is how often a service call is tried before its run is dead; the default
    spans about four minutes of waits, longer than Home Assistant takes to restart.
    """

    id: Identifier
    type: Literal["home_assistant"]
    url: str
    token: SecretRef
    entities: list[HomeAssistantEntity] = Field(min_length=1)
    max_attempts: int = Field(default=8, ge=1, le=50)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise config_error(
                "home_assistant_url",
                "invalid Home Assistant URL {input}: use the websocket API address, "
                "e.g. ws://127.0.0.1:8123/api/websocket",
                input=repr(value),
            )
        return value

    @model_validator(mode="after")
    def _check_entities(self) -> HomeAssistantSource:
        seen: set[str] = set()
        for entity in self.entities:
            if entity.entity_id in seen:
                raise config_error(
                    "home_assistant_duplicate_entity",
                    "entity {entity_id} is listed twice: map each entity once",
                    entity_id=entity.entity_id,
                )
            seen.add(entity.entity_id)
        return self


Source = Annotated[
    FileSource | HomeAssistantSource | HttpSource | MqttSource | SimulatedSource, Field(discriminator="type")
]


class WebhookTarget(Model):
    """An outgoing webhook receiver; every POST is signed with the secret."""

    id: Identifier
    url: str
    secret: SecretRef
    timeout: Duration = timedelta(seconds=10)
    max_attempts: int = Field(default=6, ge=1, le=50)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise config_error(
                "invalid_url", "invalid url {input}: it must start with http:// or https://", input=repr(value)
            )
        return value


# --- rules -------------------------------------------------------------------------------------


class AttributeRef(Model):
    """A threshold taken from the device's ``attributes``, so each device carries its own level."""

    attribute: str


Threshold = float | AttributeRef


class Change(Model):
    """Change of a metric over a window: the newest value minus the oldest value inside ``over``."""

    over: Duration
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Change:
        if self.above is None and self.below is None:
            raise config_error("change_without_bound", "change needs above or below")
        if self.above is not None and self.below is not None and self.below <= self.above:
            raise config_error(
                "change_band",
                "below ({below}) must be greater than above ({above}) for a change band",
                above=self.above,
                below=self.below,
            )
        return self


def check_comparison(comparison: Comparison) -> None:
    """Reject a comparison that tests nothing or that no value can satisfy."""
    if not comparison.has_test():
        raise config_error(
            "no_comparison",
            "no comparison: give above, below, at_least, at_most, between, equals, not_equals or change",
        )

    lower = comparison.above if comparison.above is not None else comparison.at_least
    upper = comparison.below if comparison.below is not None else comparison.at_most
    if isinstance(lower, (int, float)) and isinstance(upper, (int, float)) and upper <= lower:
        raise config_error(
            "empty_range",
            "the upper bound ({upper}) is not greater than the lower bound ({lower}): no value can "
            "satisfy both; for 'above X or below Y' write two rules",
            lower=lower,
            upper=upper,
        )
    if comparison.between is not None:
        low, high = comparison.between
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            raise config_error(
                "between_order",
                "between [{low}, {high}]: the first bound must not exceed the second",
                low=low,
                high=high,
            )


class Comparison(Model):
    """A test on one value. ``above``/``below`` are strict; ``at_least``/``at_most`` and ``between``
    are inclusive (Siaga levels are published as "at or above").

    With both ``above`` and ``below`` the value must lie strictly inside the band, so ``below``
    must be greater than ``above``.
    """

    above: Threshold | None = None
    below: Threshold | None = None
    at_least: Threshold | None = None
    at_most: Threshold | None = None
    between: tuple[Threshold, Threshold] | None = None
    equals: State | float | None = None
    not_equals: State | float | None = None
    change: Change | None = None

    def has_test(self) -> bool:
        return any(
            test is not None
            for test in (
                self.above,
                self.below,
                self.at_least,
                self.at_most,
                self.between,
                self.equals,
                self.not_equals,
                self.change,
            )
        )


class Selector(Model):
    """Device selector of a rule: one device, or every device of a kind, tag or agency."""

    device: str | None = None
    kind: str | None = None
    tag: str | None = None
    agency: str | None = None

    @model_validator(mode="after")
    def _check_selector(self) -> Selector:
        if self.device is None and self.kind is None and self.tag is None and self.agency is None:
            raise config_error("no_selector", "say which devices the rule watches: device, kind, tag or agency")
        if self.device is not None and (self.kind or self.tag or self.agency):
            raise config_error(
                "device_with_selector", "device names one device; do not combine it with kind, tag or agency"
            )
        return self


class Trigger(Selector, Comparison):
    """The ``when`` of a rule: a selector, a metric and a comparison held for ``for``.

    ``offline`` makes the trigger "no valid reading for this long" instead of a comparison.
    """

    metric: str | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    offline: Duration | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check_trigger(self) -> Trigger:
        if self.offline is not None:
            if self.metric is not None or self.has_test():
                raise config_error(
                    "offline_with_comparison",
                    "an offline trigger takes no metric or comparison: it watches the whole device",
                )
            return self
        if self.metric is None:
            raise config_error(
                "missing_metric", "missing metric: say which metric the rule compares, e.g. metric: level"
            )
        check_comparison(self)
        return self


class Clear(Comparison):
    """The ``clear`` of a rule: its own condition (hysteresis) and how long it must hold."""

    for_: Duration = Field(default=timedelta(0), alias="for")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check_clear(self) -> Clear:
        # A clear with only `for` keeps the default: the trigger condition is false.
        if self.has_test():
            check_comparison(self)
        return self


class Context(Comparison):
    """A condition on another device's latest value, no older than ``max_age``."""

    device: str
    metric: str
    max_age: Duration

    @model_validator(mode="after")
    def _check_context(self) -> Context:
        check_comparison(self)
        return self


class Schedule(Model):
    """When a rule is active, in its agency's time zone; ``to`` before ``from`` spans midnight."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(WEEKDAYS)
    from_: str = Field(default="00:00", alias="from")
    to: str = "24:00"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("from_", "to")
    @classmethod
    def _check_clock(cls, value: str) -> str:
        match = re.match(r"^([01]\d|2[0-4]):([0-5]\d)$", str(value))
        if not match or (match.group(1) == "24" and match.group(2) != "00"):
            raise config_error(
                "invalid_time_of_day", "invalid time of day {input}: use HH:MM, e.g. 06:00", input=repr(value)
            )
        return value

    def minutes(self) -> tuple[int, int]:
        start_hours, start_minutes = self.from_.split(":")
        end_hours, end_minutes = self.to.split(":")
        return int(start_hours) * 60 + int(start_minutes), int(end_hours) * 60 + int(end_minutes)


class AlertAction(Model):
    message: str


class DispatchAction(Model):
    team: str
    title: str
    due: Duration = timedelta(hours=4)


class WebhookAction(Model):
    target: str
    message: str | None = None


class NodeRedAction(Model):
    """A POST of the firing to an http-in endpoint of a flow in Node-RED, at ``SIMPUL_NODE_RED_URL`` plus ``path``.

    NOTE: ``flow`` names the flow file without ``.json`` for readers, and nothing checks it yet.
    """

    flow: Identifier
    path: str

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("//"):
            raise config_error(
                "invalid_node_red_path",
                "invalid path {input}: use the URL path of the flow's http-in node, e.g. /simpul/alert",
                input=repr(value),
            )
        return value


class CommandAction(Model):
    """A command published to an actuator: ``action`` names one of the payloads in the device's ``commands``."""

    device: Identifier
    action: str


# A Home Assistant service is ``<domain>.<service>`` in lower case, e.g. ``switch.turn_on``.
SERVICE = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")


class HomeAssistantAction(Model):
    """A Home Assistant service call through the connection of the ``home_assistant`` source ``source``.

    ``entity_id`` (one id or a list) becomes the call's target, and ``data`` its service data.
    Both are message templates: every text in them is filled from the firing, e.g.
    ``entity_id: "switch.pompa_{device.attributes.ha_id}"``.
    """

    source: Identifier
    service: str
    entity_id: str | list[str] | None = None
    data: dict[str, JsonValue] = {}

    @field_validator("service")
    @classmethod
    def _check_service(cls, value: str) -> str:
        if not SERVICE.match(value):
            raise config_error(
                "home_assistant_service",
                "invalid service {input}: write it as domain.service, e.g. switch.turn_on",
                input=repr(value),
            )
        return value

    @field_validator("entity_id")
    @classmethod
    def _check_entity_ids(cls, value: str | list[str] | None) -> str | list[str] | None:
        # An id with a template field is known only when the rule fires, so only literal ids are checked.
        for entity_id in [value] if isinstance(value, str) else value or []:
            if "{" not in entity_id and not ENTITY_ID.match(entity_id):
                raise config_error(
                    "home_assistant_entity_id",
                    "invalid entity id {input}: write it as domain.object_id, e.g. sensor.tinggi_air",
                    input=repr(entity_id),
                )
        return value

    @field_validator("data", mode="before")
    @classmethod
    def _check_data(cls, value: Any) -> Any:
        # YAML reads a bare 2025-01-06 as a date, which JSON cannot carry.
        for _path, item in json_leaves(value):
            if not isinstance(item, (str, int, float, bool)) and item is not None:
                raise config_error(
                    "home_assistant_data_value",
                    "data holds {input}, which cannot be sent to Home Assistant: put it in quotes",
                    input=str(item),
                )
        return value

    @property
    def domain_and_service(self) -> tuple[str, str]:
        domain, service = self.service.split(".", 1)
        return domain, service


def json_leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Yield the key path (below ``path``) and the value of every leaf inside nested mappings and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_leaves(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_leaves(item, (*path, index))
    else:
        yield path, value


class LogAction(Model):
    message: str


class Action(Model):
    """One entry of ``then``: exactly one of alert, dispatch, webhook, node_red, command, home_assistant or log."""

    alert: AlertAction | None = None
    dispatch: DispatchAction | None = None
    webhook: WebhookAction | None = None
    node_red: NodeRedAction | None = None
    command: CommandAction | None = None
    home_assistant: HomeAssistantAction | None = None
    log: LogAction | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        given = [name for name in ACTION_TYPES if getattr(self, name) is not None]
        if len(given) != 1:
            raise config_error(
                "action_count",
                "each action names exactly one of alert, dispatch, webhook, node_red, command, home_assistant or log",
            )
        return self

    @property
    def type(self) -> str:
        for name in ACTION_TYPES:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated action has no type")

    @property
    def spec(
        self,
    ) -> AlertAction | DispatchAction | WebhookAction | NodeRedAction | CommandAction | HomeAssistantAction | LogAction:
        return getattr(self, self.type)  # type: ignore[no-any-return]


class Flapping(Model):
    """An instance that fires ``fires`` times within ``window`` is flapping."""

    fires: int = Field(default=4, ge=2)
    window: Duration = timedelta(hours=1)


class Rule(Model):
    """when / for / clear / then, applied to every device its selector matches."""

    id: Identifier
    name: str
    agency: str
    enabled: bool = True
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    when: Trigger
    conditions: list[Context] = Field(default=[], alias="and")
    schedule: Schedule | None = None
    clear: Clear | None = None
    cooldown: Duration = timedelta(0)
    flapping: Flapping = Flapping()
    then: list[Action] = []

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Settings(Model):
    """Hub-wide settings under the ``simpul`` key."""

    language: Literal["id", "en"] = "id"
    timezone: TimeZone = "Asia/Jakarta"
    database: str = "sqlite:///var/simpul.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    future_tolerance: Duration = timedelta(minutes=5)


class Config(Model):
    """The whole ``config.yaml``."""

    simpul: Settings = Settings()
    agencies: list[Agency] = []
    kinds: dict[str, Kind] = {}
    devices: list[Device] = []
    sources: list[Source] = []
    webhooks: list[WebhookTarget] = []
    rules: list[Rule] = []
