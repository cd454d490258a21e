"""The ``home_assistant`` action: a reading comes in from the Home Assistant feed, a rule fires, the
pipeline writes a pending run, and the outbox worker calls the service through the executor, all
against the websocket server in test_home_assistant.py that speaks Home Assistant's protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine as DbEngine

from integrations.home_assistant import HomeAssistantExecutor, HomeAssistantFeed
from rules.config import Config, HomeAssistantSource
from rules.ingest import Ingestor
from rules.loader import load_config_text
from rules.outbox import OutboxWorker
from rules.pipeline import Pipeline
from rules.readings import RawReading
from rules.store import ops
from rules.store.models import ActionRun, utc_now
from tests.conftest import at, fetch_action_runs, fetch_alerts
from tests.integrations.test_home_assistant import (
    TOKEN,
    TOKEN_ENV,
    FakeHomeAssistant,
    now_minus,
    server,
    state_object,
    wait_until,
)

__all__ = ["server"]

CONFIG = """
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
sources:
  - id: rumah-pompa
    type: home_assistant
    url: __URL__
    token: ${SIMPUL_TEST_HA_TOKEN}
    entities:
      - {entity_id: input_number.tinggi_air, device: manggarai, metric: level}
rules:
  - id: manggarai-pompa
    name: Nyalakan pompa Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    then:
      - home_assistant:
          source: rumah-pompa
          service: __SERVICE__
          entity_id: __ENTITY__
          data: {}
      - home_assistant:
          source: rumah-pompa
          service: input_text.set_value
          entity_id: input_text.pesan
          data: {value: "Siaga: {value} {unit} di {device.name}"}
"""


def config_text(url: str, service: str = "switch.turn_on", entity_id: str = "switch.pompa_manggarai") -> str:
    return CONFIG.replace("__URL__", url).replace("__SERVICE__", service).replace("__ENTITY__", entity_id)


def loaded_config(url: str, **changes: str) -> Config:
    loaded = load_config_text(config_text(url, **changes), "config.yaml")
    assert loaded.problems == [], [problem.format("en") for problem in loaded.problems]
    return loaded.config


def ha_sources(config: Config) -> list[HomeAssistantSource]:
    return [source for source in config.sources if isinstance(source, HomeAssistantSource)]


def fire(pipeline: Pipeline) -> None:
    """Make the rule fire once: a level below the threshold, then one above it."""
    pipeline.process("test", [RawReading("manggarai", "level", 700, at(0))])
    pipeline.process("test", [RawReading("manggarai", "level", 900, at(1))])


def runs_of(db: DbEngine, service: str) -> list[ActionRun]:
    return [run for run in fetch_action_runs(db) if run.type == "home_assistant" and run.target == service]


def only_run(db: DbEngine, service: str = "rumah-pompa:switch.turn_on") -> ActionRun:
    (run,) = runs_of(db, service)
    return run


def calls_to(server: FakeHomeAssistant, service: str) -> list[dict[str, Any]]:
    return [call for call in server.calls if f"{call['domain']}.{call['service']}" == service]


@pytest.fixture
def entities(server: FakeHomeAssistant, monkeypatch: pytest.MonkeyPatch) -> FakeHomeAssistant:
    """The server with the pump switch, the message text and the level sensor, and the token set."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    for entity_id, state in [
        ("switch.pompa_manggarai", "off"),
        ("input_text.pesan", ""),
        ("input_number.tinggi_air", "700.0"),
    ]:
        server.states[entity_id] = state_object(entity_id, state, now_minus(600))
    return server


@pytest.fixture
def make_executor() -> Iterator[Callable[..., HomeAssistantExecutor]]:
    """Builds executors for a config and closes them at the end."""
    built: list[HomeAssistantExecutor] = []

    def build(config: Config, **options: float) -> HomeAssistantExecutor:
        executor = HomeAssistantExecutor(ha_sources(config), **options)
        built.append(executor)
        return executor

    yield build
    for executor in built:
        executor.close()


# --- the whole path ---------------------------------------------------------------------------


