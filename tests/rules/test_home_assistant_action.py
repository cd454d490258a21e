"""The ``home_assistant`` action in config.yaml: its checks and messages, and the runs the pipeline
writes for it, with the hold and release of a flapping rule."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine as DbEngine

from rules.config import HomeAssistantAction
from rules.loader import load_config_text
from rules.pipeline import Pipeline
from rules.readings import RawReading
from tests.conftest import at, fetch_action_runs

CONFIG = """\
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level, attributes: {pompa: pompa_1}}
sources:
  - id: ha-rumah-pompa
    type: home_assistant
    url: ws://127.0.0.1:8123/api/websocket
    token: ${SIMPUL_HA_TOKEN}
    entities:
      - {entity_id: input_number.tinggi_air, device: manggarai, metric: level}
  - {id: gateway, type: http, auth: {token: "${SIMPUL_GATEWAY_TOKEN}"}}
rules:
  - id: manggarai-pompa
    name: Nyalakan pompa Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    then:
      - home_assistant: {source: ha-rumah-pompa, service: switch.turn_on, entity_id: "switch.{device.attributes.pompa}"}
      - home_assistant:
          source: ha-rumah-pompa
          service: notify.notify
          data: {title: "{rule.name}", message: "Tinggi air {value} {unit}", data: {priority: [high, 2]}}
