"""The protocol every integration module follows.

An integration is started with an ``emit`` callback that hands readings to the hub and returns
once the hub has committed them (as a future); starting returns the function that stops it.
Integrations that act on the outside world also run action runs from the outbox. This layer
does not retry emits and does not buffer readings while the hub is stopping: each integration
decides what to do with readings the hub refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from rules.readings import RawReading, ReadingResult

Emit = Callable[[str, Sequence[RawReading]], "Future[list[ReadingResult]]"]
Stop = Callable[[], None]


class Integration(Protocol):
    """A connection to one outside system: a source of readings, a target of actions, or both."""

    id: str

    def start(self, emit: Emit) -> Stop:
        """Start receiving; return the function that stops this integration."""
        ...

    def health(self) -> dict[str, Any]:
        """Return ``{"healthy": bool, ...}`` with whatever explains the state."""
        ...
