"""Turn raw readings into valid typed readings, or into rejections with a stable reason code.

Reason codes: ``unknown_device``, ``device_disabled``, ``unknown_metric``, ``missing_value``,
``unavailable``, ``not_a_number``, ``out_of_range``, ``unknown_state``, ``missing_timestamp``,
``invalid_timestamp``, ``future_timestamp``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from rules.config import Config, Metric
from rules.engine import NormalReading
from rules.readings import RawReading

# Home Assistant and many gateways send these words instead of a value.
UNAVAILABLE_WORDS = frozenset({"unavailable", "unknown", "none", "null", "nan", "n/a"})

# The ``raw`` of a Rejection from check_value, which the caller replaces with the reading.
_NO_RAW = RawReading("", "", None, None)
_NO_METRICS: dict[str, Metric] = {}


@dataclass(slots=True, frozen=True)
class Rejection:
    raw: RawReading
    reason: str
    detail: str


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class Normalizer:
    """Checks readings against the registered devices and their kinds' metrics."""

    def __init__(self, config: Config) -> None:
        self.devices = {device.id: device for device in config.devices}
        self.metrics: dict[str, dict[str, Metric]] = {
            device.id: config.kinds[device.kind].metrics for device in config.devices if device.kind in config.kinds
        }
        self.default_zone = config.simpul.timezone
        self.future_tolerance = config.simpul.future_tolerance

    def normalize(
        self,
        raw: RawReading,
        *,
        source_id: str,
        zone: str | None = None,
        now: datetime | None = None,
    ) -> NormalReading | Rejection:
        """Validate one reading. ``now`` enables the future-timestamp check (live ingestion only)."""
        device = self.devices.get(raw.device) if isinstance(raw.device, str) else None
        if device is None:
            return Rejection(raw, "unknown_device", f"device {raw.device!r} is not registered in config.yaml")
        if not device.enabled:
            return Rejection(raw, "device_disabled", f"device {raw.device!r} is disabled in config.yaml")

        metrics = self.metrics.get(device.id, _NO_METRICS)
        metric = metrics.get(raw.metric)
        if metric is None:
            known = ", ".join(sorted(metrics)) or "none"
            return Rejection(
                raw, "unknown_metric", f"metric {raw.metric!r} is not defined for {device.id} (known: {known})"
            )

        ts = raw.ts
        # Replay and the feeds mostly pass aware UTC datetimes, which need no conversion.
        if type(ts) is not datetime or ts.tzinfo is not UTC:
            ts = parse_timestamp(ts, zone or self.default_zone)
            if isinstance(ts, str):
                reason = "missing_timestamp" if raw.ts in (None, "") else "invalid_timestamp"
                return Rejection(raw, reason, ts)
        if now is not None and ts > now + self.future_tolerance:
            return Rejection(
                raw, "future_timestamp", f"timestamp {ts.isoformat()} is ahead of the hub clock {now.isoformat()}"
            )

        value = check_value(raw.value, metric)
        if isinstance(value, Rejection):
            return Rejection(raw, value.reason, value.detail)

        # A reading without a sender id is identified by (device, metric, ts) alone.
        return NormalReading(device.id, raw.metric, value, ts, raw.id or None, source_id, raw.unit or metric.unit)


def check_value(value: object, metric: Metric) -> float | str | Rejection:
    """Return the typed value, or a Rejection (with ``raw`` unset) naming why it is invalid."""
    kind = type(value)
    if (kind is float or kind is int) and not metric.is_state:
        # The common case, a number; bool, a subclass of int, takes the path below.
        return _check_range(value, metric)  # type: ignore[arg-type]  # narrowed by the type() test
    if value is None or (isinstance(value, str) and not value.strip()):
        return Rejection(_NO_RAW, "missing_value", "the value is empty")

    if metric.is_state:
        assert metric.states is not None
        if isinstance(value, bool):
            text = "on" if value else "off"
        else:
            text = str(value).strip().lower()
        if text in UNAVAILABLE_WORDS:
            return Rejection(_NO_RAW, "unavailable", f"the sender reported {value!r} instead of a state")
        if text not in metric.states:
            return Rejection(_NO_RAW, "unknown_state", f"{value!r} is not one of the states {metric.states}")
        return text

    if isinstance(value, bool):
        return Rejection(_NO_RAW, "not_a_number", f"{value!r} is not a number")
    if isinstance(value, (int, float)):
        return _check_range(value, metric)
    if not isinstance(value, str):
        return Rejection(_NO_RAW, "not_a_number", f"{value!r} is not a number")

    text = value.strip()
    if text.lower() in UNAVAILABLE_WORDS:
        return Rejection(_NO_RAW, "unavailable", f"the sender reported {value!r} instead of a number")
    try:
        number = float(text)
    except ValueError:
        return Rejection(_NO_RAW, "not_a_number", f"{value!r} is not a number")
    return _check_range(number, metric, value)


def _check_range(value: int | float, metric: Metric, sent: object = None) -> float | Rejection:
    """Return ``value`` as a float if it is finite and inside the metric's range, else a Rejection.

    ``sent`` is the text the number was read from, which a rejection names instead of ``value``.
    """
    reported = value if sent is None else sent
    try:
        number = float(value)
    except OverflowError:
        # An integer beyond the float range, e.g. a JSON number with 400 digits.
        bits = int(value).bit_length()
        return Rejection(_NO_RAW, "out_of_range", f"an integer of {bits} bits is beyond the range of a number")
    if not math.isfinite(number):
        return Rejection(_NO_RAW, "not_a_number", f"{reported!r} is not a finite number")
    if metric.min is not None and number < metric.min:
        return Rejection(_NO_RAW, "out_of_range", f"{number:g} is below the metric's min {metric.min:g}")
    if metric.max is not None and number > metric.max:
        return Rejection(_NO_RAW, "out_of_range", f"{number:g} is above the metric's max {metric.max:g}")
    return number


def parse_timestamp(value: object, zone: str) -> datetime | str:
    """Return an aware UTC datetime, or an error message. Naive times are read in ``zone``."""
    if value is None or value == "":
        return "the timestamp is missing"
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, bool):
        return f"invalid timestamp {value!r}"
    elif isinstance(value, (int, float)):
        if not math.isfinite(value):
            return f"invalid timestamp {value!r}"
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return f"invalid timestamp {value!r}: epoch seconds out of range"
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00") if value.strip().endswith("Z") else value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return f"invalid timestamp {value!r}: use ISO 8601, e.g. 2025-01-31T14:00:00+07:00"
    else:
        return f"invalid timestamp {value!r}"

    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(zone))
    return parsed.astimezone(UTC)
