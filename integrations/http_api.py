"""HTTP API of the hub: readings in, alerts out, a health check, and OpenAPI docs at ``/docs``.

Senders post readings to ``POST /api/v1/readings``. Every request names its source in the
``X-Simpul-Source`` header and authenticates the way that ``http`` source is configured:

* a bearer token, ``Authorization: Bearer <token>``, compared in constant time;
* or an HMAC-SHA256 signature, ``X-Simpul-Signature: sha256=<hex>`` of
  ``"<X-Simpul-Timestamp>.<raw body>"``. The timestamp must lie within the source's
  ``max_skew`` of the hub clock, and a signature that was already accepted is rejected while
  its timestamp is still inside that window.

A source with a ``mapping`` may instead post its own JSON format to
``POST /api/v1/webhooks/<source id>``, which ``integrations.payload_mapping`` maps to readings.
The same authentication, body limits and response apply.

The API responds to a readings request only after the ingestor has committed its readings.
Whole-request errors are JSON ``{"error": code, "detail": text}`` with a 4xx or 5xx status.
Per-reading problems such as an unknown device or an invalid value do not fail the request:
they come back as ``rejected`` results next to the accepted readings.

The module does not decide what a reading means (``rules.normalize`` does) and does not write
to the store itself except for the alert steps. It never logs request bodies, tokens or
secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

import pydantic_core
import sqlalchemy
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from integrations.payload_mapping import PayloadShapeError, UnmappedItem, map_items, payload_items
from rules.config import Config, HttpSource, PayloadMapping
from rules.ingest import Ingestor, IngestorStopped
from rules.readings import RawReading, ReadingResult
from rules.secrets import MissingSecret, resolve_secret
from rules.store import ops
from rules.store.models import Alert

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_READINGS_PER_REQUEST = 10_000

# Maximum length of a reading's sender id and unit, in characters: the length of the store's columns.
MAX_ID_LENGTH = 200
MAX_UNIT_LENGTH = 40

# A 422 response lists at most this many shape problems, so that a large broken batch cannot
# produce a response as large as the request.
MAX_REPORTED_PROBLEMS = 100

# Each remembered signature costs about 200 bytes, so the cap bounds the replay cache at
# roughly 40 MB. Past the cap the oldest signatures are dropped, and a request replayed after
# its signature was dropped is caught only by the timestamp check.
MAX_REMEMBERED_SIGNATURES = 200_000

# Repeated rejections of one kind from one source are logged once per window, then counted.
REJECTION_LOG_WINDOW_SECONDS = 60.0

SOURCE_HEADER = "x-simpul-source"
TIMESTAMP_HEADER = "x-simpul-timestamp"
SIGNATURE_HEADER = "x-simpul-signature"
SIGNATURE_PREFIX = "sha256="

# Schemes named in the WWW-Authenticate header of 401 responses. The HMAC scheme is this API's
# own name for the signature headers.
BEARER_SCHEME = "Bearer"
HMAC_SCHEME = "Simpul-HMAC-SHA256"


# --- request and response models ---------------------------------------------------------------


def _check_timestamp_type(value: Any) -> Any:
    # JSON true and false would otherwise pass as the integers 1 and 0.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PydanticCustomError(
            "timestamp_type", 'expected ISO 8601 text or epoch seconds, e.g. "2025-01-31T14:00:00+07:00" or 1738306800'
        )
    return value


class ReadingIn(BaseModel):
    """One reading as a sender posts it."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "device": "manggarai",
                    "metric": "level",
                    "value": 862,
                    "ts": "2025-01-31T14:00:00+07:00",
                    "id": "pa-1738306800",
                }
            ]
        },
    )

    device: str = Field(description="Device id as registered in config.yaml, e.g. `manggarai`.")
    metric: str = Field(description="A metric of the device's kind, e.g. `level`.")
    value: Any = Field(
        description="The measured value: a number, numeric text, a state such as `on`, a boolean, or null. "
        "Invalid values (null, `unavailable`, text where a number is expected, out of range) are answered "
        "as a `rejected` result with a reason, not as a request error."
    )
    ts: Annotated[str | int | float, BeforeValidator(_check_timestamp_type)] = Field(
        description="Event time: ISO 8601 text, read in the source's time zone when it has no offset, or "
        "epoch seconds (numbers above 1e11 are read as milliseconds)."
    )
    id: str | None = Field(
        default=None,
        max_length=MAX_ID_LENGTH,
        description="Idempotency key. Without it the device, metric and ts identify the reading.",
    )
    unit: str | None = Field(
        default=None,
        max_length=MAX_UNIT_LENGTH,
        description="Unit as sent, stored with the reading without conversion. Without it the metric's unit "
        "from config is stored.",
    )


class ReadingOutcome(BaseModel):
    """The outcome of one reading of the request."""

    index: int = Field(description="Position of the reading in the request, 0 for a single object.")
    outcome: Literal["accepted", "duplicate", "rejected"]
    id: str | None = Field(description="The stored reading's id: the sender's id, or device|metric|ts.")
    reason: str | None = Field(description="Stable code of a rejection, e.g. `unknown_device` or `not_a_number`.")
    detail: str | None = Field(description="Human-readable explanation of a rejection.")
    late: bool = Field(
        description="True when the reading is older than the newest stored one for its device and metric."
    )


