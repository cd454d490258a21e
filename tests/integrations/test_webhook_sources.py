"""Webhook sources: other systems' JSON mapped to readings, against a real uvicorn server, pipeline and store."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine as DbEngine

from integrations.http_api import create_app
from integrations.payload_mapping import UnmappedItem, map_items
from rules.config import PayloadMapping
from rules.ingest import Ingestor
from rules.loader import load_config_text
from rules.pipeline import Pipeline
from rules.readings import RawReading
from tests.conftest import fetch_alerts, fetch_readings, load_config

TOKEN = "tok-bpbd-81c2e0"
SECRET = "hmac-secret-aws-4b17"

CONFIG = """
simpul:
  timezone: Asia/Jakarta
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
  weather:
    metrics:
      rain: {unit: mm, min: 0, max: 500}
      temp: {unit: C, min: -20, max: 60}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - {id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level}
  - {id: aws-halim, name: AWS Halim, agency: dinas-sda, kind: weather}
sources:
  - id: bpbd
    type: http
    auth: {token: "${TEST_BPBD_TOKEN}"}
    mapping:
      readings: data.stations
      device:
        path: station.name
        map: {"PA Manggarai": manggarai, "Pos Depok": depok}
      metric: level
      value: water.tma_mm
      scale: {level: 0.1}
      timestamp: {path: observed, format: epoch}
      id: msg_id
  - id: aws
    type: http
    auth: {hmac_secret: "${TEST_AWS_SECRET}", max_skew: 5m}
    mapping:
      device: aws-halim
      metrics: {obs.curah_hujan: rain, obs.suhu: temp}
      timestamp: {path: waktu, format: "%d/%m/%Y %H:%M", timezone: Asia/Makassar}
      decimal: ","
      id: kode
  - id: gateway
    type: http
    auth: {token: "${TEST_BPBD_TOKEN}"}
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    severity: high
    when: {device: manggarai, metric: level, above: 850, for: 0s}
    then:
      - alert: {message: "Tinggi muka air {value} cm di {device.name}"}
