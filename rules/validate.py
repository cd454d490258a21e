"""Validate a parsed config.yaml item by item and across items.

Each agency, kind, device, source, webhook target and rule is validated on its own, so one
bad item is reported and skipped while the others are kept. The checks then run across the
items that are left, in the order that references point: agencies and kinds, devices,
sources and webhook targets, rules. An item that refers to a skipped item is reported and
skipped too. A settings key under ``simpul`` that fails falls back to its default.

Every finding becomes a ``Problem`` with a stable code (see ``rules.i18n`` for the messages).
Pydantic's errors are translated here: ``extra_forbidden`` becomes ``unknown_key`` with a
"did you mean" hint, the type errors become ``wrong_type``, and errors raised by
``rules.config`` keep their ``simpul.<code>`` code without the prefix.
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from rules.config import (
    ENV_REFERENCE,
    Agency,
    AttributeRef,
    CommandAction,
    Comparison,
    Config,
    Device,
    FileSource,
    HomeAssistantAction,
    HomeAssistantSource,
    HttpSource,
    Kind,
    Metric,
    MqttSource,
    PayloadMapping,
    Rule,
    Settings,
    SimulatedSource,
    Source,
    WebhookTarget,
    json_leaves,
)
from rules.problems import KeyPath, ProblemList, is_secret_key

# Pydantic error types that mean "wrong type", and the term each one expects.
TYPE_TERMS = {
    "float_parsing": "number",
    "float_type": "number",
    "int_parsing": "integer",
    "int_type": "integer",
    "int_from_float": "integer",
    "string_type": "text",
    "bool_parsing": "boolean",
    "bool_type": "boolean",
    "list_type": "list",
    "tuple_type": "list",
    "dict_type": "mapping",
    "model_type": "mapping",
    "model_attributes_type": "mapping",
    "time_delta_type": "duration",
    "time_delta_parsing": "duration",
}
# A model_type error on these models expects their YAML shorthand instead of a block.
MODEL_TERMS = {"AttributeRef": "attribute_ref", "SecretRef": "secret_ref"}
LIMIT_ERRORS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}

LIST_SECTIONS: dict[str, Any] = {
    "agencies": Agency,
    "devices": Device,
    "sources": Source,
    "webhooks": WebhookTarget,
    "rules": Rule,
}
THRESHOLD_KEYS = ("above", "below", "at_least", "at_most")
NUMERIC_KEYS = ("above", "below", "at_least", "at_most", "between", "change")

# Fields that rules.templates fills in alert, dispatch, webhook and log messages. A field under
# device.attributes may name any attribute.
TEMPLATE_FIELDS = {
    "value",
    "unit",
    "metric",
    "ts",
    "device.id",
    "device.name",
    "device.kind",
    "device.agency",
    "device.location.lat",
    "device.location.lon",
    "rule.id",
    "rule.name",
    "rule.severity",
}

_ADAPTERS = {section: TypeAdapter(item_type) for section, item_type in LIST_SECTIONS.items()}
_KIND_ADAPTER = TypeAdapter(Kind)
_MAX_SHOWN = 60


def validate_config(data: Any, problems: ProblemList) -> Config:
    """Validate parsed YAML and return the config of the valid items; findings go to ``problems``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add((), "wrong_type", expected="mapping", input=show_value(data))
        return Config()

    _report_literal_secrets(data, (), problems)
    _report_unknown_sections(data, problems)

    settings = _validate_settings(data.get("simpul"), problems)
    kinds = _validate_kinds(data.get("kinds"), problems)
    sections = {section: _validate_items(data, section, problems) for section in LIST_SECTIONS}

    checker = _References(data, problems, kinds)
    agencies = checker.agencies(sections["agencies"])
    devices = checker.devices(sections["devices"], agencies)
    sources = checker.sources(sections["sources"], devices)
    devices = checker.device_commands(sections["devices"], devices, sources)
    webhooks = checker.webhooks(sections["webhooks"])
    rules = checker.rules(sections["rules"], agencies, devices, webhooks, sources)

    return Config(
        simpul=settings,
        agencies=agencies,
        kinds=kinds,
        devices=devices,
        sources=sources,
        webhooks=webhooks,
        rules=rules,
    )


def show_value(value: Any) -> str:
    """Render a value from the file for a message, as YAML would write it, cut to a readable length."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (int, float)):
        text = str(value)
    else:
        text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1000).strip()
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate nearest in spelling to ``word``, or None when none is close."""
    by_lowercase = {candidate.lower(): candidate for candidate in candidates}
    matches = difflib.get_close_matches(word.lower(), list(by_lowercase), n=1, cutoff=0.6)
    return by_lowercase[matches[0]] if matches else None


# --- sections and items ------------------------------------------------------------------------