class ReadingsResponse(BaseModel):
    """Per-reading outcomes of a readings request, in request order, with totals."""

    results: list[ReadingOutcome]
    accepted: int
    duplicate: int
    rejected: int


class Problem(BaseModel):
    """One problem in a request: the list index and field it concerns, and what is wrong."""

    index: int | None = Field(default=None, description="Position of the reading in the request, when it concerns one.")
    field: str | None = Field(default=None, description="Field or parameter name, when it concerns one.")
    message: str


class ErrorResponse(BaseModel):
    """A whole-request error."""

    error: str = Field(description="Stable error code, e.g. `invalid_token` or `malformed_json`.")
    detail: str = Field(description="What failed, on which value, and what to do next.")
    problems: list[Problem] | None = Field(default=None, description="Every problem found, in 422 responses.")


class AlertOut(BaseModel):
    """An alert: the record of a rule firing, with who acknowledged and resolved it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    rule_id: str
    rule_name: str
    device_id: str
    agency_id: str
    severity: str
    status: Literal["open", "acknowledged", "resolved"]
    message: str
    value: str | None
    flapping: bool
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolve_note: str | None


class AlertsResponse(BaseModel):
    """Alerts, newest first."""

    alerts: list[AlertOut]


class AlertStepIn(BaseModel):
    """The person who acknowledges or resolves an alert, and an optional note, both written to the audit log."""

    model_config = ConfigDict(extra="forbid", strict=True)

    by: str = Field(min_length=1, max_length=100, description="Name of the person taking the step.")
    note: str | None = Field(default=None, max_length=1000)


class HealthResponse(BaseModel):
    """Hub status, with the fields of the hub's health report beside ``status``."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description="`ok`, or the status that the hub's health report returns.")


_READINGS = TypeAdapter(list[ReadingIn])
_READING_FIELDS = frozenset(ReadingIn.model_fields)


# --- errors ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """Raised by a handler to respond with a JSON error, which the app's exception handler sends."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        problems: list[Problem] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.problems = problems
        self.headers = dict(headers) if headers else None

    def response(self) -> JSONResponse:
        content: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.problems is not None:
            content["problems"] = [problem.model_dump() for problem in self.problems]
        return JSONResponse(content, status_code=self.status, headers=self.headers)


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase} for status in statuses}


@dataclass(slots=True)
class _LogWindow:
    started: float
    repeats: int = 0


class _RejectionLog:
    """Logs rejected requests at WARNING: the first of each (source, error) per window, then a count.

    A sender that floods the hub with bad requests therefore costs one log line per minute per
    error code, not one per request. Unknown source names share one key, so that invented names
    cannot grow the table. Counts still open when the app stops are logged by ``flush``.
    """

    def __init__(self, window: float = REJECTION_LOG_WINDOW_SECONDS) -> None:
        self.window = window
        self._windows: dict[tuple[str, str], _LogWindow] = {}

    def record(self, source: str, code: str, status: int, detail: str) -> None:
        now = time.monotonic()
        key = (source, code)
        current = self._windows.get(key)
        if current is not None and now - current.started < self.window:
            current.repeats += 1
            return

        if current is not None:
            self._log_repeats(key, current, now)
        self._windows[key] = _LogWindow(now)
        outcome = "failed" if status >= 500 else "rejected"
        logger.warning("source %s: request %s with %d %s: %s", source, outcome, status, code, detail)

    def flush(self) -> None:
        now = time.monotonic()
        for key, current in self._windows.items():
            self._log_repeats(key, current, now)
        self._windows.clear()

    @staticmethod
    def _log_repeats(key: tuple[str, str], current: _LogWindow, now: float) -> None:
        if not current.repeats:
            return
        source, code = key
        logger.warning(
            "source %s: %d more requests got error %s in the last %.0f s",
            source,
            current.repeats,
            code,
            now - current.started,
        )


# --- authentication -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SourceKeys:
    """The credentials of one ``http`` source, read from the environment when the app is created."""

    source_id: str
    token: bytes | None
    hmac_secret: bytes | None
    max_skew: float
    # False when the referenced environment variable was unset, so no request can authenticate.
    configured: bool


@dataclass(frozen=True, slots=True)
class _SignedHeaders:
    timestamp: str
    signature: str
    expires: float


@dataclass(frozen=True, slots=True)
class _Caller:
    """An authenticated request: its source, its raw body and, if signed, the remembered digest."""

    source: _SourceKeys
    body: bytes
    digest: bytes | None


