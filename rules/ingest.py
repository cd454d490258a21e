"""Live ingestion: one writer thread that owns the pipeline, with group commit.

Senders (integrations) call ``submit`` from any thread and get a future that completes after
their readings are committed; coroutines (HTTP requests) await ``store`` instead. The writer
takes whatever is queued, up to ``max_batch`` readings, processes each sender's readings in one
transaction per source, and completes the futures. Many small requests therefore share commits,
while each request is still acknowledged only after its own readings are durable. Once a second
the writer moves the engine clock to the wall clock, so ``for`` durations fire without new
readings.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rules.pipeline import Pipeline
from rules.readings import RawReading, ReadingResult
from rules.store.models import utc_now

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Submission:
    """Readings of one sender, with the future of ``submit`` or the asyncio future that ``store`` awaits."""

    source_id: str
    readings: Sequence[RawReading]
    future: Future[list[ReadingResult]] | None
    waiter: asyncio.Future[list[ReadingResult]] | None = None


class IngestorStopped(RuntimeError):
    """Raised by ``submit`` after ``stop``."""


class Ingestor:
    """Serialises all writes to the pipeline on one thread."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_batch: int = 5000,
        tick_seconds: float = 1.0,
        gather_seconds: float = 0.002,
    ) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.gather_seconds = gather_seconds
        self.tick_seconds = tick_seconds
        self._queue: queue.Queue[_Submission | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="simpul-ingestor", daemon=True)
        self._stopped = threading.Event()
        self._last_tick: datetime | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, source_id: str, readings: Sequence[RawReading]) -> Future[list[ReadingResult]]:
        if self._stopped.is_set():
            raise IngestorStopped("the hub is stopping; send the readings again later")
        future: Future[list[ReadingResult]] = Future()
        self._queue.put(_Submission(source_id, readings, future))
        return future

    async def store(self, source_id: str, readings: Sequence[RawReading]) -> list[ReadingResult]:
        """Submit readings from a coroutine and return their results once they are committed.

        The writer completes every waiting coroutine of one event loop with a single call into
        that loop, which costs less per request than a ``submit`` future wrapped for asyncio.
        Cancelling the caller does not withdraw the readings: they are stored all the same.
        """
        if self._stopped.is_set():
            raise IngestorStopped("the hub is stopping; send the readings again later")
        waiter: asyncio.Future[list[ReadingResult]] = asyncio.get_running_loop().create_future()
        self._queue.put(_Submission(source_id, readings, None, waiter))
        # The writer skips a cancelled waiter but stores its readings.
        return await waiter

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.tick_seconds)
            except queue.Empty:
                self._tick()
                continue
            if first is None:
                return
            batch = [first]
            size = len(first.readings)
            while size < self.max_batch:
                try:
                    # A short wait lets concurrent requests share one commit.
                    item = self._queue.get(timeout=self.gather_seconds)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
                size += len(item.readings)
            self._write(batch)
            self._tick()

    def _write(self, batch: list[_Submission]) -> None:
        by_source: dict[str, list[_Submission]] = {}
        for submission in batch:
            # A sender that gave up (cancelled its future) does not get its readings stored.
            if submission.future is None or submission.future.set_running_or_notify_cancel():
                by_source.setdefault(submission.source_id, []).append(submission)

        waiting: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for source_id, submissions in by_source.items():
            readings = [reading for submission in submissions for reading in submission.readings]
            try:
                results = self.pipeline.process(source_id, readings)
            except Exception as error:
                for submission in submissions:
                    _settle(submission, error, waiting)
                continue
            offset = 0
            for submission in submissions:
                count = len(submission.readings)
                _settle(submission, results[offset : offset + count], waiting)
                offset += count

        for loop, outcomes in waiting.items():
            try:
                loop.call_soon_threadsafe(_settle_waiters, outcomes)
            except RuntimeError:
                logger.warning("%d senders stopped waiting: their event loop closed before the commit", len(outcomes))

    def _tick(self) -> None:
        now = utc_now()
        if self._last_tick is not None and (now - self._last_tick).total_seconds() < self.tick_seconds:
            return
        self._last_tick = now
        try:
            self.pipeline.tick(now)
        except Exception:
            logger.exception("clock tick at %s failed", now.isoformat())


def _settle(
    submission: _Submission,
    outcome: list[ReadingResult] | Exception,
    waiting: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]],
) -> None:
    """Complete a ``submit`` future now, or queue a ``store`` waiter for its event loop."""
    if submission.waiter is not None:
        waiting.setdefault(submission.waiter.get_loop(), []).append((submission.waiter, outcome))
        return
    assert submission.future is not None
    if isinstance(outcome, Exception):
        submission.future.set_exception(outcome)
    else:
        submission.future.set_result(outcome)


def _settle_waiters(outcomes: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Complete ``store`` waiters on their event loop's thread."""
    for waiter, outcome in outcomes:
        if waiter.done():
            continue
        if isinstance(outcome, Exception):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
