"""The protocol every integration module follows.

An integration is started with an ``emit`` callback that hands readings to the hub and returns
once the hub has committed them (as a future); starting returns the function that stops it.
Integrations that act on the outside world also run action runs from the outbox. This layer
does not retry emits and does not buffer readings while the hub is stopping: each integration
decides what to do with readings the hub refuses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from rules.ingest import IngestorStopped
from rules.readings import RawReading, ReadingResult

logger = logging.getLogger(__name__)

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


class ReadingSubmitter:
    """Hands a feed's readings to the hub and counts what the hub rejects.

    A feed that uses it sets ``id``, ``kind`` (for log lines), ``_emit``, ``_lock``,
    ``last_error`` and ``rejected``. Submitting does not wait for the commit, so a slow store
    does not hold up the feed's network thread.
    """

    id: str
    kind: str
    _emit: Emit | None
    _lock: threading.Lock
    last_error: str | None
    rejected: int

    def _submit(self, readings: Sequence[RawReading]) -> None:
        if not readings:
            return
        assert self._emit is not None
        try:
            future = self._emit(self.id, readings)
        except IngestorStopped:
            logger.warning("%s source %s: the hub is stopping; %d readings dropped", self.kind, self.id, len(readings))
            return
        future.add_done_callback(self._count_results)

    def _count_results(self, future: Future[list[ReadingResult]]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.last_error = f"the hub did not store readings: {error}"
            logger.warning("%s source %s: %s", self.kind, self.id, self.last_error)
            return
        rejected = sum(1 for result in future.result() if result.outcome == "rejected")
        with self._lock:
            self.rejected += rejected