class _ReplayCache:
    """Digests of accepted signed requests, each kept until its timestamp leaves the allowed skew.

    Used from the event loop thread only.
    """

    def __init__(self, max_entries: int = MAX_REMEMBERED_SIGNATURES) -> None:
        self.max_entries = max_entries
        self.evicted = 0
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def claim(self, digest: bytes, expires: float, now: float) -> bool:
        """Remember ``digest``, or return False when it is already remembered because the request is a replay."""
        self._drop_expired(now)
        if digest in self._expiry:
            return False
        if len(self._expiry) >= self.max_entries:
            self._expiry.popitem(last=False)
            self.evicted += 1
            if self.evicted % 10_000 == 1:
                logger.warning(
                    "replay cache full at %d signatures: %d dropped before their timestamps expired",
                    self.max_entries,
                    self.evicted,
                )
        self._expiry[digest] = expires
        return True

    def release(self, digest: bytes) -> None:
        """Forget ``digest`` so that a request the hub failed to process can be sent again as is."""
        self._expiry.pop(digest, None)

    def _drop_expired(self, now: float) -> None:
        # Entries are in arrival order, not expiry order, so an expired entry may wait behind a
        # newer one. That is harmless because the timestamp check rejects it first.
        while self._expiry:
            oldest = next(iter(self._expiry.values()))
            if oldest > now:
                return
            self._expiry.popitem(last=False)


