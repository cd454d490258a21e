"""Restarts and config reloads: state in the store survives, and a changed rule starts over.

A restart here is what a new hub process does: drop the pipeline, open the SQLite file again
with a new connection pool, and build a new Pipeline from the store. Times are minutes after
``T0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine as DbEngine

from rules.pipeline import Pipeline
from rules.readings import RawReading
from tests.conftest import (
    SOURCE,
    PipelineFactory,
    at,
    feed,
    feed_each,
    fetch_alerts,
    fetch_instances,
    load_config,
    open_store,
    opened_at,
    resolved_at,
)

HEADER = """
agencies:
  - id: dinas-sda
    name: Dinas Sumber Daya Air
    teams: [{id: tim-pompa, name: Tim Pompa}]
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - {id: katulampa, name: Bendung Katulampa, agency: dinas-sda, kind: water_level}
  - {id: pluit, name: Waduk Pluit, agency: dinas-sda, kind: water_level}
webhooks:
  - {id: posko, url: "http://127.0.0.1:9/hook", secret: "${SIMPUL_TEST_WEBHOOK_SECRET}"}
rules:
"""

SIAGA_FOR_15M = """
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850, for: 15m}
    then:
      - alert: {message: "Tinggi {value} cm di {device.name}"}
"""

SIAGA_INSTANT = """
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
"""

SIAGA_HYSTERESIS = """
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850, for: 15m}
    clear: {below: 800, for: 30m}
"""

SIAGA_COOLDOWN = """
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    cooldown: 1h
"""

SIAGA_FLAPPING = """
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    flapping: {fires: 3, window: 1h}
    then:
      - webhook: {target: posko}
"""

RISING = """
  - id: naik-cepat
    name: Manggarai naik cepat
    agency: dinas-sda
    when: {device: manggarai, metric: level, change: {over: 1h, above: 20}}
"""

OFFLINE = """
  - id: manggarai-offline
    name: Manggarai offline
    agency: dinas-sda
    when: {device: manggarai, offline: 30m}