def _report_literal_secrets(
    node: Any, path: KeyPath, problems: ProblemList, inside: frozenset[int] = frozenset()
) -> None:
    # YAML aliases can make a list or mapping contain itself, so containers already on the
    # current path are not entered again.
    if id(node) in inside:
        return
    inside = inside | {id(node)}
    if isinstance(node, dict):
        for key, value in node.items():
            if is_secret_key(key) and _is_literal_secret(value):
                problems.add((*path, str(key)), "literal_secret")
            _report_literal_secrets(value, (*path, str(key)), problems, inside)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _report_literal_secrets(item, (*path, index), problems, inside)


def _is_literal_secret(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip()) and not ENV_REFERENCE.match(value.strip())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _report_unknown_sections(data: dict[Any, Any], problems: ProblemList) -> None:
    known = _model_keys(Config)
    for key in data:
        if str(key) not in known:
            _add_unknown_key(problems, (str(key),), str(key), known)


def _validate_settings(raw: Any, problems: ProblemList) -> Settings:
    path: KeyPath = ("simpul",)
    if raw is None:
        return Settings()
    if not isinstance(raw, dict):
        problems.add(path, "wrong_type", expected="mapping", input=show_value(raw))
        return Settings()

    try:
        return Settings.model_validate(raw)
    except ValidationError as error:
        _report_errors(error, Settings, path, problems)
        failed = {err["loc"][0] for err in error.errors() if err["loc"]}

    # Keys that failed fall back to their defaults; the keys that passed are kept.
    kept = {key: value for key, value in raw.items() if key not in failed}
    try:
        return Settings.model_validate(kept)
    except ValidationError:
        return Settings()


def _validate_kinds(raw: Any, problems: ProblemList) -> dict[str, Kind]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(("kinds",), "wrong_type", expected="mapping", input=show_value(raw))
        return {}

    kinds: dict[str, Kind] = {}
    for name, item in raw.items():
        path: KeyPath = ("kinds", str(name))
        try:
            kind = _KIND_ADAPTER.validate_python(item)
        except ValidationError as error:
            _report_errors(error, Kind, path, problems)
            continue
        if not problems.has_problem_within(path):
            kinds[str(name)] = kind
    return kinds


def _validate_items(data: dict[Any, Any], section: str, problems: ProblemList) -> list[tuple[int, Any]]:
    """Validate each item of a list section; return (index in the file, model) of the valid ones."""
    raw = data.get(section)
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.add((section,), "wrong_type", expected="list", input=show_value(raw))
        return []

    adapter = _ADAPTERS[section]
    valid = []
    for index, item in enumerate(raw):
        path: KeyPath = (section, index)
        try:
            model = adapter.validate_python(item)
        except ValidationError as error:
            _report_errors(error, LIST_SECTIONS[section], path, problems)
            continue
        if not problems.has_problem_within(path):
            valid.append((index, model))
    return valid


# --- pydantic errors to problems ---------------------------------------------------------------


@dataclass
class _Finding:
    path: KeyPath
    code: str
    params: dict[str, Any]
    term: str | None = None


@dataclass
class _Location:
    """The key path that a pydantic ``loc`` points to, with the model types met on the way."""

    path: list[str | int]
    parent_model: type[BaseModel] | None = None
    tuple_length: int | None = None
    leaf: Any = None


def _report_errors(error: ValidationError, item_type: Any, prefix: KeyPath, problems: ProblemList) -> None:
    """Turn the errors of one item into problems.

    A value that fails every member of a union gives one error per member. Type errors at a
    path are dropped when another error lies deeper inside that path, because the deeper one
    comes from the member whose shape the value has (a mapping given for ``{attribute: ...}``).
    The type errors left at one path merge into one ``wrong_type`` that lists every expected type.
    """
    findings = [_finding(details, item_type) for details in error.errors(include_url=False)]
    paths = [finding.path for finding in findings]

    merged: dict[KeyPath, _Finding] = {}
    for finding in findings:
        shadowed = any(len(other) > len(finding.path) and other[: len(finding.path)] == finding.path for other in paths)
        if finding.term is None:
            problems.add((*prefix, *finding.path), finding.code, **finding.params)
        elif not shadowed and finding.path in merged:
            expected = merged[finding.path].params["expected"]
            if finding.term not in expected:
                expected.append(finding.term)
        elif not shadowed:
            merged[finding.path] = finding

    for path, finding in merged.items():
        problems.add((*prefix, *path), finding.code, **finding.params)


