"""Readings as they enter the pipeline, and the per-reading outcome returned to senders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal


@dataclass(slots=True)
class RawReading:
    """A reading as a source delivers it, before normalisation.

    ``value`` is whatever the source sent (number, text, None). ``ts`` is an aware datetime, or
    text in ISO 8601 / epoch seconds; text without an offset is read in the source's zone.
    ``id`` is the sender's idempotency key, if it has one.
    """

    device: str
    metric: str
    value: object
    ts: datetime | str | float | None
    id: str | None = None
    unit: str | None = None


Outcome = Literal["accepted", "duplicate", "rejected"]


@dataclass(slots=True, frozen=True)
class ReadingResult:
    """Outcome of one submitted reading; ``reason`` is a stable code when rejected."""

    outcome: Outcome
    reading_id: str | None = None
    reason: str | None = None
    detail: str | None = None
    late: bool = False
