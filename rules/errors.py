"""Exceptions that Simpul raises across module boundaries, under one base class.

    SimpulError
     +-- ActionError
          +-- RetryableActionError
          +-- PermanentActionError

Executors of outbox actions convert the errors of their outside system into the two action
errors at the boundary, with ``raise ... from``, so that the outbox worker decides between a
retry and a dead run without knowing which system failed.
"""

from __future__ import annotations


class SimpulError(Exception):
    """Base class of the exceptions above; catch it to handle any of them."""


class ActionError(SimpulError):
    """Raised when an action run could not be carried out; its subclass decides whether the run is retried."""


class RetryableActionError(ActionError):
    """Raised when an attempt failed for a reason that may pass: a network error, a timeout,
    an HTTP 5xx, 408 or 429.

    ``retry_after_seconds`` is the delay the receiver asked for, e.g. in a ``Retry-After``
    header, or None when it asked for none.
    """

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PermanentActionError(ActionError):
    """Raised when repeating the attempt cannot succeed: an HTTP 4xx other than 408 and 429,
    a missing secret or an unknown target."""