def _finding(details: Mapping[str, Any], item_type: Any) -> _Finding:
    error_type: str = details["type"]
    context: Mapping[str, Any] = details.get("ctx") or {}
    location = _locate(item_type, details["loc"])
    path = tuple(location.path)
    shown = show_value(details["input"])

    if error_type.startswith("simpul."):
        return _Finding(path, error_type.removeprefix("simpul."), dict(context))

    if error_type in TYPE_TERMS:
        term = TYPE_TERMS[error_type]
        if error_type == "model_type":
            term = MODEL_TERMS.get(context.get("class_name", ""), term)
        return _Finding(path, "wrong_type", {"expected": [term], "input": shown}, term=term)

    if error_type == "missing" and location.tuple_length is not None and path:
        return _Finding(path[:-1], "wrong_length", {"count": location.tuple_length, "actual": path[-1]})
    if error_type == "missing":
        return _Finding(path, "missing", {})

    if error_type == "extra_forbidden":
        key = str(path[-1])
        params: dict[str, Any] = {"key": key}
        candidates = _model_keys(location.parent_model) if location.parent_model else set()
        suggestion = closest(key, candidates)
        if suggestion:
            params["suggestion"] = suggestion
        return _Finding(path, "unknown_key", params)

    if error_type == "literal_error":
        return _Finding(path, "invalid_choice", {"input": shown, "choices": _quoted(context.get("expected", ""))})
    if error_type == "union_tag_invalid":
        key = _quoted(context.get("discriminator", ""))[0]
        choices = _quoted(context.get("expected_tags", ""))
        return _Finding((*path, key), "invalid_choice", {"input": show_value(context.get("tag")), "choices": choices})
    if error_type == "union_tag_not_found":
        return _Finding((*path, _quoted(context.get("discriminator", ""))[0]), "missing", {})

    if error_type in LIMIT_ERRORS:
        return _Finding(path, error_type, {"limit": context.get(LIMIT_ERRORS[error_type]), "input": shown})
    if error_type == "invalid_key":
        # The last part of loc is the key itself, which is not a name, so the path stops above it.
        return _Finding(path[:-1], "invalid_key", {"key": show_value(details["input"])})
    if error_type == "string_pattern_mismatch":
        return _Finding(path, "invalid_id", {"input": shown})
    if error_type in ("too_short", "too_long"):
        count = _tuple_length(location.leaf)
        if count is not None:
            return _Finding(path, "wrong_length", {"count": count, "actual": context.get("actual_length")})

    return _Finding(path, "invalid_value", {"detail": details["msg"]})


def _tuple_length(annotation: Any) -> int | None:
    members = _union_members(annotation) or [annotation]
    for member in members:
        arguments = get_args(member)
        if get_origin(member) is tuple and Ellipsis not in arguments:
            return len(arguments)
    return None


def _quoted(text: str) -> list[str]:
    """Return the quoted words of a pydantic context string such as ``"'id' or 'en'"``."""
    return re.findall(r"'([^']*)'", text) or [text]


def _locate(item_type: Any, loc: Sequence[str | int]) -> _Location:
    """Follow a pydantic ``loc`` through the model types and keep only keys and indexes.

    Inside a union, pydantic adds the member's tag to ``loc`` (``float``, ``AttributeRef``,
    ``function-before[_to_state(), str]``, or the ``type`` value of a source). Tags are not
    written in the file, so they are left out of the path.
    """
    location = _Location(path=[])
    current = item_type
    position = 0
    while position < len(loc):
        part = loc[position]
        current = _strip_annotated(current)

        members = _union_members(current)
        if members is not None:
            tagged = _member_by_tag(members, part)
            if tagged is not None:
                current = tagged
                position += 1
            else:
                current = _member_for_key(members, part)
            continue

        location.path.append(part)
        position += 1
        location.tuple_length = None
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            location.parent_model = current
            current = _field_type(current, part)
        elif origin is tuple:
            arguments = get_args(current)
            fixed = Ellipsis not in arguments
            location.tuple_length = len(arguments) if fixed else None
            index = part if isinstance(part, int) else 0
            current = arguments[index] if fixed and index < len(arguments) else arguments[0]
        elif origin is list:
            current = get_args(current)[0]
        elif origin is dict:
            current = get_args(current)[1]
        else:
            current = Any
    location.leaf = _strip_annotated(current)
    return location


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[Any] | None:
    if get_origin(annotation) not in (Union, UnionType):
        return None
    members = [member for member in get_args(annotation) if member is not NoneType]
    return members


def _member_by_tag(members: list[Any], part: str | int) -> Any | None:
    if not isinstance(part, str):
        return None
    wrapped = re.search(r", (\w+)\]$", part)
    name = wrapped.group(1) if wrapped else part
    for member in members:
        base = _strip_annotated(member)
        if getattr(base, "__name__", None) == name:
            return member
        if isinstance(base, type) and issubclass(base, BaseModel) and "type" in base.model_fields:
            tag_type = base.model_fields["type"].annotation
            if get_origin(tag_type) is Literal and part in get_args(tag_type):
                return member
    return None


def _member_for_key(members: list[Any], part: str | int) -> Any:
    """Pick the union member in which ``part`` can be the next key or index."""
    for member in members:
        base = _strip_annotated(member)
        is_model = isinstance(base, type) and issubclass(base, BaseModel)
        if isinstance(part, str) and is_model and _field_type(base, part) is not Any:
            return member
        if isinstance(part, int) and get_origin(base) in (list, tuple):
            return member
    for member in members:
        base = _strip_annotated(member)
        if (isinstance(base, type) and issubclass(base, BaseModel)) or get_origin(base) is dict:
            return member
    return Any


