"""The outbox worker: carries out the action runs that the pipeline leaves pending, such as
outgoing webhooks, and records each outcome on the run.

Outcomes of one attempt:
- success: the run is ``succeeded``.
- ``RetryableActionError``, or any other exception from the executor: the run is ``failed``
  with one more attempt, and is due again after ``backoff_delay``. It is ``dead`` instead when
  its attempts reach the executor's ``max_attempts`` for it.
- ``PermanentActionError``: the run is ``dead`` at once.

Delivery is at least once. The worker leases a run before it runs it (see
``rules.store.ops.lease_due_runs``), and the run stays ``pending`` or ``failed`` until its
outcome is written. A worker that crashes or is stopped mid-send therefore sends the run again
once the lease ends, and a receiver may get one run twice: it de-duplicates by the run id,
which the webhook executor sends in the ``X-Simpul-Delivery`` header.

Executors are given to the worker from outside, because ``rules`` does not import ``integrations``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from rules.errors import PermanentActionError, RetryableActionError
from rules.store import ops
from rules.store.models import ActionRun, utc_now

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 600.0
# Runs that failed together should not retry together, so each delay is cut by up to this share.
JITTER_SHARE = 0.1
# NOTE: a send that outlasts the lease may be sent twice when a second worker leases the run
# meanwhile, so the lease must exceed the longest executor timeout.
DEFAULT_LEASE = timedelta(minutes=5)
# Store failures of the polling thread are logged on the first one and then every this many.
POLL_ERROR_LOG_EVERY = 60

_RANDOM = random.Random()


class Executor(Protocol):
    """Carries out the action runs of one type (e.g. ``webhook``) for the outbox worker.

    Error messages are logged and stored on the run, so they must not contain secrets or URL
    query strings.
    """

    def run(self, run: ActionRun) -> None:
        """Make one attempt at ``run``.

        Raises RetryableActionError when a later attempt may succeed and PermanentActionError
        when none can.
        """

    def max_attempts(self, run: ActionRun) -> int:
        """Return how many attempts ``run`` gets before it is dead."""


def backoff_delay(
    attempts: int, *, retry_after_seconds: float | None = None, rng: random.Random | None = None
) -> timedelta:
    """Return the wait before the next attempt of a run that has failed ``attempts`` times.

    The wait is 2, 4, 8, ... seconds, at most 10 minutes, less a random share of up to 10 %.
    A receiver's ``retry_after_seconds`` lengthens it, up to the same 10 minutes.
    """
    generator = rng if rng is not None else _RANDOM
    exponential = min(FIRST_RETRY_SECONDS * 2.0 ** (attempts - 1), MAX_RETRY_SECONDS)
    seconds = exponential * (1.0 - generator.uniform(0.0, JITTER_SHARE))
    if retry_after_seconds is not None:
        seconds = max(seconds, min(retry_after_seconds, MAX_RETRY_SECONDS))
    return timedelta(seconds=seconds)


class OutboxWorker:
    """Polls the store for due action runs and runs each with the executor for its type.

    ``executors`` maps an action type to its executor; runs of other types are left alone.
    ``start`` runs the worker on a background thread, and tests call ``run_once`` directly.
    """

    def __init__(
        self,
        db: Engine,
        executors: Mapping[str, Executor],
        *,
        poll_seconds: float = 1.0,
        lease: timedelta = DEFAULT_LEASE,
        batch_size: int = 50,
        rng: random.Random | None = None,
    ) -> None:
        if not executors:
            raise ValueError("an outbox worker needs at least one executor, e.g. {'webhook': WebhookExecutor(...)}")
        self.db = db
        self.executors = dict(executors)
        self.poll_seconds = poll_seconds
        self.lease = lease
        self.batch_size = batch_size
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._health_lock = threading.Lock()
        self._health: dict[str, Any] = {
            "last_poll_at": None,
            "failed_polls_in_a_row": 0,
            "succeeded": 0,
            "retried": 0,
            "dead": 0,
            "leases_lost": 0,
            "poll_errors": 0,
            "last_poll_error": None,
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Callable[[], None]:
        """Start polling on a background thread; return the function that stops it."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the outbox worker is already running; call stop() before starting it again")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._poll_forever, name="simpul-outbox", daemon=True)
        self._thread.start()
        logger.info(
            "outbox worker started for action types %s, polling every %.1f s",
            ", ".join(sorted(self.executors)),
            self.poll_seconds,
        )
        return self.stop

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and wait up to ``timeout`` seconds for a send in progress to end."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout)
        if thread.is_alive():
            # The run keeps its lease and is sent again once the lease ends.
            logger.warning("outbox worker did not stop within %.1f s because a send is still in progress", timeout)
            return
        self._thread = None
        self._stopping.clear()
        logger.info("outbox worker stopped")

    def health(self) -> dict[str, Any]:
        """Return the worker's state and its counts of outcomes since it was created.

        ``healthy`` is true while the polling thread runs and its latest poll reached the store.
        """
        with self._health_lock:
            snapshot = dict(self._health)
        running = self._thread is not None and self._thread.is_alive()
        snapshot["running"] = running
        snapshot["healthy"] = running and snapshot["failed_polls_in_a_row"] == 0
        return snapshot

    def _poll_forever(self) -> None:
        failures_in_a_row = 0
        while not self._stopping.is_set():
            ran = 0
            try:
                ran = self.run_once()
            except Exception as error:
                # The store may be briefly unavailable, so the next poll tries again.
                failures_in_a_row += 1
                self._count(
                    "poll_errors",
                    failed_polls_in_a_row=failures_in_a_row,
                    last_poll_error=f"{type(error).__name__}: {error}",
                )
                if failures_in_a_row == 1 or failures_in_a_row % POLL_ERROR_LOG_EVERY == 0:
                    logger.error(
                        "outbox poll failed (%d in a row), trying again every %.1f s: %s",
                        failures_in_a_row,
                        self.poll_seconds,
                        error,
                        exc_info=failures_in_a_row == 1,
                    )
            else:
                if failures_in_a_row:
                    logger.info("outbox poll works again after %d failures", failures_in_a_row)
                    failures_in_a_row = 0
                    with self._health_lock:
                        self._health["failed_polls_in_a_row"] = 0

            batch_was_full = ran >= self.batch_size
            if not batch_was_full:
                self._stopping.wait(self.poll_seconds)

    # --- runs --------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> int:
        """Lease and run due runs one at a time, at most ``batch_size``; return how many ran.

        ``now`` fixes the clock for every lease and retry time, which is how tests drive time.
        Without it, each run reads the wall clock when it is leased.
        """
        with self._health_lock:
            self._health["last_poll_at"] = (now or utc_now()).isoformat()

        ran = 0
        while ran < self.batch_size and not self._stopping.is_set():
            leased_at = now or utc_now()
            runs = ops.lease_due_runs(engine=self.db, types=self.executors, now=leased_at, lease=self.lease, limit=1)
            if not runs:
                break
            self._attempt(runs[0], finished_at=now)
            ran += 1
        return ran

    def _attempt(self, run: ActionRun, *, finished_at: datetime | None) -> None:
        """Run one attempt of a leased run and write its outcome.

        ``finished_at`` is the fixed clock of ``run_once``, or None for the wall clock after the
        attempt.
        """
        assert run.id is not None and run.next_attempt_at is not None
        executor = self.executors[run.type]
        lease_until = run.next_attempt_at
        attempts = run.attempts + 1
        described = _describe(run)

        try:
            executor.run(run)
        except PermanentActionError as error:
            self._finish(run, lease_until, ops.RUN_DEAD, attempts, str(error), None)
            logger.error("%s is dead after attempt %d: %s", described, attempts, error)
            return
        except RetryableActionError as error:
            self._retry_or_bury(
                run, executor, lease_until, attempts, str(error), error.retry_after_seconds, finished_at
            )
            return
        except Exception as error:
            # An executor bug is retried like a network error, because it may be fixed before the
            # last attempt.
            message = f"unexpected {type(error).__name__} in the {run.type} executor: {error}"
            logger.error("%s: %s", described, message, exc_info=True)
            self._retry_or_bury(run, executor, lease_until, attempts, message, None, finished_at)
            return

        self._finish(run, lease_until, ops.RUN_SUCCEEDED, attempts, None, None)
        logger.debug("%s succeeded on attempt %d", described, attempts)

    def _retry_or_bury(
        self,
        run: ActionRun,
        executor: Executor,
        lease_until: datetime,
        attempts: int,
        message: str,
        retry_after_seconds: float | None,
        finished_at: datetime | None,
    ) -> None:
        """Schedule the next attempt of a run that failed, or mark it dead after its last attempt."""
        max_attempts = executor.max_attempts(run)
        if attempts >= max_attempts:
            self._finish(run, lease_until, ops.RUN_DEAD, attempts, message, None)
            logger.error("%s is dead after %d of %d attempts: %s", _describe(run), attempts, max_attempts, message)
            return

        delay = backoff_delay(attempts, retry_after_seconds=retry_after_seconds, rng=self._rng)
        retry_at = (finished_at or utc_now()) + delay
        self._finish(run, lease_until, ops.RUN_FAILED, attempts, message, retry_at)
        logger.warning(
            "%s failed attempt %d of %d, retrying in %.1f s: %s",
            _describe(run),
            attempts,
            max_attempts,
            delay.total_seconds(),
            message,
        )

    def _finish(
        self,
        run: ActionRun,
        lease_until: datetime,
        status: str,
        attempts: int,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> None:
        assert run.id is not None
        written = ops.finish_leased_run(
            engine=self.db,
            run_id=run.id,
            lease_until=lease_until,
            status=status,
            attempts=attempts,
            error=error,
            next_attempt_at=next_attempt_at,
        )
        if not written:
            self._count("leases_lost")
            logger.warning(
                "%s: its lease ended and another worker leased it before the outcome %s was written, "
                "so the other worker's outcome stands",
                _describe(run),
                status,
            )
            return
        self._count({ops.RUN_SUCCEEDED: "succeeded", ops.RUN_FAILED: "retried", ops.RUN_DEAD: "dead"}[status])

    def _count(self, key: str, **latest: Any) -> None:
        with self._health_lock:
            self._health[key] += 1
            self._health.update(latest)


def _describe(run: ActionRun) -> str:
    """Name a run by its ids for log lines, e.g. ``action run 7 (rule r, device d, target t)``."""
    return f"action run {run.id} (rule {run.rule_id}, device {run.device_id}, target {run.target})"
