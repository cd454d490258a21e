"""The readings API's fast paths give the same results as the slower standard ones they stand in for."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from integrations.http_api import (
    _READINGS,
    MAX_ID_LENGTH,
    MAX_UNIT_LENGTH,
    ApiError,
    _parse_json,
    _plain_readings,
    _readings_answer,
)
from rules.readings import RawReading, ReadingResult

BASE = {"device": "manggarai", "metric": "level", "value": 862, "ts": "2025-01-31T14:00:00+07:00"}


def _without(name: str) -> dict[str, Any]:
    return {key: value for key, value in BASE.items() if key != name}


ITEMS = {
    "minimal": BASE,
    "epoch-ts": {**BASE, "ts": 1738306800},
    "float-ts": {**BASE, "ts": 1738306800.5},
    "huge-ts": {**BASE, "ts": 10**30},
    "nan-ts": {**BASE, "ts": float("nan")},
    "boolean-ts": {**BASE, "ts": True},
    "null-ts": {**BASE, "ts": None},
    "list-ts": {**BASE, "ts": [1]},
    "missing-ts": _without("ts"),
    "missing-device": _without("device"),
    "missing-metric": _without("metric"),
    "missing-value": _without("value"),
    "numeric-device": {**BASE, "device": 7},
    "numeric-metric": {**BASE, "metric": 7},
    "null-value": {**BASE, "value": None},
    "text-value": {**BASE, "value": "unavailable"},
    "object-value": {**BASE, "value": {"level": 1}},
    "boolean-value": {**BASE, "value": False},
    "id": {**BASE, "id": "pa-1738306800"},
    "null-id": {**BASE, "id": None},
    "longest-id": {**BASE, "id": "é" * MAX_ID_LENGTH},
    "too-long-id": {**BASE, "id": "x" * (MAX_ID_LENGTH + 1)},
    "numeric-id": {**BASE, "id": 17},
    "unit": {**BASE, "unit": "mm"},
    "null-unit": {**BASE, "unit": None},
    "longest-unit": {**BASE, "unit": "u" * MAX_UNIT_LENGTH},
    "too-long-unit": {**BASE, "unit": "u" * (MAX_UNIT_LENGTH + 1)},
    "numeric-unit": {**BASE, "unit": 1},
    "unknown-field": {**BASE, "uid": "pa-1"},
    "number": 5,
    "text": "reading",
    "null": None,
    "list": [BASE],
}


def _validated(items: list[Any]) -> list[RawReading] | None:
    """Return the readings as ReadingIn's validation gives them, or None when it fails."""
    try:
        readings = _READINGS.validate_python(items)
    except ValidationError:
        return None
    return [RawReading(r.device, r.metric, r.value, r.ts, r.id, r.unit) for r in readings]


@pytest.mark.parametrize("name", ITEMS)
def test_plain_readings_match_model_validation(name: str) -> None:
    items = [ITEMS[name]]

    plain = _plain_readings(items)

    assert plain == _validated(items)
    if plain is not None:
        assert [type(reading.ts) for reading in plain] == [type(ITEMS[name]["ts"])]  # type: ignore[index]


def test_one_invalid_item_sends_list_to_validation() -> None:
    items = [BASE, {**BASE, "ts": True}, BASE]

    assert _plain_readings(items) is None
    assert _validated(items) is None


def test_valid_list_is_converted_in_order() -> None:
    items = [{**BASE, "value": index, "id": f"m-{index}"} for index in range(5)]

    plain = _plain_readings(items)

    assert plain == _validated(items)
    assert plain is not None
    assert [reading.id for reading in plain] == [f"m-{index}" for index in range(5)]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps([BASE] * 3).encode(),
        b'{"value": NaN, "ts": Infinity}',
        b'{"value": 123456789012345678901234567890}',
        b'{"value": 0.1000000000000000055511151231257827}',
        b'{"device": "\\ud800"}',
        b'{"value": 1, "value": 2}',
        '\ufeff{"device": "p\u00e9"}'.encode(),
        '{"device": "pintu"}'.encode("utf-16"),
    ],
    ids=["batch", "nan-infinity", "big-integer", "long-float", "lone-surrogate", "repeated-key", "bom", "utf-16"],
)
def test_parsed_body_matches_json_module(body: bytes) -> None:
    parsed = _parse_json(body)
    expected = json.loads(body)

    assert repr(parsed) == repr(expected)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"device": "manggarai",\n "metric": }', "malformed_json"),
        (b"[1, 2,]", "malformed_json"),
        (b'{"device": "\xff"}', "invalid_encoding"),
        (b"[" * 200_000, "malformed_json"),
        (b"9" * 5000, "malformed_json"),
        (b"  ", "empty_body"),
    ],
    ids=["missing-value", "trailing-comma", "not-utf8", "deeply-nested", "huge-integer", "blank"],
)
def test_unreadable_body_keeps_error_code(body: bytes, code: str) -> None:
    with pytest.raises(ApiError) as raised:
        _parse_json(body)

    assert raised.value.status == 400
    assert raised.value.code == code


def test_answer_bytes_match_json_response() -> None:
    results = [
        ReadingResult("accepted"),
        ReadingResult("accepted", "m-1", late=True),
        ReadingResult("duplicate", "m-2"),
        ReadingResult("rejected", None, "not_a_number", "'sepuluh' is not a number"),
        ReadingResult("rejected", "m-3", "unknown_device", "device 'pintu-air-é…' is not registered in config.yaml"),
    ]

    answer = _readings_answer(results)
    content = json.loads(answer.body)

    assert answer.body == JSONResponse(content).body
    assert answer.media_type == "application/json"
    assert [row["outcome"] for row in content["results"]] == [
        "accepted",
        "accepted",
        "duplicate",
        "rejected",
        "rejected",
    ]
    assert (content["accepted"], content["duplicate"], content["rejected"]) == (2, 1, 2)
