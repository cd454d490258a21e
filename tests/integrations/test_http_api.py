"""The HTTP API against a real uvicorn server, pipeline, ingestor and SQLite store."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine as DbEngine

from integrations.http_api import MAX_READINGS_PER_REQUEST, create_app
from rules.ingest import Ingestor
from rules.pipeline import Pipeline
from tests.conftest import fetch_readings, fetch_rejected, load_config

TOKEN = "tok-gateway-3f9a1c"
SECRET = "hmac-secret-logger-77d2"
MAX_BODY = 1_048_576

CONFIG = """
simpul:
  timezone: Asia/Jakarta
  max_body_bytes: 1048576
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - {id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level}
sources:
  - id: gateway
    type: http
    auth: {token: "${TEST_GATEWAY_TOKEN}"}
  - id: logger-hmac
    type: http
    auth: {hmac_secret: "${TEST_LOGGER_SECRET}", max_skew: 5m}
  - id: unset-token
    type: http
    auth: {token: "${TEST_UNSET_TOKEN}"}
  - id: arsip
    type: file
    timestamp: {column: ts}
    device: {column: device}
    metrics: [{column: level, metric: level}]
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    severity: high
    when: {device: manggarai, metric: level, above: 850, for: 0s}
    then:
      - alert: {message: "Tinggi muka air {value} cm di {device.name}"}
