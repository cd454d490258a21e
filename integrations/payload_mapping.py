"""Map a webhook source's own JSON payload to readings, as its ``mapping`` in config.yaml describes.

An item that cannot be mapped becomes an ``UnmappedItem`` with a reason, and the other items
are still mapped. Such an item is not an object, lacks its device, timestamp or id field, has
one of them of the wrong type, or has a timestamp that does not match its format.

A missing or non-numeric value is not a mapping problem: it is passed on, and the pipeline
rejects it as ``missing_value`` or ``not_a_number``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from integrations.json_paths import field_value, timestamp_value
from rules.config import PayloadMapping, PayloadTimestamp
from rules.readings import RawReading

# With a decimal comma, a dot between groups of three digits separates thousands: 1.234,5.
_THOUSANDS_GROUPED = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d*)?$")


class PayloadShapeError(ValueError):
    """Raised when the payload as a whole does not fit the mapping, e.g. ``readings`` is not a list."""


@dataclass(frozen=True, slots=True)
class UnmappedItem:
    """An item of the payload that gives no reading: ``reason`` is a stable code, ``detail`` explains it."""

    item: int
    reason: str
    detail: str


Mapped = RawReading | UnmappedItem


def payload_items(document: Any, mapping: PayloadMapping) -> list[Any]:
    """Return the items of a payload: the list at ``mapping.readings``, or the payload itself as one item."""
    if mapping.readings is None:
        return [document]

    items = field_value(document, mapping.readings)
    if items is None:
        raise PayloadShapeError(f"the payload has no field {mapping.readings!r}, which the mapping names as readings")
    if not isinstance(items, list):
        raise PayloadShapeError(f"the field {mapping.readings!r} is not a JSON list, so it cannot hold the readings")
    return items


def map_items(items: list[Any], mapping: PayloadMapping, arrived: datetime) -> list[Mapped]:
    """Map each item to its readings, or to one UnmappedItem, keeping the order of the items."""
    mapped: list[Mapped] = []
    for position, item in enumerate(items):
        try:
            mapped.extend(_item_readings(item, mapping, arrived))
        except _Unmappable as problem:
            mapped.append(UnmappedItem(position, problem.reason, f"item {position}: {problem}"))
    return mapped


class _Unmappable(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _item_readings(item: Any, mapping: PayloadMapping, arrived: datetime) -> list[RawReading]:
    if not isinstance(item, dict):
        raise _Unmappable("not_an_object", f"expected a JSON object, got a {_json_type(item)}")

    device = _device(item, mapping)
    ts = arrived if mapping.timestamp is None else _timestamp(item, mapping.timestamp)
    sender_id = None if mapping.id is None else _text_field(item, mapping.id, "id")

    paths = mapping.metric_paths()
    readings = []
    for value_path, metric in paths:
        value = _value(field_value(item, value_path), mapping.decimal, mapping.scale.get(metric, 1.0))
        # An item with several metrics gives several readings, so each reading id names its metric.
        reading_id = sender_id if sender_id is None or len(paths) == 1 else f"{sender_id}/{metric}"
        readings.append(RawReading(device, metric, value, ts, reading_id))
    return readings


def _device(item: dict[str, Any], mapping: PayloadMapping) -> str:
    if isinstance(mapping.device, str):
        return mapping.device
    name = _text_field(item, mapping.device.path, "device")
    return mapping.device.map.get(name, name)


def _text_field(item: dict[str, Any], path: str, role: str) -> str:
    """Return a device or id field as text; numbers are accepted because many systems number their stations."""
    value = field_value(item, path)
    if value is None:
        raise _Unmappable("missing_field", f"the {role} field {path!r} is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Unmappable("wrong_type", f"the {role} field {path!r} is a JSON {_json_type(value)}, expected text")
    text = str(value).strip()
    if not text:
        raise _Unmappable("missing_field", f"the {role} field {path!r} is empty")
    return text


def _timestamp(item: dict[str, Any], spec: PayloadTimestamp) -> datetime | str | float:
    value = field_value(item, spec.path)
    if value is None:
        raise _Unmappable("missing_field", f"the timestamp field {spec.path!r} is missing")

    if spec.format in ("epoch", "epoch_ms"):
        return _epoch(value, spec)
    if not isinstance(value, str):
        raise _Unmappable(
            "wrong_type", f"the timestamp field {spec.path!r} is a JSON {_json_type(value)}, expected text"
        )
    if spec.format == "iso" and spec.timezone is None:
        # The pipeline reads ISO text itself, in the source's time zone when it has no offset.
        text = timestamp_value(value)
        assert text is not None
        return text

    text = value.strip()
    try:
        if spec.format == "iso":
            moment = datetime.fromisoformat(text.removesuffix("Z") + "+00:00" if text.endswith("Z") else text)
        else:
            moment = datetime.strptime(text, spec.format)
    except ValueError:
        raise _Unmappable(
            "invalid_timestamp", f"the timestamp {value!r} does not match the format {spec.format!r}"
        ) from None
    if moment.tzinfo is None and spec.timezone is not None:
        moment = moment.replace(tzinfo=ZoneInfo(spec.timezone))
    # A naive time left here is read by the pipeline in the source's or the hub's time zone.
    return moment


def _epoch(value: Any, spec: PayloadTimestamp) -> datetime:
    number = _number(value, ".")
    if number is None:
        raise _Unmappable("invalid_timestamp", f"the timestamp {value!r} is not a number of {_epoch_unit(spec.format)}")
    seconds = number / 1000 if spec.format == "epoch_ms" else number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise _Unmappable("invalid_timestamp", f"the timestamp {value!r} is out of range") from None


def _epoch_unit(stamp_format: str) -> str:
    return "milliseconds" if stamp_format == "epoch_ms" else "seconds"


def _value(value: Any, decimal: str, scale: float) -> object:
    """Return a value with numbers read and scaled; other values pass unchanged for the pipeline to check."""
    number = _number(value, decimal)
    if number is None:
        return value
    if scale == 1:
        return number
    # Decimal keeps 101 * 0.1 at 10.1, where float gives 10.100000000000001.
    return float(Decimal(repr(number)) * Decimal(repr(scale)))


def _number(value: Any, decimal: str) -> float | None:
    """Return a JSON number, or numeric text in the given decimal style, as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None

    text = value.strip()
    # Decimal also accepts "1_000", which no sender means as a number.
    if "_" in text:
        return None
    if decimal == ",":
        if _THOUSANDS_GROUPED.match(text):
            text = text.replace(".", "")
        text = text.replace(",", ".")
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return float(number) if number.is_finite() else None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"