def test_state_change_fires_service_call(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url)
    ingestor = Ingestor(Pipeline(config, db, event_clock=False))
    ingestor.start()
    feed = HomeAssistantFeed(ha_sources(config)[0], config)
    stop_feed = feed.start(ingestor.submit)
    try:
        assert wait_until(lambda: feed.connected)
        entities.set_state("input_number.tinggi_air", "912.0", now_minus(1))
        assert wait_until(lambda: len(fetch_alerts(db)) == 1)
    finally:
        stop_feed()
        ingestor.stop()

    executor = make_executor(config)
    assert OutboxWorker(db, {"home_assistant": executor}).run_once() == 2

    assert [run.status for run in fetch_action_runs(db)] == [ops.RUN_SUCCEEDED, ops.RUN_SUCCEEDED]
    (switch_call,) = calls_to(entities, "switch.turn_on")
    assert switch_call["target"] == {"entity_id": "switch.pompa_manggarai"}
    assert "service_data" not in switch_call
    (text_call,) = calls_to(entities, "input_text.set_value")
    assert text_call["target"] == {"entity_id": "input_text.pesan"}
    assert text_call["service_data"] == {"value": "Siaga: 912 cm di Pintu Air Manggarai"}
    assert entities.states["switch.pompa_manggarai"]["state"] == "on"
    assert executor.health() == {
        "healthy": True,
        "sources": {"rumah-pompa": {"connected": True, "last_error": None, "reconnects": 0}},
    }


def test_pending_run_holds_the_rendered_call(db: DbEngine, entities: FakeHomeAssistant) -> None:
    fire(Pipeline(loaded_config(entities.url), db, event_clock=True))

    run = only_run(db, "rumah-pompa:input_text.set_value")
    assert run.status == ops.RUN_PENDING
    assert run.payload == {
        "source": "rumah-pompa",
        "domain": "input_text",
        "service": "set_value",
        "target": {"entity_id": "input_text.pesan"},
        "service_data": {"value": "Siaga: 900 cm di Pintu Air Manggarai"},
    }


def test_succeeded_call_is_not_sent_again(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url)
    fire(Pipeline(config, db, event_clock=True))
    worker = OutboxWorker(db, {"home_assistant": make_executor(config)})

    assert worker.run_once() == 2
    assert worker.run_once(utc_now()) == 0

    assert len(calls_to(entities, "switch.turn_on")) == 1


# --- error responses ----------------------------------------------------------------------------


def test_unknown_service_makes_run_dead_with_the_error(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url, service="switch.nyalakan")
    fire(Pipeline(config, db, event_clock=True))

    OutboxWorker(db, {"home_assistant": make_executor(config)}).run_once()

    run = only_run(db, "rumah-pompa:switch.nyalakan")
    assert run.status == ops.RUN_DEAD
    assert run.attempts == 1
    assert run.last_error == (
        "home_assistant source rumah-pompa, service switch.nyalakan: "
        "Home Assistant responded with an error: Service switch.nyalakan not found."
    )
    assert len(calls_to(entities, "switch.nyalakan")) == 1


def test_missing_entity_makes_run_dead_without_a_call(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url, entity_id="switch.pompa_tidak_ada")
    fire(Pipeline(config, db, event_clock=True))

    OutboxWorker(db, {"home_assistant": make_executor(config)}).run_once()

    run = only_run(db)
    assert run.status == ops.RUN_DEAD
    assert run.last_error == (
        "home_assistant source rumah-pompa, service switch.turn_on: "
        "entity switch.pompa_tidak_ada does not exist in Home Assistant"
    )
    assert calls_to(entities, "switch.turn_on") == []


def test_entity_added_after_connecting_can_be_called(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url, entity_id="switch.pompa_baru")
    executor = make_executor(config)
    worker = OutboxWorker(db, {"home_assistant": executor})
    fire(Pipeline(config, db, event_clock=True))
    worker.run_once()
    assert only_run(db).status == ops.RUN_DEAD

    entities.set_state("switch.pompa_baru", "off", now_minus(1))
    ops.retry_dead_run(engine=db, run_id=only_run(db).id or 0, by="test")
    worker.run_once()

    assert only_run(db).status == ops.RUN_SUCCEEDED
    assert len(calls_to(entities, "switch.turn_on")) == 1