class _Guard:
    """Source identification and credential checks for requests."""

    def __init__(self, config: Config) -> None:
        self.sources: dict[str, _SourceKeys] = {}
        self.mappings: dict[str, PayloadMapping] = {}
        self.other_sources: dict[str, str] = {}
        self.replays = _ReplayCache()
        for source in config.sources:
            if isinstance(source, HttpSource):
                self.sources[source.id] = _read_keys(source)
                if source.mapping is not None:
                    self.mappings[source.id] = source.mapping
            else:
                self.other_sources[source.id] = source.type

    def identify(self, request: Request, path_source: str | None = None) -> _SourceKeys:
        """Find the source that the X-Simpul-Source header names, or ``path_source`` from the URL when given."""
        header = request.headers.get(SOURCE_HEADER)
        name = path_source if path_source is not None else header
        where = "the URL" if path_source is not None else "X-Simpul-Source"
        if not name:
            raise ApiError(
                400,
                "missing_source",
                "missing X-Simpul-Source header: set it to the id of your http source in config.yaml",
            )
        if path_source is not None and header and header != path_source:
            raise ApiError(
                400,
                "source_mismatch",
                f"X-Simpul-Source names {_clip(header)!r} but the URL names {_clip(path_source)!r}: "
                "remove the header or make them match",
            )

        source = self.sources.get(name)
        if source is not None:
            request.scope["simpul.source"] = name
            if not source.configured:
                raise ApiError(
                    503,
                    "source_unavailable",
                    f"the hub has no credentials for source {name!r} because its secret is not set; "
                    "ask the hub operator to check the hub log",
                )
            return source

        other_type = self.other_sources.get(name)
        if other_type is not None:
            request.scope["simpul.source"] = name
            raise ApiError(
                403,
                "source_not_allowed",
                f"source {name!r} is a {other_type} source; only sources of type http may call the API",
            )
        raise ApiError(
            400,
            "unknown_source",
            f"unknown source {_clip(name)!r} in {where}: use the id of an http source in config.yaml",
        )

    def check_headers(self, source: _SourceKeys, request: Request, now: float) -> _SignedHeaders | None:
        """Check the bearer token, or the presence and age of the signature headers.

        Returns the signature headers for an HMAC source; its body is verified once read.
        """
        if source.token is not None:
            self._check_token(source, request)
            return None

        timestamp = request.headers.get(TIMESTAMP_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise _unauthorized(
                HMAC_SCHEME,
                "missing_signature",
                f"source {source.source_id!r} signs its requests: send X-Simpul-Timestamp (unix seconds) and "
                'X-Simpul-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">',
            )
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise _unauthorized(
                HMAC_SCHEME,
                "invalid_timestamp",
                f"invalid X-Simpul-Timestamp {_clip(timestamp)!r}: send the current unix time in whole seconds",
            )

        skew = now - int(timestamp)
        if abs(skew) > source.max_skew:
            direction = "behind" if skew > 0 else "ahead of"
            raise _unauthorized(
                HMAC_SCHEME,
                "stale_timestamp",
                f"X-Simpul-Timestamp {timestamp} is {abs(skew):.0f} s {direction} the hub clock, more than the "
                f"allowed {source.max_skew:.0f} s: sign the request again with the current time and check the "
                "sender's clock",
            )
        return _SignedHeaders(timestamp, signature, expires=int(timestamp) + source.max_skew)

    def verify_signature(self, source: _SourceKeys, signed: _SignedHeaders, body: bytes) -> bytes:
        """Verify the HMAC over the raw body and return the digest."""
        assert source.hmac_secret is not None
        message = signed.timestamp.encode("ascii") + b"." + body
        digest = hmac.new(source.hmac_secret, message, hashlib.sha256).digest()
        provided = signed.signature.strip()
        valid_form = provided[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX
        provided_hex = provided[len(SIGNATURE_PREFIX) :].lower().encode("latin-1")
        if not valid_form or not hmac.compare_digest(digest.hex().encode("ascii"), provided_hex):
            raise _unauthorized(
                HMAC_SCHEME,
                "invalid_signature",
                'invalid X-Simpul-Signature: expected sha256=<hex HMAC-SHA256 of "<X-Simpul-Timestamp>.<raw body>"> '
                f"with the secret of source {source.source_id!r}; sign the exact bytes you send",
            )
        return digest

    def claim_signature(self, digest: bytes, signed: _SignedHeaders, now: float) -> None:
        if not self.replays.claim(digest, signed.expires, now):
            raise _unauthorized(
                HMAC_SCHEME,
                "replayed_request",
                "this signature was already used: sign every request, a retry included, with a new X-Simpul-Timestamp",
            )

    @staticmethod
    def _check_token(source: _SourceKeys, request: Request) -> None:
        assert source.token is not None
        header = request.headers.get("authorization")
        if not header:
            raise _unauthorized(
                BEARER_SCHEME,
                "missing_credentials",
                "missing Authorization header: send 'Authorization: Bearer <token>' with the token of source "
                f"{source.source_id!r}",
            )

        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized(
                BEARER_SCHEME,
                "missing_credentials",
                "the Authorization header is not a bearer token: send 'Authorization: Bearer <token>' for source "
                f"{source.source_id!r}",
            )
        if not hmac.compare_digest(token.strip().encode("latin-1"), source.token):
            raise _unauthorized(
                BEARER_SCHEME,
                "invalid_token",
                f"invalid bearer token for source {source.source_id!r}: check the token the hub operator gave you",
            )


def _read_keys(source: HttpSource) -> _SourceKeys:
    auth = source.auth
    reference = auth.token if auth.token is not None else auth.hmac_secret
    assert reference is not None
    try:
        secret = resolve_secret(reference).encode("utf-8")
    except MissingSecret:
        logger.error(
            "source %s: environment variable %s is not set; the API responds 503 to this source until the hub "
            "is restarted with it",
            source.id,
            reference.env,
        )
        secret = b""
    return _SourceKeys(
        source_id=source.id,
        token=secret if auth.token is not None else None,
        hmac_secret=secret if auth.hmac_secret is not None else None,
        max_skew=auth.max_skew.total_seconds(),
        configured=bool(secret),
    )


class _Authenticator:
    """Request authentication: the checks of ``_Guard`` in request order, with the body read in between."""

    def __init__(self, guard: _Guard, max_body_bytes: int) -> None:
        self.guard = guard
        self.max_body_bytes = max_body_bytes

    async def authenticate(
        self, request: Request, *, json_body: bool, claim: bool, path_source: str | None = None
    ) -> _Caller:
        """Identify the source, check credentials, then read the body and verify its signature.

        ``claim`` remembers the signature to reject replays. Reads leave it out because two
        identical GETs signed in the same second are legitimate. ``path_source`` is the source
        id from the URL of a webhook route.
        """
        now = time.time()
        source = self.guard.identify(request, path_source)
        signed = self.guard.check_headers(source, request, now)
        if json_body:
            _check_json_content_type(request)
        body = await _read_body(request, self.max_body_bytes)

        if signed is None:
            return _Caller(source, body, None)
        digest = self.guard.verify_signature(source, signed, body)
        if not claim:
            return _Caller(source, body, None)
        self.guard.claim_signature(digest, signed, now)
        return _Caller(source, body, digest)


async def _read_caller(request: Request) -> _Caller:
    authenticator: _Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(request, json_body=False, claim=False)


async def _step_caller(request: Request) -> _Caller:
    authenticator: _Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(request, json_body=True, claim=True)


def _unauthorized(scheme: str, code: str, detail: str) -> ApiError:
    return ApiError(401, code, detail, headers={"WWW-Authenticate": f'{scheme} realm="simpul"'})


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- bodies ---------------------------------------------------------------------------------------


def _check_json_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media_type, *parameters = content_type.split(";")
    charset = "utf-8"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media_type.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        quoted_type = repr(_clip(content_type)) if content_type else "(missing)"
        raise ApiError(
            415,
            "unsupported_media_type",
            f"unsupported Content-Type {quoted_type}: send the body as application/json in UTF-8",
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, failing as soon as it is declared or found to be larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)

    # Counting the bytes also covers chunked bodies, which declare no length.
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _body_too_large(limit)
    except ClientDisconnect:
        raise ApiError(
            400, "incomplete_body", "the connection closed before the whole body arrived: send it again"
        ) from None
    return bytes(body)


def _body_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the request body is larger than the hub's limit of {limit} bytes (simpul.max_body_bytes): "
        "send fewer readings per request",
    )


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty: send a reading object or a JSON list of them")
    try:
        # pydantic_core's parser is about twice as fast as json's on a batch of readings. Where it
        # fails, json parses the body again: it accepts the same documents and a few more (lone
        # UTF-16 surrogates, UTF-16 and UTF-32 bodies), and its errors give line and column.
        return pydantic_core.from_json(body)
    except ValueError:
        pass
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise ApiError(
            400,
            "malformed_json",
            f"malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}; fix the body and send it again",
        ) from None
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_encoding", "the body is not valid UTF-8: encode the JSON as UTF-8") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the JSON body nests too deeply: send flat reading objects") from None
    except ValueError as error:
        # Python 3.11 raises a plain ValueError for integers longer than 4300 digits.
        raise ApiError(400, "malformed_json", f"the JSON body could not be read: {_clip(str(error), 200)}") from None