"""

TOKEN_HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Hub:
    """A running API server with its ingestor and store, and a client pointed at it."""

    client: httpx.Client
    db: DbEngine


@pytest.fixture
def hub(db: DbEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    monkeypatch.setenv("TEST_BPBD_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_AWS_SECRET", SECRET)
    config = load_config(CONFIG)
    ingestor = Ingestor(Pipeline(config, db, event_clock=False))
    ingestor.start()
    app = create_app(config=config, ingestor=ingestor, db=db)

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
        yield Hub(client, db)
        server.should_exit = True
        thread.join(10)
        ingestor.stop()
    listener.close()


# --- helpers ---------------------------------------------------------------------------------------


def epoch_minutes_ago(minutes: float) -> int:
    return int((datetime.now(UTC) - timedelta(minutes=minutes)).timestamp())


def station(name: Any, tma_mm: Any, *, msg_id: str, minutes_ago: float = 1) -> dict[str, Any]:
    return {
        "msg_id": msg_id,
        "station": {"name": name},
        "water": {"tma_mm": tma_mm},
        "observed": epoch_minutes_ago(minutes_ago),
    }


def bpbd_payload(*stations: Any) -> dict[str, Any]:
    return {"status": "ok", "data": {"stations": list(stations)}}


def post_bpbd(hub: Hub, body: Any) -> httpx.Response:
    return hub.client.post("/api/v1/webhooks/bpbd", json=body, headers=TOKEN_HEADERS)


def signed_headers(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "X-Simpul-Timestamp": stamp,
        "X-Simpul-Signature": f"sha256={digest}",
        "Content-Type": "application/json",
    }


def aws_body(moment: datetime, *, kode: str = "K-0001") -> bytes:
    local = moment.astimezone(ZoneInfo("Asia/Makassar"))
    payload = {"kode": kode, "waktu": local.strftime("%d/%m/%Y %H:%M"), "obs": {"curah_hujan": "12,5", "suhu": "27,3"}}
    return json.dumps(payload).encode()


def outcomes(response: httpx.Response) -> list[tuple[str, str | None]]:
    return [(result["outcome"], result["reason"]) for result in response.json()["results"]]


# --- mapping nested payloads ------------------------------------------------------------------------


def test_nested_list_maps_names_and_scale(hub: Hub) -> None:
    observed = epoch_minutes_ago(2)
    first = {**station("PA Manggarai", 8215, msg_id="m-1"), "observed": observed}
    second = station("Pos Depok", "1203", msg_id="m-2")

    response = post_bpbd(hub, bpbd_payload(first, second))

    assert response.status_code == 200
    assert outcomes(response) == [("accepted", None), ("accepted", None)]
    assert [result["id"] for result in response.json()["results"]] == ["m-1", "m-2"]
    rows = fetch_readings(hub.db)
    assert [(row.device_id, row.metric, row.value_num, row.uid) for row in rows] == [
        ("manggarai", "level", 821.5, "m-1"),
        ("depok", "level", 120.3, "m-2"),
    ]
    assert rows[0].ts == datetime.fromtimestamp(observed, UTC)
    assert {row.source_id for row in rows} == {"bpbd"}


def test_rule_fires_from_mapped_reading(hub: Hub) -> None:
    response = post_bpbd(hub, bpbd_payload(station("PA Manggarai", 8620, msg_id="m-10")))

    assert outcomes(response) == [("accepted", None)]
    alerts = fetch_alerts(hub.db)
    assert [(alert.rule_id, alert.device_id) for alert in alerts] == [("manggarai-siaga-2", "manggarai")]
    assert "862" in alerts[0].message


def test_duplicate_delivery_is_stored_once(hub: Hub) -> None:
    body = bpbd_payload(station("PA Manggarai", 7000, msg_id="m-20"))

    first = post_bpbd(hub, body)
    second = post_bpbd(hub, body)

    assert outcomes(first) == [("accepted", None)]
    assert outcomes(second) == [("duplicate", None)]
    assert [row.uid for row in fetch_readings(hub.db)] == ["m-20"]


def test_unmappable_items_rejected_rest_kept(hub: Hub) -> None:
    no_station = {"msg_id": "m-31", "water": {"tma_mm": 7000}, "observed": epoch_minutes_ago(1)}
    station_object = station({"nama": "PA Manggarai"}, 7000, msg_id="m-32")
    bad_time = {**station("Pos Depok", 7000, msg_id="m-33"), "observed": "kemarin"}
    body = bpbd_payload(
        "not an object",
        no_station,
        station("PA Manggarai", 7100, msg_id="m-30"),
        station_object,
        bad_time,
        station("Pos Depok", None, msg_id="m-34"),
    )

    response = post_bpbd(hub, body)

    assert response.status_code == 200
    assert outcomes(response) == [
        ("rejected", "not_an_object"),
        ("rejected", "missing_field"),
        ("accepted", None),
        ("rejected", "wrong_type"),
        ("rejected", "invalid_timestamp"),
        ("rejected", "missing_value"),
    ]
    details = [result["detail"] for result in response.json()["results"]]
    assert details[1] == "item 1: the device field 'station.name' is missing"
    assert details[3] == "item 3: the device field 'station.name' is a JSON object, expected text"
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"] == 5
    assert [row.uid for row in fetch_readings(hub.db)] == ["m-30"]


def test_unknown_mapped_name_is_unknown_device(hub: Hub) -> None:
    response = post_bpbd(hub, bpbd_payload(station("PA Karet", 7000, msg_id="m-40")))

    assert outcomes(response) == [("rejected", "unknown_device")]
    assert fetch_readings(hub.db) == []


# --- signed sources, strptime and decimal comma ----------------------------------------------------


def test_strptime_zone_and_decimal_comma(hub: Hub) -> None:
    moment = (datetime.now(UTC) - timedelta(minutes=3)).replace(second=0, microsecond=0)
    body = aws_body(moment)

    response = hub.client.post("/api/v1/webhooks/aws", content=body, headers=signed_headers(body))

    assert response.status_code == 200
    assert outcomes(response) == [("accepted", None), ("accepted", None)]
    rows = fetch_readings(hub.db)
    assert [(row.device_id, row.metric, row.value_num, row.uid) for row in rows] == [
        ("aws-halim", "rain", 12.5, "K-0001/rain"),
        ("aws-halim", "temp", 27.3, "K-0001/temp"),
    ]
    assert rows[0].ts == moment


def test_replayed_signed_request_is_rejected(hub: Hub) -> None:
    body = aws_body(datetime.now(UTC) - timedelta(minutes=1))
    headers = signed_headers(body)

    first = hub.client.post("/api/v1/webhooks/aws", content=body, headers=headers)
    replay = hub.client.post("/api/v1/webhooks/aws", content=body, headers=headers)

    assert first.status_code == 200
    assert replay.status_code == 401
    assert replay.json()["error"] == "replayed_request"
    assert len(fetch_readings(hub.db)) == 2


def test_bad_signature_stores_nothing(hub: Hub) -> None:
    body = aws_body(datetime.now(UTC) - timedelta(minutes=1))
    headers = signed_headers(b"{}")

    response = hub.client.post("/api/v1/webhooks/aws", content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert fetch_readings(hub.db) == []


# --- request errors ---------------------------------------------------------------------------------


def test_missing_token_is_401(hub: Hub) -> None:
    response = hub.client.post("/api/v1/webhooks/bpbd", json=bpbd_payload())

    assert response.status_code == 401
    assert response.json()["error"] == "missing_credentials"


def test_source_without_mapping_is_404(hub: Hub) -> None:
    response = hub.client.post("/api/v1/webhooks/gateway", json={"level": 1}, headers=TOKEN_HEADERS)

    assert response.status_code == 404
    assert response.json()["error"] == "no_mapping"
    assert "/api/v1/readings" in response.json()["detail"]


def test_unknown_source_in_url_is_400(hub: Hub) -> None:
    response = hub.client.post("/api/v1/webhooks/karet", json={}, headers=TOKEN_HEADERS)

    assert response.status_code == 400
    assert response.json()["error"] == "unknown_source"
    assert "in the URL" in response.json()["detail"]


def test_header_naming_other_source_is_400(hub: Hub) -> None:
    headers = {**TOKEN_HEADERS, "X-Simpul-Source": "gateway"}

    response = hub.client.post("/api/v1/webhooks/bpbd", json=bpbd_payload(), headers=headers)

    assert response.status_code == 400
    assert response.json()["error"] == "source_mismatch"


def test_malformed_json_is_400(hub: Hub) -> None:
    headers = {**TOKEN_HEADERS, "Content-Type": "application/json"}

    response = hub.client.post("/api/v1/webhooks/bpbd", content=b'{"data": {"stations": [', headers=headers)

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


@pytest.mark.parametrize("body", [{"status": "ok"}, {"data": {"stations": {"name": "PA Manggarai"}}}])
def test_readings_path_not_a_list_is_422(hub: Hub, body: Any) -> None:
    response = post_bpbd(hub, body)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_shape"
    assert "'data.stations'" in response.json()["detail"]


def test_empty_list_answers_no_results(hub: Hub) -> None:
    response = post_bpbd(hub, bpbd_payload())

    assert response.status_code == 200
    assert response.json() == {"results": [], "accepted": 0, "duplicate": 0, "rejected": 0}


def test_openapi_documents_webhook_route(hub: Hub) -> None:
    schema = hub.client.get("/openapi.json").json()

    operation = schema["paths"]["/api/v1/webhooks/{source_id}"]["post"]
    assert operation["operationId"] == "post_webhook"
    assert "mapping" in operation["description"]
    assert "404" in operation["responses"]


# --- mapping without a server -----------------------------------------------------------------------


def test_epoch_ms_and_grouped_thousands() -> None:
    mapping = PayloadMapping.model_validate(
        {
            "device": "manggarai",
            "metric": "level",
            "value": "tma",
            "timestamp": {"path": "t", "format": "epoch_ms"},
            "decimal": ",",
        }
    )
    arrived = datetime(2025, 1, 31, 7, 0, tzinfo=UTC)

    mapped = map_items(
        [{"tma": "1.234,5", "t": 1738306800123}, {"tma": "12.5", "t": "1738306800000"}, {"tma": 1, "t": True}],
        mapping,
        arrived,
    )

    assert mapped[0] == RawReading("manggarai", "level", 1234.5, datetime(2025, 1, 31, 7, 0, 0, 123000, tzinfo=UTC))
    assert mapped[1] == RawReading("manggarai", "level", 12.5, datetime(2025, 1, 31, 7, 0, tzinfo=UTC))
    assert mapped[2] == UnmappedItem(
        2, "invalid_timestamp", "item 2: the timestamp True is not a number of milliseconds"
    )


def test_without_timestamp_readings_take_arrival() -> None:
    mapping = PayloadMapping.model_validate({"device": "depok", "metric": "level", "value": "v"})
    arrived = datetime(2025, 1, 31, 7, 0, tzinfo=UTC)

    assert map_items([{"v": "abc"}], mapping, arrived) == [RawReading("depok", "level", "abc", arrived)]


# --- config validation ------------------------------------------------------------------------------

CHECK_BASE = """\
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
sources:
  - id: bpbd
    type: http
    auth: {token: "${TEST_BPBD_TOKEN}"}
    mapping:
"""


@pytest.mark.parametrize(
    ("mapping", "path", "code"),
    [
        ("      device: manggarai\n      metric: level\n", "sources[0].mapping", "mapping_value_missing"),
        (
            "      device: manggarai\n      metric: level\n      value: v\n      metrics: {t: level}\n",
            "sources[0].mapping",
            "mapping_metric_choice",
        ),
        (
            "      device: manggarai\n      metric: level\n      value: v\n      scale: {tma: 0.1}\n",
            "sources[0].mapping",
            "mapping_scale_metric",
        ),
        (
            "      device: manggarai\n      metric: level\n      value: v\n      scale: {level: 0}\n",
            "sources[0].mapping",
            "mapping_scale_zero",
        ),
        (
            "      device: manggarai\n      metric: level\n      value: v\n      timestamp: {path: t, format: dd-mm}\n",
            "sources[0].mapping.timestamp",
            "timestamp_format",
        ),
        (
            "      device: manggarai\n      metric: level\n      value: v\n"
            "      timestamp: {path: t, format: epoch, timezone: Asia/Jakarta}\n",
            "sources[0].mapping.timestamp",
            "timezone_with_epoch",
        ),
        (
            "      device: manggarai\n      metric: tinggi\n      value: v\n",
            "sources[0].mapping.metric",
            "unknown_metric",
        ),
        (
            "      device: {path: pos, map: {PA Manggarai: mangarai}}\n      metric: level\n      value: v\n",
            "sources[0].mapping.device.map.PA Manggarai",
            "unknown_device",
        ),
        (
            "      device: manggarai\n      metric: level\n      value: v\n      decimal: ';'\n",
            "sources[0].mapping.decimal",
            "invalid_choice",
        ),
    ],
)
def test_bad_mapping_is_reported(mapping: str, path: str, code: str) -> None:
    loaded = load_config_text(CHECK_BASE + mapping, "config.yaml")

    assert [problem.code for problem in loaded.problems] == [code]
    assert loaded.problems[0].path == path
    assert loaded.problems[0].line is not None
    assert loaded.problems[0].message("id") != loaded.problems[0].message("en")
    assert loaded.config.sources == []


def test_valid_mapping_has_no_problems() -> None:
    mapping = "      device: {path: pos, map: {PA Manggarai: manggarai}}\n      metrics: {tma: level}\n"

    loaded = load_config_text(CHECK_BASE + mapping, "config.yaml")

    assert loaded.problems == []
    assert [source.id for source in loaded.config.sources] == ["bpbd"]