def _field_type(model: type[BaseModel], key: str | int) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return Any


def _model_keys(model: type[BaseModel]) -> set[str]:
    """Return the keys a model accepts in YAML: each field's alias where it has one, else its name."""
    return {info.alias or name for name, info in model.model_fields.items()}


def _add_unknown_key(problems: ProblemList, path: KeyPath, key: str, candidates: Iterable[str]) -> None:
    suggestion = closest(key, candidates)
    if suggestion:
        problems.add(path, "unknown_key", key=key, suggestion=suggestion)
    else:
        problems.add(path, "unknown_key", key=key)


# --- references across items -------------------------------------------------------------------


@dataclass(frozen=True)
class _Interval:
    """A set of numbers between two bounds; an open bound excludes its end."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = True
    high_open: bool = True

    def intersect(self, other: _Interval) -> _Interval:
        if self.low != other.low:
            low, low_open = max((self.low, self.low_open), (other.low, other.low_open))
        else:
            low, low_open = self.low, self.low_open or other.low_open
        if self.high != other.high:
            high, high_open = min((self.high, self.high_open), (other.high, other.high_open))
        else:
            high, high_open = self.high, self.high_open or other.high_open
        return _Interval(low, high, low_open, high_open)

    def is_empty(self) -> bool:
        return self.low > self.high or (self.low == self.high and (self.low_open or self.high_open))

    def within(self, other: _Interval) -> bool:
        """Return whether every number in this interval is also in ``other``."""
        low_inside = other.low < self.low or (other.low == self.low and (self.low_open or not other.low_open))
        high_inside = self.high < other.high or (self.high == other.high and (self.high_open or not other.high_open))
        return low_inside and high_inside


class _References:
    """Checks that need the whole config: ids, references between items, and rule semantics."""

    def __init__(self, data: dict[Any, Any], problems: ProblemList, kinds: dict[str, Kind]) -> None:
        self.problems = problems
        self.kinds = kinds
        self.raw_ids = {section: _raw_ids(data.get(section)) for section in LIST_SECTIONS}
        raw_kinds = data.get("kinds")
        self.raw_ids["kinds"] = {str(name): 0 for name in raw_kinds} if isinstance(raw_kinds, dict) else {}
        self.raw_ids["teams"] = _raw_team_ids(data.get("agencies"))
        self.raw_tags = _raw_tags(data.get("devices"))
        self.invalid_commands: set[str] = set()

    # Sections are checked in the order that references point, so each check compares against
    # the items kept by the checks before it.

    def agencies(self, entries: list[tuple[int, Agency]]) -> list[Agency]:
        kept = []
        seen_teams: dict[str, KeyPath] = {}
        for index, agency in self._unique("agencies", entries):
            teams = []
            for team_index, team in enumerate(agency.teams):
                path: KeyPath = ("agencies", index, "teams", team_index, "id")
                first = seen_teams.setdefault(team.id, path)
                if first == path:
                    teams.append(team)
                else:
                    self.problems.add(path, "duplicate_team", id=team.id, first_line=self.problems.line_of(first))
            kept.append(agency if len(teams) == len(agency.teams) else agency.model_copy(update={"teams": teams}))
        return kept

    def devices(self, entries: list[tuple[int, Device]], agencies: list[Agency]) -> list[Device]:
        agency_ids = {agency.id for agency in agencies}
        kept = []
        for index, device in self._unique("devices", entries):
            path: KeyPath = ("devices", index)
            agency_ok = self._refer((*path, "agency"), "agency", device.agency, agency_ids)
            kind_ok = self._refer((*path, "kind"), "kind", device.kind, set(self.kinds))
            if agency_ok and kind_ok:
                kept.append(device)
        return kept

    def sources(self, entries: list[tuple[int, Source]], devices: list[Device]) -> list[Source]:
        by_id = {device.id: device for device in devices}
        kept = []
        for index, source in self._unique("sources", entries):
            path: KeyPath = ("sources", index)
            if isinstance(source, SimulatedSource):
                for position, device_id in enumerate(source.devices):
                    self._refer((*path, "devices", position), "device", device_id, set(by_id))
            elif isinstance(source, FileSource):
                self._check_file_source(path, source, by_id)
            elif isinstance(source, MqttSource):
                self._check_mqtt_source(path, source, by_id)
            elif isinstance(source, HomeAssistantSource):
                self._check_home_assistant_source(path, source, by_id)
            elif isinstance(source, HttpSource) and source.mapping is not None:
                self._check_mapping((*path, "mapping"), source.mapping, by_id)
            if not self.problems.has_problem_within(path):
                kept.append(source)
        return kept

    def device_commands(
        self, entries: list[tuple[int, Device]], devices: list[Device], sources: list[Source]
    ) -> list[Device]:
        """Check each device's ``commands``; a device whose commands are invalid is kept without them.

        This runs after the sources, because ``via`` names the mqtt source to publish through.
        """
        kept_ids = {device.id for device in devices}
        index_of = {device.id: index for index, device in entries if device.id in kept_ids}
        source_by_id = {source.id: source for source in sources}
        checked = []
        for device in devices:
            commands = device.commands
            if commands is None:
                checked.append(device)
                continue
            path: KeyPath = ("devices", index_of[device.id], "commands")
            self._check_via((*path, "via"), commands.via, source_by_id)
            self._check_template((*path, "topic"), commands.topic)
            for name, payload in commands.payloads.items():
                self._check_template((*path, "payloads", name), payload)
            if self.problems.has_problem_within(path):
                self.invalid_commands.add(device.id)
                device = device.model_copy(update={"commands": None})
            checked.append(device)
        return checked

    def webhooks(self, entries: list[tuple[int, WebhookTarget]]) -> list[WebhookTarget]:
        return [webhook for _, webhook in self._unique("webhooks", entries)]

    def rules(
        self,
        entries: list[tuple[int, Rule]],
        agencies: list[Agency],
        devices: list[Device],
        webhooks: list[WebhookTarget],
        sources: list[Source],
    ) -> list[Rule]:
        context = _RuleContext(
            agency_ids={agency.id for agency in agencies},
            team_ids={team.id for agency in agencies for team in agency.teams},
            webhook_ids={webhook.id for webhook in webhooks},
            devices=devices,
            sources={source.id: source for source in sources},
        )
        kept = []
        for index, rule in self._unique("rules", entries):
            self._check_rule(("rules", index), rule, context)
            if not self.problems.has_problem_within(("rules", index)):
                kept.append(rule)
        return kept

    # --- helpers shared by the sections ---

    def _unique(self, section: str, entries: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """Drop items whose id an earlier item of the section already uses."""
        first_index = self.raw_ids[section]
        unique = []
        for index, item in entries:
            first = first_index.get(item.id, index)
            if first < index:
                line = self.problems.line_of((section, first, "id"))
                self.problems.add((section, index, "id"), "duplicate_id", id=item.id, first_line=line)
            else:
                unique.append((index, item))
        return unique

    def _refer(self, path: KeyPath, what: str, target: str, valid: set[str]) -> bool:
        """Report a reference to an item that is missing or was skipped; return whether it is valid."""
        if target in valid:
            return True
        known = self.raw_ids["teams" if what == "team" else _SECTION_OF[what]]
        if target in known:
            self.problems.add(path, "skipped_reference", what=what, id=target)
            return False
        suggestion = closest(target, known)
        if suggestion:
            self.problems.add(path, f"unknown_{what}", id=target, suggestion=suggestion)
        else:
            self.problems.add(path, f"unknown_{what}", id=target)
        return False

    def _check_file_source(self, path: KeyPath, source: FileSource, by_id: dict[str, Device]) -> None:
        if source.device is not None:
            for key, device_id in source.device.map.items():
                self._refer((*path, "device", "map", key), "device", device_id, set(by_id))
        for position, column in enumerate(source.columns):
            column_path: KeyPath = (*path, "columns", position)
            if self._refer((*column_path, "device"), "device", column.device, set(by_id)):
                kind_name = by_id[column.device].kind
                self._check_metric((*column_path, "metric"), column.metric, kind_name)

    def _check_mqtt_source(self, path: KeyPath, source: MqttSource, by_id: dict[str, Device]) -> None:
        """Check the devices named literally in the topics, and their metrics.

        A device taken from a topic segment is known only when a message arrives, so the hub
        rejects unknown ones then, as ``unknown_device`` readings.
        """
        for position, topic in enumerate(source.topics):
            topic_path: KeyPath = (*path, "topics", position)
            if not isinstance(topic.device, str):
                continue
            if not self._refer((*topic_path, "device"), "device", topic.device, set(by_id)):
                continue
            kind_name = by_id[topic.device].kind
            if topic.metric is not None:
                self._check_metric((*topic_path, "metric"), topic.metric, kind_name)
            for field_path, metric in topic.metrics.items():
                self._check_metric((*topic_path, "metrics", field_path), metric, kind_name)

    def _check_home_assistant_source(
        self, path: KeyPath, source: HomeAssistantSource, by_id: dict[str, Device]
    ) -> None:
        """Check that every entity maps to a known device and a metric of that device's kind."""
        for position, entity in enumerate(source.entities):
            entity_path: KeyPath = (*path, "entities", position)
            if self._refer((*entity_path, "device"), "device", entity.device, set(by_id)):
                self._check_metric((*entity_path, "metric"), entity.metric, by_id[entity.device].kind)

    def _check_mapping(self, path: KeyPath, mapping: PayloadMapping, by_id: dict[str, Device]) -> None:
        """Check the devices that a webhook mapping names, and the metrics of a literal device.

        A device read from the payload is known only when a request arrives, so the hub rejects
        unknown ones then, as ``unknown_device`` readings.
        """
        if not isinstance(mapping.device, str):
            for name, device_id in mapping.device.map.items():
                self._refer((*path, "device", "map", name), "device", device_id, set(by_id))
            return
        if not self._refer((*path, "device"), "device", mapping.device, set(by_id)):
            return
        kind_name = by_id[mapping.device].kind
        if mapping.metric is not None:
            self._check_metric((*path, "metric"), mapping.metric, kind_name)
        for field_path, metric in mapping.metrics.items():
            self._check_metric((*path, "metrics", field_path), metric, kind_name)

    def _check_metric(self, path: KeyPath, metric: str, kind_name: str) -> Metric | None:
        kind = self.kinds[kind_name]
        if metric in kind.metrics:
            return kind.metrics[metric]
        params: dict[str, Any] = {"metric": metric, "kind": kind_name, "metrics": sorted(kind.metrics)}
        suggestion = closest(metric, kind.metrics)
        if suggestion:
            params["suggestion"] = suggestion
        self.problems.add(path, "unknown_metric", **params)
        return None

    # --- rules ---

    def _check_rule(self, path: KeyPath, rule: Rule, context: _RuleContext) -> None:
        """Check one rule; every finding is reported at the key it concerns.

        1. The agency and the selector's device, kind, agency and tag must exist.
        2. The selector must match at least one device.
        3. The metric must exist in the kind of every matched device. The comparisons must suit
           it: numbers for a numeric metric and known states for a state metric. Thresholds
           taken from attributes must be numbers on every device, and the accepted range must
           overlap the metric's min..max.
        4. The clear condition must be able to hold while the trigger does not.
        5. The ``and`` conditions, the actions and their message templates.
        """
        self._refer((*path, "agency"), "agency", rule.agency, context.agency_ids)

        selected = self._select(path, rule, context)
        if selected and rule.when.metric is not None:
            trigger = self._check_condition((*path, "when"), rule.when, rule.when.metric, selected)
            if rule.clear is not None and rule.clear.has_test():
                clear = self._check_condition((*path, "clear"), rule.clear, rule.when.metric, selected)
                self._check_clear((*path, "clear"), trigger, clear)

        by_id = {device.id: device for device in context.devices}
        for position, condition in enumerate(rule.conditions):
            condition_path: KeyPath = (*path, "and", position)
            if self._refer((*condition_path, "device"), "device", condition.device, set(by_id)):
                self._check_condition(condition_path, condition, condition.metric, [by_id[condition.device]])

        for position, action in enumerate(rule.then):
            action_path: KeyPath = (*path, "then", position, action.type)
            spec = action.spec
            if action.dispatch is not None:
                self._refer((*action_path, "team"), "team", action.dispatch.team, context.team_ids)
            if action.webhook is not None:
                self._refer((*action_path, "target"), "webhook", action.webhook.target, context.webhook_ids)
            if action.command is not None:
                self._check_command(action_path, action.command, by_id)
            if action.home_assistant is not None:
                self._check_home_assistant_action(action_path, action.home_assistant, context.sources)
            for key in ("message", "title"):
                text = getattr(spec, key, None)
                if isinstance(text, str):
                    self._check_template((*action_path, key), text)

    def _check_command(self, path: KeyPath, command: CommandAction, by_id: dict[str, Device]) -> None:
        """Check that the commanded device exists, has valid ``commands`` and a payload for the action."""
        if not self._refer((*path, "device"), "device", command.device, set(by_id)):
            return
        commands = by_id[command.device].commands
        if command.device in self.invalid_commands:
            self.problems.add((*path, "device"), "skipped_commands", id=command.device)
            return
        if commands is None:
            self.problems.add((*path, "device"), "device_without_commands", id=command.device)
            return
        if command.action in commands.payloads:
            return
        params: dict[str, Any] = {
            "device": command.device,
            "command": command.action,
            "commands": sorted(commands.payloads),
        }
        suggestion = closest(command.action, commands.payloads)
        if suggestion:
            params["suggestion"] = suggestion
        self.problems.add((*path, "action"), "unknown_command", **params)

    def _check_home_assistant_action(
        self, path: KeyPath, action: HomeAssistantAction, source_by_id: dict[str, Source]
    ) -> None:
        """Check that the action's source is a home_assistant source, and the templates in its entity ids and data."""
        source_path: KeyPath = (*path, "source")
        source = self._find_source(source_path, action.source, source_by_id, "unknown_home_assistant_source")
        if source is not None and not isinstance(source, HomeAssistantSource):
            self.problems.add(source_path, "action_source_not_home_assistant", id=action.source, type=source.type)

        texts = [*json_leaves(action.entity_id, (*path, "entity_id")), *json_leaves(action.data, (*path, "data"))]
        for text_path, text in texts:
            if isinstance(text, str):
                self._check_template(text_path, text)

    def _check_via(self, path: KeyPath, source_id: str, source_by_id: dict[str, Source]) -> None:
        source = self._find_source(path, source_id, source_by_id, "unknown_command_source")
        if source is not None and not isinstance(source, MqttSource):
            self.problems.add(path, "command_source_not_mqtt", id=source_id, type=source.type)

    def _find_source(
        self, path: KeyPath, source_id: str, source_by_id: dict[str, Source], unknown_code: str
    ) -> Source | None:
        """Return the kept source ``source_id``, or report it as skipped or unknown and return None."""
        source = source_by_id.get(source_id)
        if source is not None:
            return source
        known = self.raw_ids["sources"]
        if source_id in known:
            self.problems.add(path, "skipped_reference", what="source", id=source_id)
            return None
        suggestion = closest(source_id, known)
        params: dict[str, Any] = {"id": source_id, **({"suggestion": suggestion} if suggestion else {})}
        self.problems.add(path, unknown_code, **params)
        return None

    def _select(self, path: KeyPath, rule: Rule, context: _RuleContext) -> list[Device]:
        when = rule.when
        when_path: KeyPath = (*path, "when")
        references = [
            ("device", when.device, {device.id for device in context.devices}),
            ("kind", when.kind, set(self.kinds)),
            ("agency", when.agency, context.agency_ids),
        ]
        valid = True
        for what, target, known in references:
            if target is not None and not self._refer((*when_path, what), what, target, known):
                valid = False
        if when.tag is not None and when.tag not in self.raw_tags:
            suggestion = closest(when.tag, self.raw_tags)
            params = {"tag": when.tag, **({"suggestion": suggestion} if suggestion else {})}
            self.problems.add((*when_path, "tag"), "unknown_tag", **params)
            valid = False
        if not valid:
            return []

        selected = [
            device
            for device in context.devices
            if (when.device is None or device.id == when.device)
            and (when.kind is None or device.kind == when.kind)
            and (when.agency is None or device.agency == when.agency)
            and (when.tag is None or when.tag in device.tags)
        ]
        if not selected:
            self.problems.add(when_path, "no_device_matches")
        return selected

    def _check_condition(
        self, path: KeyPath, comparison: Comparison, metric_name: str, devices: list[Device]
    ) -> dict[str, _Interval | frozenset[str] | None]:
        """Check one comparison against each device's metric; return the set of values it accepts per device.

        The set is an interval for a numeric metric and a set of states for a state metric, or
        None where it cannot be known (change, not_equals on a number, an unresolved attribute).
        """
        accepted: dict[str, _Interval | frozenset[str] | None] = {}
        checked_kinds: dict[str, Metric | None] = {}
        for device in devices:
            if device.kind not in checked_kinds:
                checked_kinds[device.kind] = self._check_metric((*path, "metric"), metric_name, device.kind)
            metric = checked_kinds[device.kind]
            if metric is None:
                continue
            if metric.states is not None:
                accepted[device.id] = self._state_set(path, comparison, metric_name, metric.states)
            else:
                accepted[device.id] = self._number_interval(path, comparison, metric_name, metric, device)

        self._check_attributes(path, comparison, devices)
        return accepted

    def _state_set(self, path: KeyPath, comparison: Comparison, metric_name: str, states: list[str]) -> frozenset[str]:
        numeric = [key for key in NUMERIC_KEYS if getattr(comparison, key) is not None]
        if numeric:
            self.problems.add((*path, numeric[0]), "numeric_on_state", metric=metric_name, states=states)

        accepted = frozenset(states)
        for key in ("equals", "not_equals"):
            value = getattr(comparison, key)
            if value is None:
                continue
            if str(value) not in states:
                params = {"input": show_value(value), "metric": metric_name, "states": states}
                self.problems.add((*path, key), "unknown_state", **params)
                continue
            accepted = accepted & {str(value)} if key == "equals" else accepted - {str(value)}

        if not accepted and not numeric:
            self.problems.add(path, "never_holds")
        return accepted

    def _number_interval(
        self, path: KeyPath, comparison: Comparison, metric_name: str, metric: Metric, device: Device
    ) -> _Interval | None:
        for key in ("equals", "not_equals"):
            value = getattr(comparison, key)
            if isinstance(value, str):
                self.problems.add((*path, key), "state_on_numeric", metric=metric_name, input=show_value(value))
                return None
        if comparison.change is not None or comparison.not_equals is not None:
            return None

        bounds = {key: _resolve(getattr(comparison, key), device) for key in THRESHOLD_KEYS}
        between = [_resolve(bound, device) for bound in comparison.between] if comparison.between else []
        if any(bound is None for bound in between) or any(
            bounds[key] is None and getattr(comparison, key) is not None for key in THRESHOLD_KEYS
        ):
            return None

        accepted = _Interval()
        if bounds["above"] is not None:
            accepted = accepted.intersect(_Interval(low=bounds["above"]))
        if bounds["at_least"] is not None:
            accepted = accepted.intersect(_Interval(low=bounds["at_least"], low_open=False))
        if bounds["below"] is not None:
            accepted = accepted.intersect(_Interval(high=bounds["below"]))
        if bounds["at_most"] is not None:
            accepted = accepted.intersect(_Interval(high=bounds["at_most"], high_open=False))
        if between:
            accepted = accepted.intersect(_Interval(between[0], between[1], False, False))
        if isinstance(comparison.equals, (int, float)):
            value = float(comparison.equals)
            accepted = accepted.intersect(_Interval(value, value, False, False))

        reachable = _Interval(
            low=-math.inf if metric.min is None else metric.min,
            high=math.inf if metric.max is None else metric.max,
            low_open=metric.min is None,
            high_open=metric.max is None,
        )
        if accepted.intersect(reachable).is_empty():
            if accepted.is_empty():
                self.problems.add(path, "never_holds")
            else:
                params = {"metric": metric_name, "min": _number(metric.min), "max": _number(metric.max)}
                self.problems.add(path, "outside_range", **params)
        return accepted

    def _check_attributes(self, path: KeyPath, comparison: Comparison, devices: list[Device]) -> None:
        references: list[tuple[KeyPath, str]] = []
        for key in THRESHOLD_KEYS:
            threshold = getattr(comparison, key)
            if isinstance(threshold, AttributeRef):
                references.append(((*path, key, "attribute"), threshold.attribute))
        for position, bound in enumerate(comparison.between or ()):
            if isinstance(bound, AttributeRef):
                references.append(((*path, "between", position, "attribute"), bound.attribute))

        for attribute_path, attribute in references:
            missing = [device.id for device in devices if attribute not in device.attributes]
            not_numeric = [
                device.id
                for device in devices
                if attribute in device.attributes and not _is_number(device.attributes[attribute])
            ]
            if missing:
                self.problems.add(attribute_path, "missing_attribute", attribute=attribute, devices=missing)
            if not_numeric:
                self.problems.add(attribute_path, "attribute_not_numeric", attribute=attribute, devices=not_numeric)

    def _check_clear(
        self,
        path: KeyPath,
        trigger: Mapping[str, _Interval | frozenset[str] | None],
        clear: Mapping[str, _Interval | frozenset[str] | None],
    ) -> None:
        for device_id, clear_values in clear.items():
            trigger_values = trigger.get(device_id)
            if clear_values is None or trigger_values is None:
                continue
            if isinstance(clear_values, _Interval) and isinstance(trigger_values, _Interval):
                implied = not clear_values.is_empty() and clear_values.within(trigger_values)
            elif isinstance(clear_values, frozenset) and isinstance(trigger_values, frozenset):
                implied = bool(clear_values) and clear_values <= trigger_values
            else:
                implied = False
            if implied:
                self.problems.add(path, "clear_implies_trigger")
                return

    def _check_template(self, path: KeyPath, text: str) -> None:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
        except ValueError:
            self.problems.add(path, "invalid_template")
            return
        for name in fields:
            known = name in TEMPLATE_FIELDS or (name.startswith("device.attributes.") and name.count(".") == 2)
            if known:
                continue
            suggestion = closest(name, TEMPLATE_FIELDS)
            params = {"field": name, **({"suggestion": suggestion} if suggestion else {})}
            self.problems.add(path, "unknown_template_field", **params)


