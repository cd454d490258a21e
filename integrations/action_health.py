"""Health of the outbox executors that keep no connection of their own (webhooks, Node-RED):
whether the latest attempt for each run target reached its receiver.

The MQTT command and Home Assistant executors report their kept connections themselves. An HTTP
executor opens a request per attempt, so its health is what its attempts found: a target is
unhealthy from an attempt that failed with ``RetryableActionError`` (the receiver cannot be
reached, times out or responds with a 5xx status) until an attempt reaches it again. An attempt that ends in
``PermanentActionError`` did reach the receiver, which refused the run, so the target stays
healthy and the error is shown.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from rules.errors import PermanentActionError, RetryableActionError
from rules.outbox import Executor
from rules.store.models import ActionRun, utc_now


class ReportingExecutor:
    """Wraps an outbox executor and keeps the outcome of the latest attempt for each run target."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._targets: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def max_attempts(self, run: ActionRun) -> int:
        return self.executor.max_attempts(run)

    def run(self, run: ActionRun) -> None:
        try:
            self.executor.run(run)
        except RetryableActionError as error:
            self._record(run, healthy=False, error=str(error))
            raise
        except PermanentActionError as error:
            self._record(run, healthy=True, error=str(error))
            raise
        self._record(run, healthy=True, error=None)

    def health(self) -> dict[str, Any]:
        """Return ``healthy`` (false while any target's latest attempt could not reach it) and each target's state."""
        with self._lock:
            targets = {target: dict(state) for target, state in self._targets.items()}
        return {"healthy": all(state["healthy"] for state in targets.values()), "targets": targets}

    def _record(self, run: ActionRun, *, healthy: bool, error: str | None) -> None:
        attempted_at: datetime = utc_now()
        with self._lock:
            self._targets[run.target or "-"] = {
                "healthy": healthy,
                "last_error": error,
                "last_attempt_at": attempted_at.isoformat(),
            }