"""
# The line of the first action; the second one's source, service and data follow on lines + 2, + 3 and + 4.
ACTION_LINE = 23


def problems(text: str) -> list[tuple[int | None, str, str]]:
    return [(problem.line, problem.path, problem.code) for problem in load_config_text(text, "config.yaml").problems]


def test_home_assistant_actions_are_accepted() -> None:
    loaded = load_config_text(CONFIG, "config.yaml")

    assert loaded.problems == []
    (rule,) = loaded.config.rules
    assert [action.type for action in rule.then] == ["home_assistant", "home_assistant"]
    call = rule.then[0].home_assistant
    assert isinstance(call, HomeAssistantAction)
    assert call.domain_and_service == ("switch", "turn_on")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "{source: ha-rumah-pompa, service: switch.turn_on,",
            "{source: ha-rumah-pomp, service: switch.turn_on,",
            [(ACTION_LINE, "rules[0].then[0].home_assistant.source", "unknown_home_assistant_source")],
        ),
        (
            "{source: ha-rumah-pompa, service: switch.turn_on,",
            "{source: gateway, service: switch.turn_on,",
            [(ACTION_LINE, "rules[0].then[0].home_assistant.source", "action_source_not_home_assistant")],
        ),
        (
            "service: switch.turn_on,",
            "service: turn_on,",
            [(ACTION_LINE, "rules[0].then[0].home_assistant.service", "home_assistant_service")],
        ),
        (
            'entity_id: "switch.{device.attributes.pompa}"',
            "entity_id: Pompa Manggarai",
            [(ACTION_LINE, "rules[0].then[0].home_assistant.entity_id", "home_assistant_entity_id")],
        ),
        (
            'entity_id: "switch.{device.attributes.pompa}"',
            'entity_id: [switch.pompa_1, "switch.{device.nama}"]',
            [(ACTION_LINE, "rules[0].then[0].home_assistant.entity_id[1]", "unknown_template_field")],
        ),
        (
            'message: "Tinggi air {value} {unit}"',
            'message: "Tinggi air {nilai} {unit}"',
            [(ACTION_LINE + 4, "rules[0].then[1].home_assistant.data.message", "unknown_template_field")],
        ),
        (
            "data: {priority: [high, 2]}",
            "data: {priority: [high, 2], sejak: 2025-01-06}",
            [(ACTION_LINE + 4, "rules[0].then[1].home_assistant.data", "home_assistant_data_value")],
        ),
        (
            "service: notify.notify",
            "service: notify.notify\n          entity: notify.telegram",
            [(ACTION_LINE + 4, "rules[0].then[1].home_assistant.entity", "unknown_key")],
        ),
    ],
)
def test_invalid_home_assistant_action_is_reported(old: str, new: str, expected: list[tuple[int, str, str]]) -> None:
    text = CONFIG.replace(old, new)
    assert text != CONFIG, f"the test config does not contain {old!r}"

    assert problems(text) == expected


def test_source_that_had_errors_is_named_as_skipped() -> None:
    text = CONFIG.replace("url: ws://127.0.0.1:8123/api/websocket", "url: http://127.0.0.1:8123")

    assert problems(text) == [
        (12, "sources[0].url", "home_assistant_url"),
        (ACTION_LINE, "rules[0].then[0].home_assistant.source", "skipped_reference"),
        (ACTION_LINE + 2, "rules[0].then[1].home_assistant.source", "skipped_reference"),
    ]


def test_messages_in_both_languages() -> None:
    text = CONFIG.replace("{source: ha-rumah-pompa, service: switch.turn_on,", "{source: gateway, service: turn-on,")
    found = load_config_text(text, "config.yaml").problems

    assert [problem.message("en") for problem in found] == [
        "invalid service 'turn-on': write it as domain.service, e.g. switch.turn_on"
    ]
    assert [problem.message("id") for problem in found] == [
        "service 'turn-on' tidak valid: tulis dalam bentuk domain.service, misalnya switch.turn_on"
    ]

    text = CONFIG.replace(
        "{source: ha-rumah-pompa, service: switch.turn_on,", "{source: gateway, service: switch.turn_on,"
    )
    (problem,) = load_config_text(text, "config.yaml").problems
    assert problem.message("en") == (
        "source 'gateway' is a http source, but Home Assistant services are called through a home_assistant source"
    )
    assert problem.message("id") == (
        "source 'gateway' bertipe http, padahal service Home Assistant hanya dapat dipanggil lewat source "
        "bertipe home_assistant"
    )


def test_unknown_source_suggests_the_nearest() -> None:
    text = CONFIG.replace(
        "{source: ha-rumah-pompa, service: switch.turn_on,", "{source: ha-rumah, service: switch.turn_on,"
    )
    (problem,) = load_config_text(text, "config.yaml").problems

    assert problem.message("en") == "source 'ha-rumah' is not defined under sources. Did you mean 'ha-rumah-pompa'?"
    assert problem.message("id") == "source 'ha-rumah' tidak ada di sources. Mungkin maksud Anda 'ha-rumah-pompa'?"


# --- runs ---------------------------------------------------------------------------------------


def test_firing_writes_pending_runs_with_rendered_calls(db: DbEngine) -> None:
    pipeline = Pipeline(load_config_text(CONFIG, "config.yaml").config, db, event_clock=True)

    pipeline.process("test", [RawReading("manggarai", "level", 700, at(0))])
    pipeline.process("test", [RawReading("manggarai", "level", 861.5, at(1))])

    switch, notify = fetch_action_runs(db)
    assert (switch.type, switch.status, switch.target) == ("home_assistant", "pending", "ha-rumah-pompa:switch.turn_on")
    assert switch.payload == {
        "source": "ha-rumah-pompa",
        "domain": "switch",
        "service": "turn_on",
        "target": {"entity_id": "switch.pompa_1"},
    }
    assert notify.target == "ha-rumah-pompa:notify.notify"
    assert notify.payload["service_data"] == {
        "title": "Nyalakan pompa Manggarai",
        "message": "Tinggi air 861.5 cm",
        "data": {"priority": ["high", 2]},
    }
    assert "target" not in notify.payload


# Fires at 0, 10, 20 and 30. The third and fourth firings each follow two others within an hour,
# and at 95 the instance has not fired for a whole hour, so it is stable again.
FLAPPING_STEPS = [(0, 900), (5, 700), (10, 900), (15, 700), (20, 900), (25, 700), (30, 900), (95, 910)]


def test_flapping_holds_then_releases_service_calls(db: DbEngine) -> None:
    text = CONFIG.replace("    then:\n", "    flapping: {fires: 3, window: 1h}\n    then:\n")
    loaded = load_config_text(text, "config.yaml")
    assert loaded.problems == []
    pipeline = Pipeline(loaded.config, db, event_clock=True)

    for minute, level in FLAPPING_STEPS:
        pipeline.process("test", [RawReading("manggarai", "level", level, at(minute))])

    switch_runs = [run for run in fetch_action_runs(db) if run.target == "ha-rumah-pompa:switch.turn_on"]
    assert [run.status for run in switch_runs] == ["pending", "pending", "skipped", "pending"]
    assert switch_runs[-1].payload["target"] == {"entity_id": "switch.pompa_1"}
