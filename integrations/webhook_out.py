"""Outgoing webhooks: the executor that POSTs ``webhook`` action runs to their configured target.

Each request carries these headers:

- ``X-Simpul-Delivery``: the action run id. A run can be delivered more than once (the outbox
  is at least once), and receivers de-duplicate by this id.
- ``X-Simpul-Timestamp``: Unix time in whole seconds when the request was signed.
- ``X-Simpul-Signature``: ``sha256=`` and the hex HMAC-SHA256 of ``{timestamp}.{body}`` keyed
  with the target's secret. Receivers check it with ``verify_signature``.

This module does not retry, schedule or record anything. It makes one attempt and converts the
outcome into ``RetryableActionError`` or ``PermanentActionError``, and the outbox worker does the
rest. It never logs the target URL or the request headers, and it keeps the URL's query string
and user info out of error messages, because they often carry tokens.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC
from types import TracebackType

import httpx

from rules.config import WebhookTarget
from rules.errors import PermanentActionError, RetryableActionError
from rules.secrets import MissingSecret, resolve_secret
from rules.store.models import ActionRun

SIGNATURE_PREFIX = "sha256="
USER_AGENT = "simpul"
# 408 Request Timeout and 429 Too Many Requests are the 4xx responses that a later attempt can pass.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


def sign_body(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the ``X-Simpul-Signature`` value for ``body`` sent at ``timestamp``."""
    message = timestamp.encode("ascii") + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float, max_skew_seconds: float
) -> bool:
    """Check an ``X-Simpul-Signature`` header and its timestamp, comparing in constant time.

    Returns False when the timestamp is not whole Unix seconds, differs from ``now`` by more than
    ``max_skew_seconds`` (a replayed request), or the signature does not match. Like the hub's
    ingestion API, it accepts the prefix and the hex digits in either case.
    """
    is_unix_seconds = timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
    if not is_unix_seconds:
        return False
    if abs(now - int(timestamp)) > max_skew_seconds:
        return False

    expected = sign_body(secret, timestamp, body).encode("ascii")
    provided = signature.strip().lower().encode("utf-8")
    return hmac.compare_digest(expected, provided)


def _quiet_http_client_logs() -> None:
    # httpx logs every request URL at INFO, query string included, and httpcore logs connection
    # details at DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


class WebhookExecutor:
    """Sends ``webhook`` action runs to the targets configured under ``webhooks:``.

    ``targets`` maps a target id to its target. Without ``client`` the executor creates its own
    and closes it in ``close``. A given client is left open for its owner to close.
    """

    def __init__(self, targets: Mapping[str, WebhookTarget], client: httpx.Client | None = None) -> None:
        _quiet_http_client_logs()
        self.targets = dict(targets)
        self._owns_client = client is None
        self.client = client if client is not None else httpx.Client(follow_redirects=False)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> WebhookExecutor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def max_attempts(self, run: ActionRun) -> int:
        """Return the target's ``max_attempts``, or 1 for an unknown target."""
        target = self.targets.get(run.target or "")
        return target.max_attempts if target is not None else 1

    def run(self, run: ActionRun) -> None:
        """POST the run's payload to its target once, signed.

        Raises PermanentActionError for an unknown target, a missing secret, a payload that is
        not JSON, an invalid URL, a redirect or an HTTP 4xx other than 408 and 429.
        Raises RetryableActionError for a connection error, a timeout, an HTTP 5xx, 408 or 429.
        """
        target = self.targets.get(run.target or "")
        if target is None:
            known = ", ".join(sorted(self.targets)) or "none"
            raise PermanentActionError(
                f"unknown webhook target {run.target!r}: add it under webhooks: in config.yaml (configured: {known})"
            )
        try:
            secret = resolve_secret(target.secret).encode("utf-8")
        except MissingSecret as error:
            raise PermanentActionError(f"webhook target {target.id}: missing secret: {error}") from error
        try:
            body = json.dumps(run.payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise PermanentActionError(f"webhook target {target.id}: the payload is not valid JSON: {error}") from error

        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Simpul-Delivery": str(run.id),
            "X-Simpul-Timestamp": timestamp,
            "X-Simpul-Signature": sign_body(secret, timestamp, body),
        }
        response = self._post(target, body, headers)
        self._check_status(target, response)

    def _post(self, target: WebhookTarget, body: bytes, headers: dict[str, str]) -> httpx.Response:
        # httpx applies the timeout to each phase (connect, write, each read), not to the whole request.
        timeout_seconds = target.timeout.total_seconds()
        try:
            return self.client.post(target.url, content=body, headers=headers, timeout=timeout_seconds)
        except httpx.TimeoutException as error:
            raise RetryableActionError(
                f"webhook target {target.id}: timed out after {timeout_seconds:g} s ({type(error).__name__})"
            ) from error
        except httpx.TransportError as error:
            detail = _redact(f"{type(error).__name__}: {error}", target.url)
            raise RetryableActionError(f"webhook target {target.id}: request failed: {detail}") from error
        except httpx.InvalidURL as error:
            raise PermanentActionError(f"webhook target {target.id}: invalid url: fix it in config.yaml") from error

    def _check_status(self, target: WebhookTarget, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return

        described = f"webhook target {target.id} returned HTTP {status} {response.reason_phrase}".rstrip()
        retryable = status >= 500 or status in RETRYABLE_CLIENT_ERRORS
        if retryable:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"), now=time.time())
            raise RetryableActionError(described, retry_after_seconds=retry_after)
        if 300 <= status < 400:
            raise PermanentActionError(f"{described}: redirects are not followed, so set the final url in config.yaml")
        raise PermanentActionError(described)


def _retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """Read a ``Retry-After`` header: delay seconds or an HTTP date; None when absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _redact(text: str, url: str) -> str:
    """Remove the URL's query string and user info from ``text``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return text
    for part in (parsed.query.decode("ascii", "replace"), parsed.userinfo.decode("ascii", "replace")):
        if part:
            text = text.replace(part, "[redacted]")
    return text