def _to_raw_readings(document: Any) -> list[RawReading]:
    """Check the shape of a readings body and convert it. Any shape problem rejects the whole request."""
    if isinstance(document, dict):
        items: list[Any] = [document]
    elif isinstance(document, list):
        items = document
    else:
        raise ApiError(
            422,
            "invalid_shape",
            f"the body is a JSON {_json_type(document)}: send a reading object or a JSON list of reading objects",
        )

    if not items:
        raise ApiError(400, "empty_list", "the list of readings is empty: send at least one reading")
    if len(items) > MAX_READINGS_PER_REQUEST:
        raise ApiError(
            413,
            "too_many_readings",
            f"the request holds {len(items)} readings, more than the limit of {MAX_READINGS_PER_REQUEST}: "
            "split it into smaller requests",
        )

    plain = _plain_readings(items)
    if plain is not None:
        return plain
    try:
        readings = _READINGS.validate_python(items)
    except ValidationError as error:
        problems = _shape_problems(error)
        bad_items = len({problem.index for problem in problems})
        raise ApiError(
            422,
            "invalid_shape",
            f"{bad_items} of {len(items)} readings have the wrong shape, so none were stored: fix the readings "
            "listed in problems and send the request again",
            problems=problems[:MAX_REPORTED_PROBLEMS],
        ) from None
    return [RawReading(r.device, r.metric, r.value, r.ts, r.id, r.unit) for r in readings]


def _plain_readings(items: list[Any]) -> list[RawReading] | None:
    """Convert items that are valid ReadingIn objects without building the models; return None when
    any item is not, so that ReadingIn's validation reports its problems.

    The checks are those of ReadingIn in strict mode, with no unknown fields, and they take about a
    quarter of the time of validating the models and converting them.
    """
    readings = []
    for item in items:
        if type(item) is not dict or not item.keys() <= _READING_FIELDS or "value" not in item:
            return None
        device = item.get("device")
        metric = item.get("metric")
        ts = item.get("ts")
        reading_id = item.get("id")
        unit = item.get("unit")
        if type(device) is not str or type(metric) is not str:
            return None
        # bool is not one of these types, so true and false are rejected as in _check_timestamp_type.
        if type(ts) is not str and type(ts) is not int and type(ts) is not float:
            return None
        if reading_id is not None and (type(reading_id) is not str or len(reading_id) > MAX_ID_LENGTH):
            return None
        if unit is not None and (type(unit) is not str or len(unit) > MAX_UNIT_LENGTH):
            return None
        readings.append(RawReading(device, metric, item["value"], ts, reading_id, unit))
    return readings


def _shape_problems(error: ValidationError) -> list[Problem]:
    """List the problems of a readings list, whose error locations start with the item's index."""
    problems = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        index, *fields = item["loc"]
        message = _shape_message(item["type"], item["msg"])
        problems.append(Problem(index=int(index), field=str(fields[0]) if fields else None, message=message))
    return problems


def _shape_message(error_type: str, message: str) -> str:
    if error_type == "model_type":
        return "expected a reading object with device, metric, value and ts"
    if error_type == "missing":
        return "missing field"
    if error_type == "extra_forbidden":
        return "unknown field: a reading has device, metric, value, ts, id and unit"
    return message


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def _readings_answer(results: list[ReadingResult]) -> JSONResponse:
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    rows = []
    for index, result in enumerate(results):
        counts[result.outcome] += 1
        rows.append(
            {
                "index": index,
                "outcome": result.outcome,
                "id": result.reading_id,
                "reason": result.reason,
                "detail": result.detail,
                "late": result.late,
            }
        )
    return _FastJSONResponse({"results": rows, **counts})


class _FastJSONResponse(JSONResponse):
    """A JSONResponse serialised by pydantic_core, about three times faster than json for a batch's results.

    The bytes are those of JSONResponse for content without floats: compact, UTF-8, keys in order.
    """

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


# --- OpenAPI --------------------------------------------------------------------------------------

API_DESCRIPTION = """\
Rules hub for agencies' sensors: post readings, list alerts, acknowledge and resolve them.

**Authentication.** Every request except `/api/v1/health` names an `http` source from
config.yaml in `X-Simpul-Source` and authenticates as that source is configured:

* `Authorization: Bearer <token>`, or
* `X-Simpul-Timestamp: <unix seconds>` and
  `X-Simpul-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<raw body>")>`.
  The timestamp must be within the source's `max_skew` (default 5 minutes) of the hub clock,
  and a POST whose signature was already accepted is rejected as a replay, so sign every
  request, retries included, with a fresh timestamp.

**Errors** of a whole request are JSON `{"error": code, "detail": text}`.
"""