"""

TOKEN_HEADERS = {"X-Simpul-Source": "gateway", "Authorization": f"Bearer {TOKEN}"}


@dataclass
class Hub:
    """A running API server with its ingestor and store, and a client pointed at it."""

    client: httpx.Client
    db: DbEngine
    ingestor: Ingestor
    server: uvicorn.Server
    thread: threading.Thread
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.should_exit = True
        self.thread.join(10)
        self.ingestor.stop()


@pytest.fixture
def hub(db: DbEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    monkeypatch.setenv("TEST_GATEWAY_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_LOGGER_SECRET", SECRET)
    monkeypatch.delenv("TEST_UNSET_TOKEN", raising=False)
    config = load_config(CONFIG)
    ingestor = Ingestor(Pipeline(config, db, event_clock=False))
    ingestor.start()
    app = create_app(config=config, ingestor=ingestor, db=db, health=lambda: {"ingestor": "running"})

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the test server did not start within 10 s"

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        running = Hub(client, db, ingestor, server, thread)
        yield running
        running.stop()
    listener.close()


# --- helpers ---------------------------------------------------------------------------------------


def reading(value: Any = 700, *, device: str = "manggarai", minutes_ago: float = 1, **extra: Any) -> dict[str, Any]:
    ts = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"device": device, "metric": "level", "value": value, "ts": ts.isoformat(), **extra}


def post_with_token(hub: Hub, body: Any, **headers: str) -> httpx.Response:
    return hub.client.post("/api/v1/readings", json=body, headers={**TOKEN_HEADERS, **headers})


def signed_headers(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "X-Simpul-Source": "logger-hmac",
        "X-Simpul-Timestamp": stamp,
        "X-Simpul-Signature": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def post_signed(hub: Hub, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return hub.client.post("/api/v1/readings", content=body, headers=headers)


def stored_uids(hub: Hub) -> list[str]:
    return [row.uid for row in fetch_readings(hub.db)]


def api_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "integrations.http_api" and record.levelno == logging.WARNING
    ]


# --- token authentication ----------------------------------------------------------------------------


def test_token_reading_is_accepted(hub: Hub) -> None:
    response = post_with_token(hub, reading(id="r-1"))

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"index": 0, "outcome": "accepted", "id": "r-1", "reason": None, "detail": None, "late": False}
    ]
    assert response.json()["accepted"] == 1
    assert stored_uids(hub) == ["r-1"]


def test_missing_token_is_401(hub: Hub) -> None:
    response = hub.client.post("/api/v1/readings", json=reading(), headers={"X-Simpul-Source": "gateway"})

    assert response.status_code == 401
    assert response.json()["error"] == "missing_credentials"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert stored_uids(hub) == []


def test_wrong_token_is_401(hub: Hub) -> None:
    response = post_with_token(hub, reading(), Authorization="Bearer not-the-token")

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert "not-the-token" not in response.text
    assert stored_uids(hub) == []


def test_tokens_never_logged(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    post_with_token(hub, reading(), Authorization="Bearer wrong-secret-value")
    post_with_token(hub, reading())
    hub.stop()

    assert "wrong-secret-value" not in caplog.text
    assert TOKEN not in caplog.text
    assert "gateway" in caplog.text


def test_repeated_rejections_logged_once_then_counted(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="integrations.http_api")

    for _ in range(5):
        post_with_token(hub, reading(), Authorization="Bearer wrong")
    lines_while_running = api_warnings(caplog)
    hub.stop()

    assert len(lines_while_running) == 1
    assert "source gateway" in lines_while_running[0]
    assert "invalid_token" in lines_while_running[0]
    assert any("4 more requests got error invalid_token" in line for line in api_warnings(caplog))


def test_source_with_unset_secret_is_503(hub: Hub) -> None:
    response = hub.client.post(
        "/api/v1/readings", json=reading(), headers={"X-Simpul-Source": "unset-token", "Authorization": "Bearer x"}
    )

    assert response.status_code == 503
    assert response.json()["error"] == "source_unavailable"
    assert "TEST_UNSET_TOKEN" not in response.text


# --- HMAC authentication ----------------------------------------------------------------------------


def test_signed_reading_is_accepted(hub: Hub) -> None:
    body = json.dumps(reading(id="signed-1")).encode()

    response = post_signed(hub, body, signed_headers(body))

    assert response.status_code == 200
    assert response.json()["results"][0]["outcome"] == "accepted"
    assert stored_uids(hub) == ["signed-1"]


def test_bad_signature_is_401(hub: Hub) -> None:
    body = json.dumps(reading()).encode()

    response = post_signed(hub, body, signed_headers(body, secret="another-secret"))

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert stored_uids(hub) == []


def test_body_changed_after_signing_is_401(hub: Hub) -> None:
    body = json.dumps(reading(700)).encode()
    headers = signed_headers(body)

    response = post_signed(hub, json.dumps(reading(999)).encode(), headers)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_outside_skew_is_401(hub: Hub, offset: int) -> None:
    body = json.dumps(reading()).encode()

    response = post_signed(hub, body, signed_headers(body, timestamp=int(time.time()) + offset))

    assert response.status_code == 401
    assert response.json()["error"] == "stale_timestamp"
    assert stored_uids(hub) == []


def test_replayed_request_is_401(hub: Hub) -> None:
    body = json.dumps(reading(id="once")).encode()
    headers = signed_headers(body)

    first = post_signed(hub, body, headers)
    replay = post_signed(hub, body, headers)

    assert first.status_code == 200
    assert replay.status_code == 401
    assert replay.json()["error"] == "replayed_request"
    assert replay.headers["www-authenticate"].startswith("Simpul-HMAC-SHA256")


def test_signed_source_without_signature_is_401(hub: Hub) -> None:
    response = hub.client.post(
        "/api/v1/readings", json=reading(), headers={"X-Simpul-Source": "logger-hmac", "Authorization": "Bearer x"}
    )

    assert response.status_code == 401
    assert response.json()["error"] == "missing_signature"


def test_non_numeric_timestamp_is_401(hub: Hub) -> None:
    body = json.dumps(reading()).encode()
    headers = {**signed_headers(body), "X-Simpul-Timestamp": "2025-01-31T14:00:00Z"}

    response = post_signed(hub, body, headers)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_timestamp"


# --- sources ----------------------------------------------------------------------------------------


def test_unknown_source_is_400(hub: Hub) -> None:
    response = post_with_token(hub, reading(), **{"X-Simpul-Source": "nobody"})

    assert response.status_code == 400
    assert response.json()["error"] == "unknown_source"
    assert "'nobody'" in response.json()["detail"]


def test_missing_source_header_is_400(hub: Hub) -> None:
    response = hub.client.post("/api/v1/readings", json=reading(), headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 400
    assert response.json()["error"] == "missing_source"


def test_file_source_is_403(hub: Hub) -> None:
    response = post_with_token(hub, reading(), **{"X-Simpul-Source": "arsip"})

    assert response.status_code == 403
    assert response.json()["error"] == "source_not_allowed"


# --- bodies -------------------------------------------------------------------------------------------


def test_list_body_answers_each_reading(hub: Hub) -> None:
    epoch = int(time.time()) - 30
    body = [reading(700, id="a"), {"device": "depok", "metric": "level", "value": "12.5", "ts": epoch, "id": "b"}]

    response = post_with_token(hub, body)

    assert response.status_code == 200
    assert [result["outcome"] for result in response.json()["results"]] == ["accepted", "accepted"]
    assert [result["index"] for result in response.json()["results"]] == [0, 1]
    assert sorted(stored_uids(hub)) == ["a", "b"]


def test_mixed_batch_keeps_good_readings(hub: Hub) -> None:
    body = [
        reading(700, id="good-1"),
        reading(700, device="no-such-gauge", id="bad-device"),
        reading("unavailable", id="bad-value"),
        reading(701, id="good-2", minutes_ago=0.5),
    ]

    response = post_with_token(hub, body)
    answer = response.json()

    assert response.status_code == 200
    assert [result["outcome"] for result in answer["results"]] == ["accepted", "rejected", "rejected", "accepted"]
    assert answer["results"][1]["reason"] == "unknown_device"
    assert answer["results"][2]["reason"] == "unavailable"
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (2, 0, 2)
    assert sorted(stored_uids(hub)) == ["good-1", "good-2"]
    assert sorted(row.reason for row in fetch_rejected(hub.db)) == ["unavailable", "unknown_device"]


def test_unknown_device_is_rejected_reading(hub: Hub) -> None:
    response = post_with_token(hub, reading(device="pos-hilang"))

    assert response.status_code == 200
    assert response.json()["results"][0]["outcome"] == "rejected"
    assert response.json()["results"][0]["reason"] == "unknown_device"
    assert "pos-hilang" in response.json()["results"][0]["detail"]


def test_repeated_reading_is_duplicate(hub: Hub) -> None:
    first = post_with_token(hub, reading(id="dup-1"))
    second = post_with_token(hub, reading(id="dup-1"))

    assert first.json()["results"][0]["outcome"] == "accepted"
    assert second.status_code == 200
    assert second.json()["results"][0]["outcome"] == "duplicate"
    assert second.json()["duplicate"] == 1
    assert stored_uids(hub) == ["dup-1"]


def test_body_over_limit_by_header_is_413(hub: Hub) -> None:
    response = hub.client.post(
        "/api/v1/readings",
        content=b" " * (MAX_BODY + 1),
        headers={**TOKEN_HEADERS, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert str(MAX_BODY) in response.json()["detail"]


def test_chunked_body_over_limit_is_413(hub: Hub) -> None:
    item = json.dumps(reading()).encode() + b","

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(MAX_BODY // len(item) + 100):
            yield item

    response = hub.client.post(
        "/api/v1/readings", content=chunks(), headers={**TOKEN_HEADERS, "Content-Type": "application/json"}
    )

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert stored_uids(hub) == []


def test_server_answers_after_oversized_bodies(hub: Hub) -> None:
    hub.client.post(
        "/api/v1/readings", content=b" " * (MAX_BODY + 1), headers={**TOKEN_HEADERS, "Content-Type": "application/json"}
    )

    response = post_with_token(hub, reading(id="after"))

    assert response.status_code == 200


def test_malformed_json_names_line_and_column(hub: Hub) -> None:
    body = b'{"device": "manggarai",\n "metric": }'

    response = hub.client.post(
        "/api/v1/readings", content=body, headers={**TOKEN_HEADERS, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert "line 2, column 12" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "empty_body"),
        (b"[" * 200_000, "malformed_json"),
        (b'{"device": "\xff"}', "invalid_encoding"),
        (b"9" * 5000, "malformed_json"),
    ],
    ids=["empty", "deeply-nested", "not-utf8", "huge-integer"],
)
def test_unreadable_body_is_400(hub: Hub, body: bytes, error: str) -> None:
    response = hub.client.post(
        "/api/v1/readings", content=body, headers={**TOKEN_HEADERS, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == error


def test_wrong_content_type_is_415(hub: Hub) -> None:
    response = hub.client.post(
        "/api/v1/readings", content=json.dumps(reading()), headers={**TOKEN_HEADERS, "Content-Type": "text/plain"}
    )

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_wrong_shape_rejects_request_with_indexes(hub: Hub) -> None:
    without_device = {key: value for key, value in reading().items() if key != "device"}
    body = [reading(id="fine"), 5, without_device, reading(ts=True)]

    response = post_with_token(hub, body)
    problems = response.json()["problems"]

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_shape"
    assert [(problem["index"], problem["field"]) for problem in problems] == [(1, None), (2, "device"), (3, "ts")]
    assert stored_uids(hub) == []


def test_unknown_field_is_shape_error(hub: Hub) -> None:
    response = post_with_token(hub, reading(uid="misspelt-id"))

    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "uid"


def test_scalar_body_is_shape_error(hub: Hub) -> None:
    response = post_with_token(hub, 42)

    assert response.status_code == 422
    assert "number" in response.json()["detail"]


def test_empty_list_is_400(hub: Hub) -> None:
    response = post_with_token(hub, [])

    assert response.status_code == 400
    assert response.json()["error"] == "empty_list"


def test_too_many_readings_is_413(hub: Hub) -> None:
    response = post_with_token(hub, [{}] * (MAX_READINGS_PER_REQUEST + 1))

    assert response.status_code == 413
    assert response.json()["error"] == "too_many_readings"


def test_stopping_hub_is_503(hub: Hub) -> None:
    hub.ingestor.stop()

    response = post_with_token(hub, reading())

    assert response.status_code == 503
    assert response.json()["error"] == "hub_stopping"
    assert response.headers["retry-after"] == "30"


# --- alerts -------------------------------------------------------------------------------------------


def test_alert_fires_then_acknowledged_and_resolved(hub: Hub) -> None:
    posted = post_with_token(hub, reading(900, id="banjir-1"))
    listed = hub.client.get("/api/v1/alerts", params={"status": "open"}, headers=TOKEN_HEADERS)
    alerts = listed.json()["alerts"]
    alert_id = alerts[0]["id"]

    acknowledged = hub.client.post(
        f"/api/v1/alerts/{alert_id}/acknowledge",
        json={"by": "Sari", "note": "petugas menuju lokasi"},
        headers=TOKEN_HEADERS,
    )
    resolved = hub.client.post(f"/api/v1/alerts/{alert_id}/resolve", json={"by": "Sari"}, headers=TOKEN_HEADERS)

    assert posted.json()["accepted"] == 1
    assert listed.status_code == 200
    assert len(alerts) == 1
    assert alerts[0]["rule_id"] == "manggarai-siaga-2"
    assert alerts[0]["message"] == "Tinggi muka air 900 cm di Pintu Air Manggarai"
    assert acknowledged.status_code == 200
    assert acknowledged.json()["status"] == "acknowledged"
    assert acknowledged.json()["acknowledged_by"] == "Sari"
    assert acknowledged.json()["acknowledge_note"] == "petugas menuju lokasi"
    assert resolved.status_code == 200
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_by"] == "Sari"


def test_acknowledging_resolved_alert_is_409(hub: Hub) -> None:
    post_with_token(hub, reading(900))
    alert_id = hub.client.get("/api/v1/alerts", headers=TOKEN_HEADERS).json()["alerts"][0]["id"]
    hub.client.post(f"/api/v1/alerts/{alert_id}/resolve", json={"by": "Sari"}, headers=TOKEN_HEADERS)

    response = hub.client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"by": "Budi"}, headers=TOKEN_HEADERS)

    assert response.status_code == 409
    assert response.json()["error"] == "wrong_alert_state"


def test_unknown_alert_is_404(hub: Hub) -> None:
    response = hub.client.post("/api/v1/alerts/4242/resolve", json={"by": "Sari"}, headers=TOKEN_HEADERS)

    assert response.status_code == 404
    assert response.json()["error"] == "alert_not_found"


def test_alert_step_without_by_is_422(hub: Hub) -> None:
    response = hub.client.post("/api/v1/alerts/1/acknowledge", json={"note": "x"}, headers=TOKEN_HEADERS)

    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "by"


def test_alerts_need_credentials(hub: Hub) -> None:
    response = hub.client.get("/api/v1/alerts", headers={"X-Simpul-Source": "gateway"})

    assert response.status_code == 401


def test_alert_list_checks_credentials_before_parameters(hub: Hub) -> None:
    response = hub.client.get("/api/v1/alerts", params={"limit": "many"})

    assert response.status_code == 400
    assert response.json()["error"] == "missing_source"


def test_invalid_alert_limit_is_422(hub: Hub) -> None:
    response = hub.client.get("/api/v1/alerts", params={"limit": 0}, headers=TOKEN_HEADERS)

    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "limit"


def test_signed_alert_reads_may_repeat(hub: Hub) -> None:
    headers = signed_headers(b"")

    first = hub.client.get("/api/v1/alerts", headers=headers)
    second = hub.client.get("/api/v1/alerts", headers=headers)

    assert first.status_code == 200
    assert second.status_code == 200


# --- health and docs ----------------------------------------------------------------------------------


def test_health_needs_no_credentials(hub: Hub) -> None:
    response = hub.client.get("/api/v1/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "ingestor": "running"}


def test_docs_page_serves(hub: Hub) -> None:
    response = hub.client.get("/docs")

    assert response.status_code == 200
    assert "swagger-ui" in response.text


def test_openapi_describes_readings_body(hub: Hub) -> None:
    schema = hub.client.get("/openapi.json").json()
    body = schema["paths"]["/api/v1/readings"]["post"]["requestBody"]["content"]["application/json"]["schema"]

    assert body["oneOf"][0] == {"$ref": "#/components/schemas/ReadingIn"}
    assert set(schema["components"]["schemas"]["ReadingIn"]["required"]) == {"device", "metric", "value", "ts"}
    assert "ReadingsResponse" in schema["components"]["schemas"]
    assert "bearer" in schema["components"]["securitySchemes"]


def test_unknown_path_is_json_404(hub: Hub) -> None:
    response = hub.client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
