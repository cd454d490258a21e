"""Backtest: a rule as it is and as changed, run over readings stored through the real pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine as DbEngine

from rules.backtest import BacktestAlert, BacktestError, ChartPoint, run_backtest
from rules.config import Config, Rule
from tests.conftest import (
    PipelineFactory,
    at,
    feed,
    fetch_alerts,
    fetch_instances,
    fetch_readings,
    load_config,
)

CONFIG = """
agencies: [{id: dinas-sda, name: Dinas SDA}]
kinds: {water_level: {metrics: {level: {unit: cm, min: -100, max: 2000}}}}
devices:
  - {id: manggarai, name: PA Manggarai, agency: dinas-sda, kind: water_level}
  - {id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level}
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    when: {device: manggarai, metric: level, at_least: 850, for: 15m}
    clear: {below: 800, for: 30m}
    then: [{alert: {message: "Manggarai {value} cm"}}]
"""

# Manggarai every 10 minutes: up to 860 cm, down to 760 cm, and up again to 815 cm.
MANGGARAI = [
    (0, 790),
    (10, 805),
    (20, 830),
    (30, 855),
    (40, 860),
    (50, 845),
    (60, 820),
    (70, 795),
    (80, 790),
    (90, 785),
    (100, 780),
    (110, 775),
    (120, 770),
    (130, 760),
    (140, 810),
    (150, 815),
]


def changed(rule: Rule, **fields: object) -> Rule:
    """Return a copy of ``rule`` validated again with top-level fields replaced, as the editor would save it."""
    data = rule.model_dump(by_alias=True)
    data.update(fields)
    return Rule.model_validate(data)


def stored(make_pipeline: PipelineFactory) -> Config:
    config = load_config(CONFIG)
    pipeline = make_pipeline(config)
    feed(pipeline, "manggarai", "level", MANGGARAI)
    feed(pipeline, "depok", "level", [(0, 200), (80, 210)])
    return config


def test_lower_threshold_fires_earlier_and_again(db: DbEngine, make_pipeline: PipelineFactory) -> None:
    config = stored(make_pipeline)
    rule = config.rules[0]
    lower = changed(
        rule,
        when={"device": "manggarai", "metric": "level", "at_least": 800, "for": "15m"},
        clear={"below": 790, "for": "30m"},
    )

    result = run_backtest(config=config, db=db, before=rule, after=lower, start=at(0), end=at(160))

    # At 850: pending at 30, fires at 30 + 15 = 45 with the last value (860, read at 40); below 800
    # from 70, so the clear holds for 30 minutes and resolves at 100.
    assert result.before.alerts == [BacktestAlert("manggarai", at(45), at(100), 860.0)]
    # At 800: pending at 10, fires at 25 (value 830, read at 20); below 790 only from 90, so it
    # resolves at 120. Pending again at 140, it fires at 155 after the last reading, still open at the end.
    assert result.after.alerts == [
        BacktestAlert("manggarai", at(25), at(120), 830.0),
        BacktestAlert("manggarai", at(155), None, 815.0),
    ]
    assert result.before.devices == ["manggarai"]
    assert result.after.devices == ["manggarai"]
    assert result.before.rule == rule
    assert result.after.rule == lower


def test_chart_readings_cover_the_period(db: DbEngine, make_pipeline: PipelineFactory) -> None:
    config = stored(make_pipeline)

    result = run_backtest(config=config, db=db, before=config.rules[0], after=None, start=at(30), end=at(60))

    assert list(result.readings) == ["manggarai"]
    assert result.readings["manggarai"] == [
        ChartPoint("level", at(30), 855.0, False),
        ChartPoint("level", at(40), 860.0, False),
        ChartPoint("level", at(50), 845.0, False),
    ]
    assert result.after.rule is None
    assert result.after.alerts == []
    # The period starts idle at 30, so the rule fires at 30 + 15 and stays open past the end.
    assert result.before.alerts == [BacktestAlert("manggarai", at(45), None, 860.0)]


def test_deadline_at_end_is_outside_period(db: DbEngine, make_pipeline: PipelineFactory) -> None:
    config = stored(make_pipeline)

    exact = run_backtest(config=config, db=db, before=config.rules[0], after=None, start=at(0), end=at(45))
    later = run_backtest(config=config, db=db, before=config.rules[0], after=None, start=at(0), end=at(46))

    assert exact.before.alerts == []
    assert later.before.alerts == [BacktestAlert("manggarai", at(45), None, 860.0)]


def alert_rows(db: DbEngine) -> list[tuple[object, ...]]:
    return [(alert.id, alert.status, alert.opened_at, alert.resolved_at) for alert in fetch_alerts(db)]


def instance_rows(db: DbEngine) -> list[tuple[object, ...]]:
    return [(row.rule_id, row.device_id, row.state, row.since, row.updated_at) for row in fetch_instances(db)]


def test_backtest_writes_nothing(db: DbEngine, make_pipeline: PipelineFactory) -> None:
    config = stored(make_pipeline)
    alerts, instances, readings = alert_rows(db), instance_rows(db), len(fetch_readings(db))
    lower = changed(config.rules[0], when={"device": "manggarai", "metric": "level", "at_least": 800, "for": "15m"})

    run_backtest(config=config, db=db, before=config.rules[0], after=lower, start=at(0), end=at(160))

    assert alerts != []
    assert alert_rows(db) == alerts
    assert instance_rows(db) == instances
    assert len(fetch_readings(db)) == readings


CONTEXT_CONFIG = """
agencies: [{id: dinas-sda, name: Dinas SDA}]
kinds: {water_level: {metrics: {level: {unit: cm, min: -100, max: 2000}}}}
devices:
  - {id: manggarai, name: PA Manggarai, agency: dinas-sda, kind: water_level}
  - {id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level}