def test_unavailable_entity_is_retried(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    entities.states["switch.pompa_manggarai"] = state_object("switch.pompa_manggarai", "unavailable", now_minus(60))
    # Enough attempts for the retries below to outlast a slow machine.
    text = config_text(entities.url).replace("    entities:\n", "    max_attempts: 50\n    entities:\n", 1)
    config = load_config_text(text, "config.yaml").config
    fire(Pipeline(config, db, event_clock=True))
    worker = OutboxWorker(db, {"home_assistant": make_executor(config)})

    worker.run_once()
    failed = only_run(db)
    entities.set_state("switch.pompa_manggarai", "off", now_minus(1))

    def retried_until_sent() -> bool:
        # The state change reaches the executor's connection a moment after the server sent it.
        worker.run_once(only_run(db).next_attempt_at)
        return only_run(db).status == ops.RUN_SUCCEEDED

    assert failed.status == ops.RUN_FAILED
    assert "entity switch.pompa_manggarai is unavailable in Home Assistant" in (failed.last_error or "")
    assert wait_until(retried_until_sent)
    assert len(calls_to(entities, "switch.turn_on")) == 1


# --- Home Assistant unreachable -----------------------------------------------------------------


def test_server_down_retries_then_delivers_once(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url)
    executor = make_executor(config, connect_timeout_seconds=2.0)
    worker = OutboxWorker(db, {"home_assistant": executor})
    entities.go_down()
    fire(Pipeline(config, db, event_clock=True))

    first_try = utc_now()
    worker.run_once(first_try)
    after_first = only_run(db)
    assert after_first.next_attempt_at is not None
    worker.run_once(after_first.next_attempt_at)
    after_second = only_run(db)
    health_while_down = executor.health()

    entities.come_back()
    assert after_second.next_attempt_at is not None
    worker.run_once(after_second.next_attempt_at)

    assert after_first.status == ops.RUN_FAILED
    assert after_second.status == ops.RUN_FAILED
    assert after_second.attempts == 2
    assert after_second.next_attempt_at - after_first.next_attempt_at > after_first.next_attempt_at - first_try
    assert "CannotConnect" in (after_second.last_error or "")
    assert health_while_down["healthy"] is False
    assert "CannotConnect" in str(health_while_down["sources"]["rumah-pompa"]["last_error"])
    assert only_run(db).status == ops.RUN_SUCCEEDED
    assert only_run(db).attempts == 3
    assert len(calls_to(entities, "switch.turn_on")) == 1
    assert executor.health()["healthy"] is True


def test_kept_connection_reconnects_after_a_restart(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url)
    executor = make_executor(config)
    worker = OutboxWorker(db, {"home_assistant": executor})
    fire(Pipeline(config, db, event_clock=True))
    assert worker.run_once() == 2

    entities.go_down()
    assert wait_until(lambda: executor.health()["sources"]["rumah-pompa"]["connected"] is False)
    entities.come_back()
    entities.set_state("switch.pompa_manggarai", "off", now_minus(1))
    fire_again = Pipeline(config, db, event_clock=True)
    fire_again.process("test", [RawReading("manggarai", "level", 700, at(2))])
    fire_again.process("test", [RawReading("manggarai", "level", 901, at(3))])
    worker.run_once()

    assert [run.status for run in runs_of(db, "rumah-pompa:switch.turn_on")] == [ops.RUN_SUCCEEDED] * 2
    assert len(calls_to(entities, "switch.turn_on")) == 2
    assert executor.health()["sources"]["rumah-pompa"]["reconnects"] == 1


def test_dropped_call_is_retried(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url, service="input_text.set_value", entity_id="input_text.pesan")
    fire(Pipeline(config, db, event_clock=True))
    worker = OutboxWorker(db, {"home_assistant": make_executor(config)})
    entities.on_call = "drop"

    worker.run_once()
    failed = fetch_action_runs(db)
    entities.on_call = "answer"
    worker.run_once(max(run.next_attempt_at or utc_now() for run in failed))

    assert {run.status for run in failed} == {ops.RUN_FAILED}
    assert any("the connection was lost before Home Assistant responded" in (run.last_error or "") for run in failed)
    assert {run.status for run in fetch_action_runs(db)} == {ops.RUN_SUCCEEDED}
    # Home Assistant may have carried out a call whose response was lost, so it is called again:
    # delivery is at least once.
    assert len(calls_to(entities, "input_text.set_value")) >= 3


def test_unanswered_call_times_out(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    config = loaded_config(entities.url)
    fire(Pipeline(config, db, event_clock=True))
    entities.on_call = "silent"

    OutboxWorker(db, {"home_assistant": make_executor(config, call_timeout_seconds=0.5)}).run_once()

    run = only_run(db)
    assert run.status == ops.RUN_FAILED
    assert run.last_error == (
        "home_assistant source rumah-pompa, service switch.turn_on: Home Assistant did not respond within 0.5 s"
    )


# --- runs that cannot be called -----------------------------------------------------------------


def test_unknown_source_is_dead(db: DbEngine, entities: FakeHomeAssistant) -> None:
    config = loaded_config(entities.url)
    fire(Pipeline(config, db, event_clock=True))
    executor = HomeAssistantExecutor([])
    try:
        OutboxWorker(db, {"home_assistant": executor}).run_once()
    finally:
        executor.close()

    run = only_run(db)
    assert run.status == ops.RUN_DEAD
    assert run.last_error == "home_assistant source rumah-pompa is not in the config, so it cannot call services"


def test_missing_token_is_dead(
    db: DbEngine,
    entities: FakeHomeAssistant,
    make_executor: Callable[..., HomeAssistantExecutor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = loaded_config(entities.url)
    fire(Pipeline(config, db, event_clock=True))
    monkeypatch.delenv(TOKEN_ENV)

    OutboxWorker(db, {"home_assistant": make_executor(config)}).run_once()

    run = only_run(db)
    assert run.status == ops.RUN_DEAD
    assert f"environment variable {TOKEN_ENV} is not set" in (run.last_error or "")


def test_wrong_token_is_retried_and_not_shown(
    db: DbEngine,
    entities: FakeHomeAssistant,
    make_executor: Callable[..., HomeAssistantExecutor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = loaded_config(entities.url)
    fire(Pipeline(config, db, event_clock=True))
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")

    executor = make_executor(config)
    OutboxWorker(db, {"home_assistant": executor}).run_once()

    run = only_run(db)
    assert run.status == ops.RUN_FAILED
    assert "AuthenticationFailed: Invalid access token or password" in (run.last_error or "")
    assert "not-the-token" not in (run.last_error or "") + str(executor.health())
    assert entities.calls == []


def test_run_is_dead_after_the_source_max_attempts(
    db: DbEngine, entities: FakeHomeAssistant, make_executor: Callable[..., HomeAssistantExecutor]
) -> None:
    text = config_text(entities.url).replace("    entities:\n", "    max_attempts: 2\n    entities:\n", 1)
    config = load_config_text(text, "config.yaml").config
    assert ha_sources(config)[0].max_attempts == 2
    worker = OutboxWorker(db, {"home_assistant": make_executor(config, connect_timeout_seconds=2.0)})
    entities.go_down()
    fire(Pipeline(config, db, event_clock=True))

    worker.run_once()
    failed = only_run(db)
    worker.run_once(failed.next_attempt_at)

    assert failed.status == ops.RUN_FAILED
    assert only_run(db).status == ops.RUN_DEAD
    assert only_run(db).attempts == 2


def test_source_added_by_a_reload_calls_services(db: DbEngine, entities: FakeHomeAssistant) -> None:
    config = loaded_config(entities.url)
    fire(Pipeline(config, db, event_clock=True))
    executor = HomeAssistantExecutor([])
    try:
        executor.use_sources(ha_sources(config))
        handled = OutboxWorker(db, {"home_assistant": executor}).run_once()
    finally:
        executor.close()

    assert handled == 2
    assert [run.status for run in fetch_action_runs(db)] == [ops.RUN_SUCCEEDED, ops.RUN_SUCCEEDED]
    assert entities.states["switch.pompa_manggarai"]["state"] == "on"
