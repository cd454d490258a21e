"""The outgoing webhook executor against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from integrations.webhook_out import WebhookExecutor, sign_body, verify_signature
from rules.config import WebhookTarget
from rules.errors import PermanentActionError, RetryableActionError
from rules.store.models import ActionRun, utc_now

SECRET = "s3cret-for-tests-only"
SECRET_ENV = "SIMPUL_TEST_WEBHOOK_SECRET"


# --- a receiver peer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptedResponse:
    """The receiver's response to one request: a status, or closing the connection without one."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: Message
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        receiver = self.server.receiver
        response = receiver.record(Delivery(self.path, self.headers, body))

        time.sleep(response.delay_seconds)
        if response.close:
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has closed the connection before the delayed response is written.
        pass


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and sends the next scripted response.

    Once the script is used up it sends ``default``.
    """

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.default = ScriptedResponse(200)
        self._script: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self._server = _ReceiverServer(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        # A short poll interval makes shutdown() return quickly at the end of each test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/hook" + (f"?{query}" if query else "")

    def script(self, *responses: ScriptedResponse) -> None:
        with self._lock:
            self._script.extend(responses)

    def record(self, delivery: Delivery) -> ScriptedResponse:
        with self._lock:
            self.deliveries.append(delivery)
            return self._script.popleft() if self._script else self.default

    def delivery_ids(self) -> list[str]:
        with self._lock:
            return [str(delivery.headers["X-Simpul-Delivery"]) for delivery in self.deliveries]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def unused_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def make_target(url: str, *, timeout: str = "2s") -> WebhookTarget:
    return WebhookTarget.model_validate({"id": "hook", "url": url, "secret": f"${{{SECRET_ENV}}}", "timeout": timeout})


def make_run(payload: dict[str, Any] | None = None, *, target: str = "hook") -> ActionRun:
    return ActionRun(
        id=41,
        rule_id="manggarai-siaga-2",
        device_id="pa-manggarai",
        action_index=0,
        type="webhook",
        target=target,
        payload=payload if payload is not None else {"event": "firing", "value": 900.0},
        status="pending",
        created_at=utc_now(),
    )


def send(url: str, run: ActionRun | None = None, *, timeout: str = "2s") -> None:
    with WebhookExecutor({"hook": make_target(url, timeout=timeout)}) as executor:
        executor.run(run or make_run())


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
def test_request_carries_signed_headers(receiver: Receiver) -> None:
    send(receiver.url())

    delivery = receiver.deliveries[0]
    timestamp = delivery.headers["X-Simpul-Timestamp"]
    signature = delivery.headers["X-Simpul-Signature"]
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["User-Agent"] == "simpul"
    assert delivery.headers["X-Simpul-Delivery"] == "41"
    assert abs(int(timestamp) - time.time()) < 5
    assert verify_signature(SECRET.encode(), timestamp, delivery.body, signature, now=time.time(), max_skew_seconds=300)


@pytest.mark.usefixtures("secret_env")
def test_body_is_payload_as_json(receiver: Receiver) -> None:
    payload = {"event": "firing", "device": {"name": "Pintu Air Manggarai – Jakarta"}, "value": 912.5}

    send(receiver.url(), make_run(payload))

    assert json.loads(receiver.deliveries[0].body.decode("utf-8")) == payload


@pytest.mark.usefixtures("secret_env")
def test_request_goes_to_target_path_and_query(receiver: Receiver) -> None:
    send(receiver.url("channel=banjir"))

    assert receiver.deliveries[0].path == "/hook?channel=banjir"


@pytest.mark.usefixtures("secret_env")
def test_success_raises_nothing(receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(204))

    send(receiver.url())

    assert len(receiver.deliveries) == 1


# --- status codes --------------------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_retryable_status_raises_retryable(receiver: Receiver, status: int) -> None:
    receiver.script(ScriptedResponse(status))

    with pytest.raises(RetryableActionError, match=f"HTTP {status}"):
        send(receiver.url())


@pytest.mark.usefixtures("secret_env")
@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_client_error_raises_permanent(receiver: Receiver, status: int) -> None:
    receiver.script(ScriptedResponse(status))

    with pytest.raises(PermanentActionError, match=f"HTTP {status}"):
        send(receiver.url())


@pytest.mark.usefixtures("secret_env")
def test_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(301, {"Location": receiver.url("moved=1")}))

    with pytest.raises(PermanentActionError, match="redirects are not followed"):
        send(receiver.url())
    assert len(receiver.deliveries) == 1


@pytest.mark.usefixtures("secret_env")
def test_retry_after_seconds_is_read(receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(429, {"Retry-After": "30"}))

    with pytest.raises(RetryableActionError) as raised:
        send(receiver.url())
    assert raised.value.retry_after_seconds == 30.0


@pytest.mark.usefixtures("secret_env")
def test_retry_after_http_date_is_read(receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(503, {"Retry-After": formatdate(time.time() + 120, usegmt=True)}))

    with pytest.raises(RetryableActionError) as raised:
        send(receiver.url())
    assert raised.value.retry_after_seconds is not None
    assert 115 <= raised.value.retry_after_seconds <= 121


@pytest.mark.usefixtures("secret_env")
def test_invalid_retry_after_is_ignored(receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(429, {"Retry-After": "soon"}))

    with pytest.raises(RetryableActionError) as raised:
        send(receiver.url())
    assert raised.value.retry_after_seconds is None


# --- network failures ----------------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
def test_connection_refused_raises_retryable() -> None:
    with pytest.raises(RetryableActionError, match="request failed"):
        send(f"http://127.0.0.1:{unused_port()}/hook")


@pytest.mark.usefixtures("secret_env")
def test_closed_connection_raises_retryable(receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(close=True))

    with pytest.raises(RetryableActionError, match="request failed"):
        send(receiver.url())


@pytest.mark.usefixtures("secret_env")
def test_slow_receiver_raises_retryable_timeout(receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(200, delay_seconds=1.5))

    with pytest.raises(RetryableActionError, match="timed out after 1 s"):
        send(receiver.url(), timeout="1s")


@pytest.mark.usefixtures("secret_env")
def test_error_message_hides_url_query_and_user_info() -> None:
    url = f"http://user:pa55word@127.0.0.1:{unused_port()}/hook?token=query-token"

    with pytest.raises(RetryableActionError) as raised:
        send(url)
    assert "query-token" not in str(raised.value)
    assert "pa55word" not in str(raised.value)


# --- configuration problems ----------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
def test_unknown_target_raises_permanent(receiver: Receiver) -> None:
    with pytest.raises(PermanentActionError, match="unknown webhook target 'elsewhere'"):
        send(receiver.url(), make_run(target="elsewhere"))
    assert receiver.deliveries == []


def test_missing_secret_raises_permanent(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)

    with pytest.raises(PermanentActionError, match=f"missing secret: environment variable {SECRET_ENV} is not set"):
        send(receiver.url())
    assert receiver.deliveries == []


@pytest.mark.usefixtures("secret_env")
def test_payload_with_nan_raises_permanent(receiver: Receiver) -> None:
    with pytest.raises(PermanentActionError, match="not valid JSON"):
        send(receiver.url(), make_run({"value": float("nan")}))
    assert receiver.deliveries == []


def test_max_attempts_comes_from_target() -> None:
    target = WebhookTarget.model_validate(
        {"id": "hook", "url": "http://127.0.0.1:9/hook", "secret": f"${{{SECRET_ENV}}}", "max_attempts": 4}
    )

    with WebhookExecutor({"hook": target}) as executor:
        assert executor.max_attempts(make_run()) == 4
        assert executor.max_attempts(make_run(target="elsewhere")) == 1


# --- logging and the client ----------------------------------------------------------------------


@pytest.mark.usefixtures("secret_env")
def test_http_client_does_not_log_url(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    send(receiver.url("token=query-token"))

    assert len(receiver.deliveries) == 1
    assert "query-token" not in caplog.text


def test_owned_client_is_closed() -> None:
    executor = WebhookExecutor({})

    executor.close()

    assert executor.client.is_closed


def test_given_client_is_left_open() -> None:
    with httpx.Client() as client:
        WebhookExecutor({}, client).close()

        assert not client.is_closed


# --- verify_signature ----------------------------------------------------------------------------

BODY = b'{"event":"firing"}'
NOW = 1_700_000_000.0


def signed(timestamp: str = str(int(NOW)), body: bytes = BODY, secret: bytes = SECRET.encode()) -> str:
    return sign_body(secret, timestamp, body)


def verify(timestamp: str, body: bytes, signature: str) -> bool:
    return verify_signature(SECRET.encode(), timestamp, body, signature, now=NOW, max_skew_seconds=300)


def test_signature_verifies() -> None:
    assert verify(str(int(NOW)), BODY, signed())


def test_signature_in_upper_case_verifies() -> None:
    assert verify(str(int(NOW)), BODY, signed().upper())


def test_signature_at_max_skew_verifies() -> None:
    timestamp = str(int(NOW) - 300)

    assert verify(timestamp, BODY, signed(timestamp))


@pytest.mark.parametrize(
    ("timestamp", "body", "signature"),
    [
        pytest.param(str(int(NOW)), BODY, signed(secret=b"other"), id="wrong secret"),
        pytest.param(str(int(NOW)), b'{"event":"cleared"}', signed(), id="changed body"),
        pytest.param(str(int(NOW) + 1), BODY, signed(), id="changed timestamp"),
        pytest.param(str(int(NOW) - 301), BODY, signed(str(int(NOW) - 301)), id="too old"),
        pytest.param(str(int(NOW) + 301), BODY, signed(str(int(NOW) + 301)), id="too far ahead"),
        pytest.param(str(int(NOW)), BODY, signed().removeprefix("sha256="), id="no prefix"),
        pytest.param(str(int(NOW)), BODY, "sha256=" + "z" * 64, id="not hex"),
        pytest.param(str(int(NOW)), BODY, "sha256=" + "é" * 64, id="not ascii"),
        pytest.param(str(int(NOW)), BODY, "", id="empty"),
        pytest.param("soon", BODY, signed("soon"), id="timestamp not a number"),
        pytest.param(f"{NOW:.1f}", BODY, signed(f"{NOW:.1f}"), id="timestamp with fraction"),
        pytest.param("0" * 5000 + str(int(NOW)), BODY, signed("0" * 5000 + str(int(NOW))), id="timestamp too long"),
    ],
)
def test_signature_rejects(timestamp: str, body: bytes, signature: str) -> None:
    assert not verify(timestamp, body, signature)