READINGS_DESCRIPTION = f"""\
Store readings and evaluate the rules on them. The response is sent after the readings are
committed, so a 200 means they are durable.

The body is one reading object or a JSON list of 1 to {MAX_READINGS_PER_REQUEST} of them, at
most `simpul.max_body_bytes` bytes (default 1 MiB) as `application/json`.

**Per-reading outcomes.** Each reading is `accepted`, `duplicate` (its id, or its device,
metric and ts, is already stored) or `rejected` with a `reason` code such as
`unknown_device`, `unknown_metric`, `not_a_number`, `unavailable`, `out_of_range` or
`invalid_timestamp`. A batch with rejected readings still stores the others and answers 200.

**Shape errors reject the whole request.** A list item that is not an object, a missing
`device`, `metric`, `value` or `ts` field, a field of the wrong JSON type or an unknown field
(such as a misspelt `id`) answers 422 and stores nothing. The `problems` list names each bad
item by its `index`. A wrong shape is a fault of the sending program, not of one
measurement, and storing the rest would hide it.
"""

WEBHOOK_DESCRIPTION = f"""\
Store readings that another system posts in its own JSON format, mapped to readings by the
`mapping` of the http source named in the URL. Authentication, body limits and the response are
those of `POST {API_PREFIX}/readings`, and `X-Simpul-Source` may be left out because the URL
names the source.

**Mapping.** `mapping.readings` is the dotted path of the list of items in the payload, and
without it the payload is one item. Each item gives one reading per mapped metric, at most
{MAX_READINGS_PER_REQUEST} per request. The mapping reads the device (a fixed id, or a field
translated by `map`), the value of each metric, the event time (`iso`, `epoch`, `epoch_ms` or
strptime syntax) and an optional id. With an id, a repeated delivery of the same message is
returned as `duplicate` and stored once.

**Per-reading outcomes.** `index` counts the mapped readings in payload order, with one result
for each item that gives none. An item that cannot be mapped is `rejected` with the reason
`not_an_object`, `missing_field`, `wrong_type` or `invalid_timestamp`, and the others are still
stored. A missing or non-numeric value is rejected by the hub as for any reading.

**Request errors.** 404 `no_mapping` when the source has no mapping, 400 `malformed_json`, and
422 `invalid_shape` when the path in `mapping.readings` is missing or is not a list.
"""

_SECURITY_SCHEMES = {
    "source": {"type": "apiKey", "in": "header", "name": "X-Simpul-Source", "description": "Id of an http source."},
    "bearer": {"type": "http", "scheme": "bearer", "description": "The source's token."},
    "signature": {"type": "apiKey", "in": "header", "name": "X-Simpul-Signature", "description": "sha256=<hex>"},
    "timestamp": {"type": "apiKey", "in": "header", "name": "X-Simpul-Timestamp", "description": "Unix seconds."},
}
_SECURITY = [{"source": [], "bearer": []}, {"source": [], "signature": [], "timestamp": []}]


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_READINGS_BODY = _body_schema(
    {
        "oneOf": [
            {"$ref": "#/components/schemas/ReadingIn"},
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ReadingIn"},
                "minItems": 1,
                "maxItems": MAX_READINGS_PER_REQUEST,
            },
        ]
    }
)
_ALERT_STEP_BODY = _body_schema({"$ref": "#/components/schemas/AlertStepIn"})


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def _readings_operation() -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "Every reading was stored, found to be a duplicate, or rejected with a reason.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReadingsResponse"}}},
        }
    }
    for status in (400, 401, 403, 413, 415, 422, 500, 503):
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": _error_content()}
    return {
        "tags": ["readings"],
        "summary": "Post readings",
        "description": READINGS_DESCRIPTION,
        "operationId": "post_readings",
        "security": _SECURITY,
        "requestBody": _READINGS_BODY,
        "responses": responses,
    }


def _webhook_operation() -> dict[str, Any]:
    operation = _readings_operation()
    operation["responses"]["404"] = {"description": HTTPStatus(404).phrase, "content": _error_content()}
    operation.update(
        {
            "summary": "Post a payload in the sender's own format",
            "description": WEBHOOK_DESCRIPTION,
            "operationId": "post_webhook",
            "security": [{"bearer": []}, {"signature": [], "timestamp": []}],
            "parameters": [
                {
                    "name": "source_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "Id of an http source with a mapping.",
                }
            ],
            "requestBody": _body_schema({"description": "Any JSON that the source's mapping describes."}),
        }
    )
    return operation