rules:
  - id: depok-dan-manggarai
    name: Depok naik saat Manggarai tinggi
    agency: dinas-sda
    when: {device: depok, metric: level, above: 300}
    and:
      - {device: manggarai, metric: level, at_least: 850, max_age: 30m}
    then: [{alert: {message: "Depok {value} cm"}}]
"""


def test_and_condition_reads_values_before_start(db: DbEngine, make_pipeline: PipelineFactory) -> None:
    config = load_config(CONTEXT_CONFIG)
    pipeline = make_pipeline(config)
    feed(pipeline, "manggarai", "level", [(-10, 860)])
    feed(pipeline, "depok", "level", [(5, 310), (10, 290), (25, 320)])
    rule = config.rules[0]
    strict = changed(rule, **{"and": [{"device": "manggarai", "metric": "level", "at_least": 850, "max_age": "10m"}]})

    result = run_backtest(config=config, db=db, before=rule, after=strict, start=at(0), end=at(60))

    # Manggarai read 860 at -10, before the period. At 5 that value is 15 minutes old, which is
    # fresh for max_age 30m and stale for 10m. At 25 it is 35 minutes old and stale for both.
    assert result.before.alerts == [BacktestAlert("depok", at(5), at(10), 310.0)]
    assert result.after.alerts == []
    assert sorted(result.readings) == ["depok"]


def test_added_rule_has_no_before_variant(db: DbEngine, make_pipeline: PipelineFactory) -> None:
    config = stored(make_pipeline)
    depok = changed(
        config.rules[0],
        id="depok-siaga",
        when={"device": "depok", "metric": "level", "above": 205},
        clear=None,
    )

    result = run_backtest(config=config, db=db, before=None, after=depok, start=at(0), end=at(160))

    assert result.before.rule is None
    assert result.before.alerts == []
    assert result.after.alerts == [BacktestAlert("depok", at(80), None, 210.0)]
    assert result.after.devices == ["depok"]
    assert list(result.readings) == ["depok"]


def test_invalid_requests_are_rejected(db: DbEngine) -> None:
    rule = load_config(CONFIG).rules[0]
    config = load_config(CONFIG)

    with pytest.raises(BacktestError) as no_rule:
        run_backtest(config=config, db=db, before=None, after=None, start=at(0), end=at(10))
    assert no_rule.value.message("en") == "nothing to try: give the rule as it is, the changed rule, or both"

    with pytest.raises(BacktestError) as empty:
        run_backtest(config=config, db=db, before=rule, after=None, start=at(10), end=at(10))
    assert empty.value.message("id") == (
        "periode kosong: akhir (2025-01-06T03:10:00+00:00) harus sesudah awal (2025-01-06T03:10:00+00:00)"
    )

    naive = datetime(2025, 1, 6, 10, 0)
    with pytest.raises(BacktestError) as no_zone:
        run_backtest(config=config, db=db, before=rule, after=None, start=naive, end=naive + timedelta(hours=1))
    assert "2025-01-06T10:00:00" in no_zone.value.message("id")


def test_too_many_readings_is_rejected(db: DbEngine, make_pipeline: PipelineFactory) -> None:
    config = stored(make_pipeline)

    with pytest.raises(BacktestError) as raised:
        run_backtest(
            config=config, db=db, before=config.rules[0], after=None, start=at(0), end=at(160), max_readings=10
        )

    assert raised.value.message("en") == "the period holds more than 10 readings: choose a shorter period"