@dataclass(frozen=True)
class _RuleContext:
    agency_ids: set[str]
    team_ids: set[str]
    webhook_ids: set[str]
    devices: list[Device]
    sources: dict[str, Source]


_SECTION_OF = {"agency": "agencies", "kind": "kinds", "device": "devices", "webhook": "webhooks"}


def _raw_ids(raw: Any) -> dict[str, int]:
    """Map each id written in a list section to the index of its first item, valid or not."""
    ids: dict[str, int] = {}
    if isinstance(raw, list):
        for index, item in enumerate(raw):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ids.setdefault(item["id"], index)
    return ids


def _raw_team_ids(raw: Any) -> dict[str, int]:
    ids: dict[str, int] = {}
    if isinstance(raw, list):
        for index, agency in enumerate(raw):
            teams = agency.get("teams") if isinstance(agency, dict) else None
            for team_id in _raw_ids(teams):
                ids.setdefault(team_id, index)
    return ids


def _raw_tags(raw: Any) -> set[str]:
    tags: set[str] = set()
    if isinstance(raw, list):
        for device in raw:
            device_tags = device.get("tags") if isinstance(device, dict) else None
            if isinstance(device_tags, list):
                tags.update(tag for tag in device_tags if isinstance(tag, str))
    return tags


def _resolve(threshold: float | AttributeRef | None, device: Device) -> float | None:
    if isinstance(threshold, AttributeRef):
        value = device.attributes.get(threshold.attribute)
        return float(value) if _is_number(value) else None
    return threshold


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}"