def _install_openapi(app: FastAPI) -> None:
    """Complete the generated schema with the hand-parsed readings and webhook operations and the security schemes."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema["paths"] = {
            f"{API_PREFIX}/readings": {"post": _readings_operation()},
            f"{API_PREFIX}/webhooks/{{source_id}}": {"post": _webhook_operation()},
            **schema.get("paths", {}),
        }

        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (ReadingIn, "validation"),
            (AlertStepIn, "validation"),
            (ReadingsResponse, "serialization"),
            (ErrorResponse, "serialization"),
        ]
        _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
        for name, definition in definitions.get("$defs", {}).items():
            schemas.setdefault(name, definition)
        components["securitySchemes"] = _SECURITY_SCHEMES

        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- the app --------------------------------------------------------------------------------------


def create_app(
    *,
    config: Config,
    ingestor: Ingestor,
    db: sqlalchemy.Engine,
    health: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """Build the API app. The secrets of the ``http`` sources are read from the environment here."""
    guard = _Guard(config)
    rejections = _RejectionLog()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        rejections.flush()

    # FastAPI's built-in OpenTelemetry support checks for configured providers on every request,
    # which cost about 100 us of CPU per request in a benchmark with FastAPI 0.163 although
    # none was configured. The hub exports no telemetry, so it is off.
    no_telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="Simpul", version="1", description=API_DESCRIPTION, lifespan=lifespan, telemetry=no_telemetry)
    app.state.authenticator = _Authenticator(guard, config.simpul.max_body_bytes)
    _install_openapi(app)

    _add_error_handlers(app, rejections)
    _add_readings_route(app, ingestor, guard)
    _add_alert_routes(app, db)
    _add_health_route(app, health)
    return app


def _add_error_handlers(app: FastAPI, rejections: _RejectionLog) -> None:
    async def handle_api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        source = request.scope.get("simpul.source", "(unidentified)")
        rejections.record(source, error.code, error.status, error.detail)
        return error.response()

    async def handle_invalid_parameters(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        problems = [
            Problem(field=str(item["loc"][-1]) if item["loc"] else None, message=item["msg"]) for item in error.errors()
        ]
        names = ", ".join(sorted({problem.field or "?" for problem in problems}))
        api_error = ApiError(422, "invalid_request", f"invalid parameters: {names}; see /docs", problems=problems)
        return await handle_api_error(request, api_error)

    async def handle_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        detail = f"{error.detail}: {request.method} {_clip(request.url.path)}; see /docs for the endpoints"
        return JSONResponse({"error": code, "detail": detail}, status_code=error.status_code, headers=error.headers)

    async def handle_unexpected(request: Request, error: Exception) -> Response:
        # Starlette raises the exception again after this response, so the server logs its traceback.
        return JSONResponse(
            {"error": "internal_error", "detail": "the hub failed to handle the request; the hub log has the cause"},
            status_code=500,
        )

    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, handle_invalid_parameters)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected)


def _add_readings_route(app: FastAPI, ingestor: Ingestor, guard: _Guard) -> None:
    authenticator: _Authenticator = app.state.authenticator

    def forget_signature(caller: _Caller) -> None:
        if caller.digest is not None:
            guard.replays.release(caller.digest)

    async def store(caller: _Caller, raws: list[RawReading]) -> list[ReadingResult]:
        """Submit readings to the ingestor and wait for its commit; a failure forgets the signature so a retry works."""
        source_id = caller.source.source_id
        try:
            # A cancelled request (client gone, server shutting down) does not withdraw the
            # readings: the writer thread stores them all the same.
            results = await ingestor.store(source_id, raws)
        except IngestorStopped:
            forget_signature(caller)
            raise ApiError(
                503,
                "hub_stopping",
                "the hub is stopping: send the readings again after the Retry-After delay of 30 seconds",
                headers={"Retry-After": "30"},
            ) from None
        except Exception as error:
            forget_signature(caller)
            logger.error("source %s: storing %d readings failed: %s", source_id, len(raws), type(error).__name__)
            raise ApiError(
                500, "storing_failed", "storing the readings failed, so none of them were stored: send them again"
            ) from None

        if len(results) != len(raws):
            raise RuntimeError(f"the ingestor returned {len(results)} results for {len(raws)} readings")
        return results

    async def post_readings(request: Request) -> Response:
        caller = await authenticator.authenticate(request, json_body=True, claim=True)
        raws = _to_raw_readings(_parse_json(caller.body))
        return _readings_answer(await store(caller, raws))

    async def post_webhook(request: Request) -> Response:
        source_id: str = request.path_params["source_id"]
        caller = await authenticator.authenticate(request, json_body=True, claim=True, path_source=source_id)
        mapping = guard.mappings.get(source_id)
        if mapping is None:
            raise ApiError(
                404,
                "no_mapping",
                f"source {source_id!r} has no mapping, so it cannot post its own format: post Simpul readings to "
                f"{API_PREFIX}/readings, or ask the hub operator to add a mapping to the source in config.yaml",
            )

        mapped = _map_payload(_parse_json(caller.body), mapping)
        raws = [item for item in mapped if isinstance(item, RawReading)]
        results = iter(await store(caller, raws) if raws else [])
        unmapped = len(mapped) - len(raws)
        # NOTE: unmapped items appear only in the response and this DEBUG line. Unlike readings
        # that the pipeline rejects, they are not stored as rejected readings.
        if unmapped:
            logger.debug("source %s: %d of %d webhook readings could not be mapped", source_id, unmapped, len(mapped))
        answers = [
            ReadingResult("rejected", None, item.reason, item.detail)
            if isinstance(item, UnmappedItem)
            else next(results)
            for item in mapped
        ]
        return _readings_answer(answers)

    # Plain Starlette routes, because FastAPI's parameter solving cost about 75 us of CPU per
    # request in a benchmark with FastAPI 0.163, and these handlers read the request themselves.
    # _readings_operation and _webhook_operation write their OpenAPI operations.
    app.add_route(f"{API_PREFIX}/readings", post_readings, methods=["POST"], include_in_schema=False)
    app.add_route(f"{API_PREFIX}/webhooks/{{source_id}}", post_webhook, methods=["POST"], include_in_schema=False)


def _map_payload(document: Any, mapping: PayloadMapping) -> list[RawReading | UnmappedItem]:
    """Map a webhook payload to readings and unmapped items; a payload that does not fit the mapping is a 422."""
    try:
        items = payload_items(document, mapping)
    except PayloadShapeError as error:
        raise ApiError(
            422, "invalid_shape", f"{error}: send the payload in the format that the source's mapping describes"
        ) from None

    mapped = map_items(items, mapping, datetime.now(UTC))
    if len(mapped) > MAX_READINGS_PER_REQUEST:
        raise ApiError(
            413,
            "too_many_readings",
            f"the payload gives {len(mapped)} readings, more than the limit of {MAX_READINGS_PER_REQUEST}: "
            "split it into smaller requests",
        )
    return mapped


def _add_alert_routes(app: FastAPI, db: sqlalchemy.Engine) -> None:
    # NOTE: any http source may list, acknowledge and resolve alerts, and `by` is taken on
    # trust. Users with roles per agency are not modelled yet.
    @app.get(
        f"{API_PREFIX}/alerts",
        summary="List alerts",
        description="Alerts, newest first. Any http source may read them.",
        response_model=AlertsResponse,
        responses=_error_responses(400, 401, 403, 422, 503),
        openapi_extra={"security": _SECURITY},
        tags=["alerts"],
    )
    async def get_alerts(
        _caller: Annotated[_Caller, Depends(_read_caller)],
        status: Annotated[
            Literal["open", "acknowledged", "resolved"] | None, Query(description="Only alerts in this status.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many alerts.")] = 100,
    ) -> dict[str, Any]:
        alerts = await run_in_threadpool(ops.list_alerts, engine=db, status=status, limit=limit)
        return {"alerts": [AlertOut.model_validate(alert) for alert in alerts]}

    async def take_step(step: Callable[..., Alert], alert_id: int, caller: _Caller) -> AlertOut:
        step_in = _parse_alert_step(caller.body)
        try:
            alert = await run_in_threadpool(step, engine=db, alert_id=alert_id, by=step_in.by, note=step_in.note)
        except ops.AlertNotFound:
            raise ApiError(
                404, "alert_not_found", f"alert {alert_id} not found: list alerts with GET {API_PREFIX}/alerts"
            ) from None
        except ops.AlertStateError as error:
            raise ApiError(409, "wrong_alert_state", str(error)) from None

        logger.info("source %s: alert %d %s by %s", caller.source.source_id, alert_id, alert.status, _clip(step_in.by))
        return AlertOut.model_validate(alert)

    step_options: dict[str, Any] = {
        "response_model": AlertOut,
        "responses": _error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
        "openapi_extra": {"requestBody": _ALERT_STEP_BODY, "security": _SECURITY},
        "tags": ["alerts"],
    }

    @app.post(
        f"{API_PREFIX}/alerts/{{alert_id}}/acknowledge",
        summary="Acknowledge an alert",
        description="Acknowledge an open alert; 409 when it is already acknowledged or resolved.",
        **step_options,
    )
    async def acknowledge(
        caller: Annotated[_Caller, Depends(_step_caller)],
        alert_id: Annotated[int, Path(ge=1)],
    ) -> AlertOut:
        return await take_step(ops.acknowledge_alert, alert_id, caller)

    @app.post(
        f"{API_PREFIX}/alerts/{{alert_id}}/resolve",
        summary="Resolve an alert",
        description="Resolve an open or acknowledged alert; 409 when it is already resolved.",
        **step_options,
    )
    async def resolve(
        caller: Annotated[_Caller, Depends(_step_caller)],
        alert_id: Annotated[int, Path(ge=1)],
    ) -> AlertOut:
        return await take_step(ops.resolve_alert, alert_id, caller)


def _parse_alert_step(body: bytes) -> AlertStepIn:
    try:
        return AlertStepIn.model_validate(_parse_json(body))
    except ValidationError as error:
        problems = [
            Problem(field=".".join(str(part) for part in item["loc"]) or None, message=item["msg"])
            for item in error.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise ApiError(
            422,
            "invalid_shape",
            'the body must be {"by": "<your name>", "note": "<optional text>"}: fix the fields listed in problems',
            problems=problems,
        ) from None


def _add_health_route(app: FastAPI, health: Callable[[], dict[str, Any]] | None) -> None:
    @app.get(
        f"{API_PREFIX}/health",
        summary="Hub health",
        description="No authentication. `status` is `ok` unless the hub's health report returns another status.",
        response_model=HealthResponse,
        responses=_error_responses(503),
        tags=["health"],
    )
    async def get_health() -> Response:
        report: dict[str, Any] = {"status": "ok"}
        if health is not None:
            try:
                report.update(await run_in_threadpool(health))
            except Exception:
                logger.exception("health report failed")
                return JSONResponse(
                    {"error": "health_failed", "detail": "the hub's health report failed; the hub log has the cause"},
                    status_code=503,
                )
        return JSONResponse(jsonable_encoder(report))