"""

Restart = Callable[..., Pipeline]


@pytest.fixture
def restart(tmp_path: Path, db: DbEngine) -> Iterator[Restart]:
    """Return a function that drops the old pipeline's store connections and builds a new pipeline.

    ``restart(rules_yaml)`` builds the new pipeline on the same SQLite file, and
    ``event_clock=False`` makes it a live pipeline. Each call disposes the connections of the
    previous store engine.
    """
    stores = [db]

    def build(rules_yaml: str, *, event_clock: bool = True) -> Pipeline:
        stores[-1].dispose()
        store = open_store(tmp_path)
        stores.append(store)
        return Pipeline(load_config(HEADER + rules_yaml), store, event_clock=event_clock)

    yield build
    for store in stores:
        store.dispose()


def move_clock(pipeline: Pipeline, minutes: float) -> None:
    """Move the event clock with a reading of Waduk Pluit, which no rule here watches."""
    feed(pipeline, "pluit", "level", [(minutes, 100)])


# --- restarts ----------------------------------------------------------------------------------


def test_duration_survives_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_FOR_15M)
    feed(first, "manggarai", "level", [(0, 851)])
    before_restart = fetch_alerts(db)
    del first

    second = restart(SIAGA_FOR_15M)
    move_clock(second, 60)

    assert before_restart == []
    assert opened_at(fetch_alerts(db)) == [at(15)]


def test_duration_survives_restart_in_live_mode(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    first = make_pipeline(HEADER + SIAGA_FOR_15M, event_clock=False)
    feed(first, "manggarai", "level", [(0, 851)], start=start, now=start)
    del first

    second = restart(SIAGA_FOR_15M, event_clock=False)
    second.tick(start + timedelta(minutes=14))
    before_deadline = fetch_alerts(db)
    second.tick(start + timedelta(minutes=15))
    second.tick(start + timedelta(minutes=20))

    assert before_deadline == []
    assert opened_at(fetch_alerts(db)) == [start + timedelta(minutes=15)]


def test_pending_value_survives_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_FOR_15M)
    feed(first, "manggarai", "level", [(0, 851)])
    del first

    second = restart(SIAGA_FOR_15M)
    move_clock(second, 60)

    alerts = fetch_alerts(db)
    assert [alert.value for alert in alerts] == ["851"]
    assert [alert.message for alert in alerts] == ["Tinggi 851 cm di Pintu Air Manggarai"]


def test_open_alert_resolves_after_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_INSTANT)
    feed(first, "manggarai", "level", [(0, 900)])
    del first

    second = restart(SIAGA_INSTANT)
    feed(second, "manggarai", "level", [(10, 700)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(0)]
    assert resolved_at(alerts) == [at(10)]
    assert [alert.resolve_note for alert in alerts] == ["condition cleared"]


def test_open_alert_does_not_refire_after_restart(
    make_pipeline: PipelineFactory, restart: Restart, db: DbEngine
) -> None:
    first = make_pipeline(HEADER + SIAGA_INSTANT)
    feed(first, "manggarai", "level", [(0, 900)])
    del first

    second = restart(SIAGA_INSTANT)
    feed(second, "manggarai", "level", [(10, 950), (20, 900)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(0)]
    assert resolved_at(alerts) == [None]


def test_clearing_survives_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_HYSTERESIS)
    feed(first, "manggarai", "level", [(0, 860), (15, 860), (45, 790)])
    del first

    second = restart(SIAGA_HYSTERESIS)
    move_clock(second, 74)
    before_clear_for = resolved_at(fetch_alerts(db))
    move_clock(second, 120)

    assert before_clear_for == [None]
    assert resolved_at(fetch_alerts(db)) == [at(75)]


def test_cooldown_survives_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_COOLDOWN)
    feed(first, "manggarai", "level", [(0, 900), (10, 700)])
    del first

    second = restart(SIAGA_COOLDOWN)
    feed(second, "manggarai", "level", [(20, 910)])
    during_cooldown = opened_at(fetch_alerts(db))
    move_clock(second, 120)

    assert during_cooldown == [at(0)]
    assert opened_at(fetch_alerts(db)) == [at(0), at(60)]


def test_firing_held_by_cooldown_survives_restart(
    make_pipeline: PipelineFactory, restart: Restart, db: DbEngine
) -> None:
    first = make_pipeline(HEADER + SIAGA_COOLDOWN)
    feed(first, "manggarai", "level", [(0, 900), (10, 700), (20, 910)])
    del first

    second = restart(SIAGA_COOLDOWN)
    move_clock(second, 120)

    assert opened_at(fetch_alerts(db)) == [at(0), at(60)]


def test_flapping_history_survives_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_FLAPPING)
    feed_each(first, "manggarai", "level", [(0, 900), (5, 700), (10, 900), (15, 700)])
    del first

    second = restart(SIAGA_FLAPPING)
    feed(second, "manggarai", "level", [(20, 900)])

    assert [alert.flapping for alert in fetch_alerts(db)] == [False, False, True]


def test_change_window_survives_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + RISING)
    feed_each(first, "manggarai", "level", [(0, 700), (30, 712)])
    del first

    second = restart(RISING)
    feed(second, "manggarai", "level", [(60, 721)])

    assert opened_at(fetch_alerts(db)) == [at(60)]


def test_offline_deadline_survives_restart(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + OFFLINE)
    feed(first, "manggarai", "level", [(0, 700)])
    del first

    second = restart(OFFLINE)
    move_clock(second, 45)

    assert opened_at(fetch_alerts(db)) == [at(30)]


def test_late_reading_after_restart_is_late(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_INSTANT)
    feed(first, "manggarai", "level", [(0, 900)])
    del first

    second = restart(SIAGA_INSTANT)
    results = feed(second, "manggarai", "level", [(-5, 700)])

    assert [(result.outcome, result.late) for result in results] == [("accepted", True)]
    assert resolved_at(fetch_alerts(db)) == [None]


def test_duplicate_after_restart_is_duplicate(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + SIAGA_INSTANT)
    first.process(SOURCE, [RawReading("manggarai", "level", 900, at(0), id="awlr-1")])
    del first

    second = restart(SIAGA_INSTANT)
    results = second.process(SOURCE, [RawReading("manggarai", "level", 700, at(10), id="awlr-1")])

    assert [result.outcome for result in results] == ["duplicate"]
    assert resolved_at(fetch_alerts(db)) == [None]


# --- config reloads ----------------------------------------------------------------------------

TWO_RULES = """
  - id: siaga-a
    name: Siaga A
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850, for: 15m}
  - id: siaga-b
    name: Siaga B
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 800, for: 15m}
"""

# Rule siaga-b gets a new threshold, and siaga-a stays the same.
TWO_RULES_B_CHANGED = TWO_RULES.replace("above: 800", "above: 820")

TWO_INSTANT_RULES = TWO_RULES.replace(", for: 15m", "")
TWO_INSTANT_RULES_B_CHANGED = TWO_RULES_B_CHANGED.replace(", for: 15m", "")


def alerts_by_rule(db: DbEngine) -> list[tuple[str, datetime, datetime | None]]:
    return [(alert.rule_id, alert.opened_at, alert.resolved_at) for alert in fetch_alerts(db)]


def test_reload_keeps_unchanged_rule_pending(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + TWO_RULES)
    feed(first, "manggarai", "level", [(0, 900)])
    del first

    second = restart(TWO_RULES_B_CHANGED)
    feed(second, "manggarai", "level", [(10, 900)])
    move_clock(second, 60)

    # siaga-a stays pending since 0, while siaga-b starts over with the reading at 10.
    assert alerts_by_rule(db) == [("siaga-a", at(15), None), ("siaga-b", at(25), None)]


def test_reload_resolves_alert_of_changed_rule(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + TWO_INSTANT_RULES)
    feed(first, "manggarai", "level", [(0, 900)])
    del first

    restart(TWO_INSTANT_RULES_B_CHANGED)

    alerts = fetch_alerts(db)
    assert [(alert.rule_id, alert.status) for alert in alerts] == [("siaga-a", "open"), ("siaga-b", "resolved")]
    assert [alert.resolve_note for alert in alerts] == [None, "rule changed or removed"]


def test_reload_changed_rule_fires_again(make_pipeline: PipelineFactory, restart: Restart, db: DbEngine) -> None:
    first = make_pipeline(HEADER + TWO_INSTANT_RULES)
    feed(first, "manggarai", "level", [(0, 900)])
    del first

    second = restart(TWO_INSTANT_RULES_B_CHANGED)
    feed(second, "manggarai", "level", [(10, 950)])

    assert [(rule_id, opened) for rule_id, opened, _resolved in alerts_by_rule(db)] == [
        ("siaga-a", at(0)),
        ("siaga-b", at(0)),
        ("siaga-b", at(10)),
    ]


def test_reload_with_unchanged_rules_keeps_instances(
    make_pipeline: PipelineFactory, restart: Restart, db: DbEngine
) -> None:
    first = make_pipeline(HEADER + TWO_INSTANT_RULES)
    feed(first, "manggarai", "level", [(0, 900)])
    instances_before = [(row.rule_id, row.state, row.open_alert_id) for row in fetch_instances(db)]
    del first

    restart(TWO_INSTANT_RULES)

    assert [(row.rule_id, row.state, row.open_alert_id) for row in fetch_instances(db)] == instances_before
    assert [alert.status for alert in fetch_alerts(db)] == ["open", "open"]


def test_reload_removing_rule_resolves_its_alert(
    make_pipeline: PipelineFactory, restart: Restart, db: DbEngine
) -> None:
    only_a = TWO_INSTANT_RULES[: TWO_INSTANT_RULES.index("  - id: siaga-b")]
    first = make_pipeline(HEADER + TWO_INSTANT_RULES)
    feed(first, "manggarai", "level", [(0, 900)])
    del first

    restart(only_a)

    assert [(alert.rule_id, alert.status) for alert in fetch_alerts(db)] == [
        ("siaga-a", "open"),
        ("siaga-b", "resolved"),
    ]
    assert [row.rule_id for row in fetch_instances(db)] == ["siaga-a"]


ATTRIBUTE_RULE = """
  - id: siaga-2
    name: Siaga 2
    agency: dinas-sda
    when: {kind: water_level, metric: level, at_least: {attribute: siaga_2}}
"""


def test_reload_resets_only_device_whose_threshold_changed(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    with_levels = HEADER.replace(
        "{id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}",
        "{id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level, attributes: {siaga_2: 850}}",
    ).replace(
        "{id: katulampa, name: Bendung Katulampa, agency: dinas-sda, kind: water_level}",
        "{id: katulampa, name: Bendung Katulampa, agency: dinas-sda, kind: water_level, attributes: {siaga_2: 150}}",
    )
    first = make_pipeline(with_levels + ATTRIBUTE_RULE)
    feed(first, "manggarai", "level", [(0, 900)])
    feed(first, "katulampa", "level", [(0, 200)])
    del first

    # Katulampa's Siaga 2 level moves from 150 to 160 cm, and Manggarai's stays at 850 cm.
    changed = with_levels.replace("siaga_2: 150", "siaga_2: 160")
    second = make_pipeline(changed + ATTRIBUTE_RULE)
    feed(second, "katulampa", "level", [(10, 200)])

    assert [(alert.device_id, alert.opened_at, alert.status) for alert in fetch_alerts(db)] == [
        ("manggarai", at(0), "open"),
        ("katulampa", at(0), "resolved"),
        ("katulampa", at(10), "open"),
    ]
