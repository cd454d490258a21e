"""Rule semantics through the real pipeline, engine and SQLite store.

Every test feeds readings as a sender would and reads the alerts, action runs, dispatch jobs and
rule instances back from the store. Times are minutes after ``T0`` except where a test passes
its own start.
Unless a test passes ``event_clock=False``, the pipeline runs on the event-time clock (replay),
so a reading of another device moves the clock without touching the rule under test.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine as DbEngine
from sqlmodel import Session, func, select

from rules.config import Config
from rules.pipeline import Pipeline
from rules.readings import RawReading
from rules.store.models import Alert
from tests.conftest import (
    SOURCE,
    PipelineFactory,
    at,
    feed,
    feed_each,
    fetch_action_runs,
    fetch_alerts,
    fetch_dispatch_jobs,
    fetch_instances,
    fetch_readings,
    fetch_rejected,
    opened_at,
    resolved_at,
)

HEADER = """
agencies:
  - id: dinas-sda
    name: Dinas Sumber Daya Air
    teams: [{id: tim-pompa, name: Tim Pompa}]
  - id: dlh
    name: Dinas Lingkungan Hidup
    teams: [{id: armada-dlh, name: Armada DLH}]
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: -100, max: 2000}
  pump:
    metrics:
      status: {states: [on, off]}
  waste_bin:
    metrics:
      fill: {unit: "%", min: 0, max: 100}
devices:
  - id: manggarai
    name: Pintu Air Manggarai
    agency: dinas-sda
    kind: water_level
    tags: [ciliwung]
    location: {lat: -6.2087, lon: 106.8497}
    attributes: {siaga_2: 850}
  - id: katulampa
    name: Bendung Katulampa
    agency: dinas-sda
    kind: water_level
    tags: [ciliwung]
    attributes: {siaga_2: 150}
  - {id: pluit, name: Waduk Pluit, agency: dinas-sda, kind: water_level}
  - {id: pompa-pluit, name: Pompa Pluit, agency: dinas-sda, kind: pump}
  - {id: bin-1, name: Bin Tanah Abang, agency: dlh, kind: waste_bin}
  - {id: bin-2, name: Bin Senen, agency: dlh, kind: waste_bin}
  - {id: bin-3, name: Bin Gambir, agency: dinas-sda, kind: waste_bin}
webhooks:
  - {id: posko, url: "http://127.0.0.1:9/hook", secret: "${SIMPUL_TEST_WEBHOOK_SECRET}"}
"""

# Fires as soon as Manggarai is above 850 and resolves as soon as it is not.
INSTANT_RULE = """
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    then:
      - alert: {message: "Tinggi {value} cm di {device.name}"}
"""

# Fires after Manggarai has been above 850 for 15 minutes.
DURATION_RULE = """
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    severity: high
    when: {device: manggarai, metric: level, above: 850, for: 15m}
    then:
      - alert: {message: "Tinggi {value} cm di {device.name}"}
      - dispatch: {team: tim-pompa, title: "Nyalakan pompa di {device.name}", due: 2h}
"""

HYSTERESIS_RULE = """
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850, for: 15m}
    clear: {below: 800, for: 30m}
    then:
      - alert: {message: "Tinggi {value} cm"}
"""


def with_rules(rules_yaml: str) -> str:
    return HEADER + rules_yaml


def rule_on_level(comparison: str, *, device: str = "manggarai") -> str:
    """Return a config with one instant rule whose ``when`` compares Manggarai's level."""
    return with_rules(
        f"""
rules:
  - id: r
    name: R
    agency: dinas-sda
    when: {{device: {device}, metric: level, {comparison}}}
"""
    )


def move_clock(pipeline: Pipeline, minutes: float) -> None:
    """Move the event clock with a reading of a device that no rule in these tests watches by name."""
    feed(pipeline, "pluit", "level", [(minutes, 100)])


def instance_states(db: DbEngine) -> list[tuple[str, str, str]]:
    return [(row.rule_id, row.device_id, row.state) for row in fetch_instances(db)]


def count_alerts(db: DbEngine) -> int:
    with Session(db) as session:
        return session.exec(select(func.count()).select_from(Alert)).one()


# --- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comparison", "value", "fires"),
    [
        ("above: 850", 850, False),
        ("above: 850", 850.01, True),
        ("below: 800", 800, False),
        ("below: 800", 799.99, True),
        ("at_least: 850", 850, True),
        ("at_least: 850", 849.99, False),
        ("at_most: 800", 800, True),
        ("at_most: 800", 800.01, False),
        ("between: [800, 850]", 800, True),
        ("between: [800, 850]", 850, True),
        ("between: [800, 850]", 799.99, False),
        ("between: [800, 850]", 850.01, False),
    ],
)
def test_threshold_boundary(
    make_pipeline: PipelineFactory, db: DbEngine, comparison: str, value: float, fires: bool
) -> None:
    pipeline = make_pipeline(rule_on_level(comparison))

    feed(pipeline, "manggarai", "level", [(0, value)])

    assert opened_at(fetch_alerts(db)) == ([at(0)] if fires else [])


@pytest.mark.parametrize(
    ("comparison", "value"),
    [
        ("above: 850", 850.5),
        ("above: 850.5", 851),
        ("at_least: 850.0", 850),
        ("equals: 850", 850.0),
        ("equals: 850.0", 850),
        ("equals: 850", "850"),
        ("between: [800.0, 850]", 850),
    ],
)
def test_int_and_float_compare_as_numbers(
    make_pipeline: PipelineFactory, db: DbEngine, comparison: str, value: object
) -> None:
    pipeline = make_pipeline(rule_on_level(comparison))

    feed(pipeline, "manggarai", "level", [(0, value)])

    assert opened_at(fetch_alerts(db)) == [at(0)]


PUMP_OFF_RULE = with_rules(
    """
rules:
  - id: pompa-mati
    name: Pompa mati
    agency: dinas-sda
    when: {device: pompa-pluit, metric: status, equals: off}
    then:
      - alert: {message: "{device.name} {value}"}
"""
)


@pytest.mark.parametrize("off_value", ["off", "OFF", False])
def test_state_equals_bare_yaml_off(make_pipeline: PipelineFactory, db: DbEngine, off_value: object) -> None:
    pipeline = make_pipeline(PUMP_OFF_RULE)

    feed(pipeline, "pompa-pluit", "status", [(0, "on"), (5, off_value)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(5)]
    assert [alert.value for alert in alerts] == ["off"]
    assert [alert.message for alert in alerts] == ["Pompa Pluit off"]


def test_state_equals_resolves_on_other_state(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(PUMP_OFF_RULE)

    feed(pipeline, "pompa-pluit", "status", [(0, "off"), (5, "on")])

    assert resolved_at(fetch_alerts(db)) == [at(5)]


def test_state_not_equals_bare_yaml_on(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    config = with_rules(
        """
rules:
  - id: pompa-tidak-nyala
    name: Pompa tidak menyala
    agency: dinas-sda
    when: {device: pompa-pluit, metric: status, not_equals: on}
"""
    )
    pipeline = make_pipeline(config)

    feed(pipeline, "pompa-pluit", "status", [(0, "on"), (5, "off"), (10, "on")])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(5)]
    assert resolved_at(alerts) == [at(10)]


# --- firing records ----------------------------------------------------------------------------


def test_firing_records_alert_runs_and_job(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851.5), (20, 900)])

    alerts = fetch_alerts(db)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.opened_at == at(15)
    assert alert.status == "open"
    assert alert.resolved_at is None
    assert alert.value == "851.5"
    assert alert.message == "Tinggi 851.5 cm di Pintu Air Manggarai"
    assert alert.severity == "high"
    assert (alert.rule_id, alert.device_id, alert.agency_id) == ("siaga", "manggarai", "dinas-sda")

    runs = fetch_action_runs(db)
    assert [(run.type, run.status, run.alert_id) for run in runs] == [
        ("alert", "succeeded", alert.id),
        ("dispatch", "succeeded", alert.id),
    ]

    jobs = fetch_dispatch_jobs(db)
    assert [(job.team_id, job.agency_id, job.due_at, job.status) for job in jobs] == [
        ("tim-pompa", "dinas-sda", at(15 + 120), "new")
    ]
    assert jobs[0].title == "Nyalakan pompa di Pintu Air Manggarai"
    assert (jobs[0].lat, jobs[0].lon) == (-6.2087, 106.8497)
    assert runs[1].target == f"dispatch_job:{jobs[0].id}"


# --- durations on the event clock --------------------------------------------------------------


def test_for_waits_until_deadline(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851)])
    move_clock(pipeline, 14.99)

    assert fetch_alerts(db) == []
    assert instance_states(db) == [("siaga", "manggarai", "pending")]


def test_for_fires_at_deadline_in_replay(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851)])
    move_clock(pipeline, 180)

    assert opened_at(fetch_alerts(db)) == [at(15)]
    assert [job.due_at for job in fetch_dispatch_jobs(db)] == [at(15 + 120)]


def test_for_fires_at_deadline_in_live_mode(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE), event_clock=False)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)

    feed(pipeline, "manggarai", "level", [(0, 851)], start=start, now=start)
    pipeline.tick(start + timedelta(minutes=15) - timedelta(seconds=1))
    before_deadline = fetch_alerts(db)
    pipeline.tick(start + timedelta(minutes=15))

    assert before_deadline == []
    assert opened_at(fetch_alerts(db)) == [start + timedelta(minutes=15)]


def test_deadline_runs_before_reading_at_same_time(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # The deadline at 15 fires first, then the false reading at 15 resolves the new alert.
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851), (15, 840)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(15)]
    assert resolved_at(alerts) == [at(15)]


def test_false_reading_cancels_pending(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851), (10, 850)])
    move_clock(pipeline, 180)

    assert fetch_alerts(db) == []
    assert instance_states(db) == [("siaga", "manggarai", "idle")]


def test_true_again_after_cancel_starts_new_duration(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851), (10, 840), (20, 851)])
    move_clock(pipeline, 180)

    assert opened_at(fetch_alerts(db)) == [at(35)]


def test_repeats_do_not_restart_duration(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 851), (5, 851), (10, 900), (14, 860)])
    move_clock(pipeline, 180)

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(15)]
    assert [alert.value for alert in alerts] == ["860"]


def test_true_readings_while_firing_do_not_fire_again(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 900), (15, 900), (20, 950), (30, 900), (45, 1200)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(15)]
    assert resolved_at(alerts) == [None]
    assert [run.type for run in fetch_action_runs(db)] == ["alert", "dispatch"]
    assert len(fetch_dispatch_jobs(db)) == 1
    assert pipeline.tally.firings["siaga"] == 1


# --- clearing and hysteresis -------------------------------------------------------------------


def test_without_clear_rule_clears_when_trigger_false(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    feed(pipeline, "manggarai", "level", [(0, 900), (5, 850)])

    alerts = fetch_alerts(db)
    assert resolved_at(alerts) == [at(5)]
    assert [alert.status for alert in alerts] == ["resolved"]
    assert [alert.resolve_note for alert in alerts] == ["condition cleared"]


def test_clear_for_without_comparison_uses_trigger(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    config = with_rules(
        """
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    clear: {for: 30m}
"""
    )
    pipeline = make_pipeline(config)

    feed(pipeline, "manggarai", "level", [(0, 900), (10, 840), (20, 860), (25, 840)])
    move_clock(pipeline, 54)
    still_open = resolved_at(fetch_alerts(db))
    move_clock(pipeline, 180)

    assert still_open == [None]
    assert resolved_at(fetch_alerts(db)) == [at(55)]


def test_hysteresis_keeps_firing_between_levels(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(HYSTERESIS_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 860), (15, 860), (30, 849), (45, 800), (60, 820)])
    move_clock(pipeline, 240)

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(15)]
    assert resolved_at(alerts) == [None]
    assert instance_states(db) == [("siaga", "manggarai", "firing")]


def test_hysteresis_clears_after_clear_for(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(HYSTERESIS_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 860), (15, 860), (45, 799), (60, 700), (74, 799)])
    clearing = instance_states(db)
    move_clock(pipeline, 240)

    alerts = fetch_alerts(db)
    assert clearing == [("siaga", "manggarai", "clearing")]
    assert opened_at(alerts) == [at(15)]
    assert resolved_at(alerts) == [at(75)]


def test_relapse_during_clearing_keeps_one_alert(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(HYSTERESIS_RULE))

    # Clearing starts at 45, relapses at 60 (810 is not below 800), starts again at 75.
    feed_each(pipeline, "manggarai", "level", [(0, 860), (15, 860), (45, 790), (60, 810), (75, 790), (100, 780)])
    before_second_clear_for = resolved_at(fetch_alerts(db))
    move_clock(pipeline, 240)

    alerts = fetch_alerts(db)
    assert before_second_clear_for == [None]
    assert opened_at(alerts) == [at(15)]
    assert resolved_at(alerts) == [at(105)]
    assert [run.type for run in fetch_action_runs(db)] == ["alert"]


def test_relapse_above_trigger_keeps_one_alert(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(HYSTERESIS_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 860), (15, 860), (45, 790), (60, 900), (65, 790)])
    move_clock(pipeline, 240)

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(15)]
    assert resolved_at(alerts) == [at(95)]


# --- invalid values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("unavailable", "unavailable"),
        ("unknown", "unavailable"),
        ("NaN", "unavailable"),
        (math.nan, "not_a_number"),
        (math.inf, "not_a_number"),
        (None, "missing_value"),
        ("", "missing_value"),
        ("   ", "missing_value"),
        ("tinggi", "not_a_number"),
        (True, "not_a_number"),
        (2000.5, "out_of_range"),
        (-100.5, "out_of_range"),
    ],
)
def test_invalid_value_rejected_with_reason(
    make_pipeline: PipelineFactory, db: DbEngine, value: object, reason: str
) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    results = feed(pipeline, "manggarai", "level", [(0, value)])

    assert [(result.outcome, result.reason) for result in results] == [("rejected", reason)]
    assert [(row.reason, row.device_id, row.metric, row.source_id) for row in fetch_rejected(db)] == [
        (reason, "manggarai", "level", SOURCE)
    ]
    assert [row.raw_ts for row in fetch_rejected(db)] == [at(0).isoformat()]
    assert fetch_readings(db) == []
    assert pipeline.tally.rejected == {reason: 1}


def test_rejected_reading_keeps_raw_value(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    feed(pipeline, "manggarai", "level", [(0, "tinggi"), (1, None)])

    assert [row.raw_value for row in fetch_rejected(db)] == ["tinggi", None]


def test_invalid_state_rejected_with_reason(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(PUMP_OFF_RULE)

    results = feed(pipeline, "pompa-pluit", "status", [(0, "rusak"), (1, "unavailable"), (2, None)])

    assert [result.reason for result in results] == ["unknown_state", "unavailable", "missing_value"]
    assert fetch_alerts(db) == []


INVALID_LEVELS = ["unavailable", "unknown", "NaN", math.nan, None, "", "tinggi", 5000]


def test_invalid_values_do_not_satisfy(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    feed(pipeline, "manggarai", "level", [(minute, value) for minute, value in enumerate(INVALID_LEVELS)])

    assert fetch_alerts(db) == []
    assert instance_states(db) == []


def test_invalid_values_do_not_cancel_pending(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    steps = [(0, 851)] + [(1 + minute, value) for minute, value in enumerate(INVALID_LEVELS)]
    feed_each(pipeline, "manggarai", "level", steps)
    move_clock(pipeline, 180)

    assert opened_at(fetch_alerts(db)) == [at(15)]


def test_invalid_values_do_not_clear(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    steps = [(0, 900)] + [(1 + minute, value) for minute, value in enumerate(INVALID_LEVELS)]
    feed_each(pipeline, "manggarai", "level", steps)
    move_clock(pipeline, 180)

    alerts = fetch_alerts(db)
    assert resolved_at(alerts) == [None]
    assert [alert.status for alert in alerts] == ["open"]


def test_invalid_value_does_not_rearm_edge(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 900), (5, "unavailable"), (10, None), (15, 900)])

    assert opened_at(fetch_alerts(db)) == [at(0)]
    assert pipeline.tally.firings["siaga"] == 1


# --- duplicates and order ----------------------------------------------------------------------


def reading(minutes: float, value: object, *, reading_id: str | None = None) -> RawReading:
    return RawReading(device="manggarai", metric="level", value=value, ts=at(minutes), id=reading_id)


def test_duplicate_id_accepted_once(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    first = pipeline.process(SOURCE, [reading(0, 900, reading_id="awlr-1")])
    # Same id with another time and value: if it were evaluated, 700 would resolve the alert.
    second = pipeline.process(SOURCE, [reading(10, 700, reading_id="awlr-1")])

    assert [(result.outcome, result.reading_id) for result in first + second] == [
        ("accepted", "awlr-1"),
        ("duplicate", "awlr-1"),
    ]
    assert [(row.uid, row.value_num) for row in fetch_readings(db)] == [("awlr-1", 900.0)]
    assert resolved_at(fetch_alerts(db)) == [None]


def test_duplicate_device_metric_ts_accepted_once(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    first = pipeline.process(SOURCE, [reading(0, 900, reading_id="awlr-1")])
    second = pipeline.process(SOURCE, [reading(0, 700, reading_id="awlr-2")])
    third = pipeline.process(SOURCE, [reading(0, 700)])

    assert [result.outcome for result in first + second + third] == ["accepted", "duplicate", "duplicate"]
    assert [(row.uid, row.value_num) for row in fetch_readings(db)] == [("awlr-1", 900.0)]
    assert resolved_at(fetch_alerts(db)) == [None]


def test_duplicate_resent_after_clear_does_not_fire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    pipeline.process(SOURCE, [reading(0, 900, reading_id="awlr-1"), reading(5, 700, reading_id="awlr-2")])
    resent = pipeline.process(SOURCE, [reading(0, 900, reading_id="awlr-1")])

    assert [result.outcome for result in resent] == ["duplicate"]
    assert opened_at(fetch_alerts(db)) == [at(0)]


def test_duplicates_inside_one_batch_evaluated_once(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    results = pipeline.process(
        SOURCE,
        [
            reading(0, 900, reading_id="awlr-1"),
            reading(0, 900, reading_id="awlr-1"),
            reading(0, 700, reading_id="awlr-9"),
            reading(5, 900),
            reading(5, 900),
        ],
    )

    assert [result.outcome for result in results] == ["accepted", "duplicate", "duplicate", "accepted", "duplicate"]
    assert len(fetch_readings(db)) == 2
    assert pipeline.tally.readings["duplicate"] == 3
    assert opened_at(fetch_alerts(db)) == [at(0)]
    assert resolved_at(fetch_alerts(db)) == [None]


def test_late_reading_stored_and_marked(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851), (10, 860)])
    late = feed(pipeline, "manggarai", "level", [(5, 700)])

    assert [(result.outcome, result.late) for result in late] == [("accepted", True)]
    assert [(row.ts, row.value_num, row.late) for row in fetch_readings(db)] == [
        (at(0), 851.0, False),
        (at(10), 860.0, False),
        (at(5), 700.0, True),
    ]
    assert pipeline.tally.readings["late"] == 1


def test_late_reading_does_not_cancel_pending(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(DURATION_RULE))

    feed(pipeline, "manggarai", "level", [(0, 851), (10, 860)])
    feed(pipeline, "manggarai", "level", [(5, 700)])
    move_clock(pipeline, 180)

    assert opened_at(fetch_alerts(db)) == [at(15)]


def test_late_reading_does_not_resolve_or_refire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(INSTANT_RULE))

    feed(pipeline, "manggarai", "level", [(0, 700), (10, 900)])
    feed(pipeline, "manggarai", "level", [(5, 700)])
    feed(pipeline, "manggarai", "level", [(20, 700)])
    feed(pipeline, "manggarai", "level", [(15, 900)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(10)]
    assert resolved_at(alerts) == [at(20)]


# --- cooldown ----------------------------------------------------------------------------------

COOLDOWN_RULE = """
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    cooldown: 1h
    then:
      - alert: {message: "Tinggi {value} cm"}
      - dispatch: {team: tim-pompa, title: "Cek {device.name}", due: 30m}
"""


def test_cooldown_holds_firing_until_it_ends(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(COOLDOWN_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 900), (10, 700), (20, 910)])
    during_cooldown = opened_at(fetch_alerts(db))
    move_clock(pipeline, 180)

    alerts = fetch_alerts(db)
    assert during_cooldown == [at(0)]
    assert opened_at(alerts) == [at(0), at(60)]
    assert resolved_at(alerts) == [at(10), None]
    assert [alert.value for alert in alerts] == ["900", "910"]
    assert [job.due_at for job in fetch_dispatch_jobs(db)] == [at(30), at(90)]


def test_cooldown_drops_firing_when_condition_ends(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(COOLDOWN_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 900), (10, 700), (20, 910), (30, 700)])
    move_clock(pipeline, 180)

    assert opened_at(fetch_alerts(db)) == [at(0)]
    assert len(fetch_dispatch_jobs(db)) == 1


def test_firing_after_cooldown_is_immediate(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(COOLDOWN_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 900), (10, 700), (60, 900)])

    assert opened_at(fetch_alerts(db)) == [at(0), at(60)]


def test_cooldown_waits_for_duration_too(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    config = with_rules(
        """
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850, for: 15m}
    cooldown: 30m
"""
    )
    pipeline = make_pipeline(config)

    # Fires at 15 and is true again at 40, so the duration ends at 55, after the cooldown ends (45).
    feed_each(pipeline, "manggarai", "level", [(0, 900), (20, 700), (40, 900)])
    move_clock(pipeline, 180)

    assert opened_at(fetch_alerts(db)) == [at(15), at(55)]


# --- flapping ----------------------------------------------------------------------------------

FLAPPING_RULE = """
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    flapping: {fires: 3, window: 1h}
    then:
      - alert: {message: "Tinggi {value} cm"}
      - webhook: {target: posko}
      - dispatch: {team: tim-pompa, title: "Cek {device.name}"}
      - log: {message: "siaga {device.id}"}
"""

# Fires at 0, 10, 20 and 30. The third and fourth firings each follow two others within an hour.
FLAPPING_STEPS = [(0, 900), (5, 700), (10, 900), (15, 700), (20, 900), (25, 700), (30, 900)]


def test_flapping_marks_alerts(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(FLAPPING_RULE))

    feed_each(pipeline, "manggarai", "level", FLAPPING_STEPS)

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(0), at(10), at(20), at(30)]
    assert [alert.flapping for alert in alerts] == [False, False, True, True]
    assert [row.flapping for row in fetch_instances(db)] == [True]


def test_flapping_holds_webhook_runs(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(FLAPPING_RULE))

    feed_each(pipeline, "manggarai", "level", FLAPPING_STEPS)

    webhooks = [run for run in fetch_action_runs(db) if run.type == "webhook"]
    assert [run.status for run in webhooks] == ["pending", "pending", "held", "held"]
    assert [run.target for run in webhooks] == ["posko"] * 4


def test_flapping_does_not_hold_alert_runs(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(FLAPPING_RULE))

    feed_each(pipeline, "manggarai", "level", FLAPPING_STEPS)

    alert_runs = [run for run in fetch_action_runs(db) if run.type == "alert"]
    assert [run.status for run in alert_runs] == ["succeeded"] * 4


def test_flapping_holds_dispatch_runs(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(FLAPPING_RULE))

    feed_each(pipeline, "manggarai", "level", FLAPPING_STEPS)

    dispatches = [run for run in fetch_action_runs(db) if run.type == "dispatch"]
    assert [run.status for run in dispatches] == ["succeeded", "succeeded", "held", "held"]
    assert [job.alert_id for job in fetch_dispatch_jobs(db)] == [1, 2]


def test_flapping_holds_log_runs(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(FLAPPING_RULE))

    feed_each(pipeline, "manggarai", "level", FLAPPING_STEPS)

    logs = [run for run in fetch_action_runs(db) if run.type == "log"]
    assert [run.status for run in logs] == ["succeeded", "succeeded", "held", "held"]


def test_stable_instance_releases_held_runs(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(FLAPPING_RULE))

    # The last firing (30) stays open; at 95 the instance has not fired for a whole hour.
    feed_each(pipeline, "manggarai", "level", [*FLAPPING_STEPS, (95, 910)])

    runs = [(run.alert_id, run.type, run.status) for run in fetch_action_runs(db) if run.alert_id in (3, 4)]
    assert runs == [
        (3, "alert", "succeeded"),
        (3, "webhook", "skipped"),
        (3, "dispatch", "skipped"),
        (3, "log", "skipped"),
        (4, "alert", "succeeded"),
        (4, "webhook", "pending"),
        (4, "dispatch", "succeeded"),
        (4, "log", "succeeded"),
    ]
    released = next(run for run in fetch_action_runs(db) if run.alert_id == 4 and run.type == "webhook")
    assert released.payload["alert_id"] == 4
    assert released.payload["value"] == 900.0
    jobs = fetch_dispatch_jobs(db)
    assert [job.alert_id for job in jobs] == [1, 2, 4]
    assert jobs[-1].due_at == at(90) + timedelta(hours=4)
    assert [row.flapping for row in fetch_instances(db)] == [False]


def test_flapping_ends_when_window_passes(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(FLAPPING_RULE))

    feed_each(pipeline, "manggarai", "level", [*FLAPPING_STEPS, (35, 700), (100, 900)])

    alerts = fetch_alerts(db)
    webhooks = [run for run in fetch_action_runs(db) if run.type == "webhook"]
    assert [alert.flapping for alert in alerts] == [False, False, True, True, False]
    assert [run.status for run in webhooks][-1] == "pending"
    assert [row.flapping for row in fetch_instances(db)] == [False]


# --- offline -----------------------------------------------------------------------------------

OFFLINE_RULE = """
rules:
  - id: manggarai-offline
    name: Manggarai offline
    agency: dinas-sda
    severity: low
    when: {device: manggarai, offline: 30m}
    then:
      - alert: {message: "{device.name} tidak mengirim data"}
"""


def test_offline_after_timeout_without_valid_readings(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(OFFLINE_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 700), (10, "unavailable"), (20, None), (25, "tinggi"), (29, 5000)])
    move_clock(pipeline, 29.99)
    before_timeout = fetch_alerts(db)
    move_clock(pipeline, 45)

    alerts = fetch_alerts(db)
    assert before_timeout == []
    assert opened_at(alerts) == [at(30)]
    assert [alert.value for alert in alerts] == [None]
    assert [alert.message for alert in alerts] == ["Pintu Air Manggarai tidak mengirim data"]
    assert [alert.severity for alert in alerts] == ["low"]


def test_valid_readings_keep_device_online(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(OFFLINE_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 700), (25, 701), (50, 702), (75, 703)])
    move_clock(pipeline, 104)

    assert fetch_alerts(db) == []


def test_offline_clears_on_next_valid_reading(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(OFFLINE_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 700)])
    move_clock(pipeline, 45)
    feed_each(pipeline, "manggarai", "level", [(50, "unavailable"), (55, None)])
    after_invalid = resolved_at(fetch_alerts(db))
    feed_each(pipeline, "manggarai", "level", [(60, 710)])

    alerts = fetch_alerts(db)
    assert after_invalid == [None]
    assert opened_at(alerts) == [at(30)]
    assert resolved_at(alerts) == [at(60)]


def test_offline_fires_again_after_recovery(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(OFFLINE_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 700)])
    move_clock(pipeline, 45)
    feed_each(pipeline, "manggarai", "level", [(60, 710)])
    move_clock(pipeline, 120)

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(30), at(90)]
    assert resolved_at(alerts) == [at(60), None]


def test_offline_in_live_mode_with_tick(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(OFFLINE_RULE), event_clock=False)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)

    feed(pipeline, "manggarai", "level", [(0, 700)], start=start, now=start)
    pipeline.tick(start + timedelta(minutes=29))
    before_timeout = fetch_alerts(db)
    pipeline.tick(start + timedelta(minutes=31))

    assert before_timeout == []
    assert opened_at(fetch_alerts(db)) == [start + timedelta(minutes=30)]


def test_silent_device_goes_offline_in_live_mode(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    before_start = datetime.now(UTC)
    pipeline = make_pipeline(with_rules(OFFLINE_RULE), event_clock=False)
    after_start = datetime.now(UTC)

    pipeline.tick(after_start + timedelta(minutes=31))

    alerts = fetch_alerts(db)
    assert len(alerts) == 1
    assert alerts[0].opened_at >= before_start + timedelta(minutes=30)
    assert alerts[0].opened_at <= after_start + timedelta(minutes=30)


def test_silent_device_goes_offline_in_replay(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # Manggarai sends nothing at all while the replay's clock runs from 0 to 45.
    pipeline = make_pipeline(with_rules(OFFLINE_RULE))

    move_clock(pipeline, 0)
    move_clock(pipeline, 45)

    assert opened_at(fetch_alerts(db)) == [at(30)]


# --- change over a window ----------------------------------------------------------------------

RISING_RULE = """
rules:
  - id: manggarai-naik-cepat
    name: Manggarai naik cepat
    agency: dinas-sda
    when: {device: manggarai, metric: level, change: {over: 1h, above: 20}}
    then:
      - alert: {message: "Manggarai naik cepat, kini {value} cm"}
"""


def test_change_over_window_fires_on_rise(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(RISING_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 700), (15, 705), (30, 712), (45, 718), (60, 721)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(60)]
    assert [alert.message for alert in alerts] == ["Manggarai naik cepat, kini 721 cm"]


def test_change_equal_to_threshold_does_not_fire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(RISING_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 700), (30, 712), (60, 720)])

    assert fetch_alerts(db) == []


def test_change_counts_only_readings_inside_window(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # 719 at 75 is 29 cm above the reading at 0, but only 19 cm above the oldest one inside the hour.
    pipeline = make_pipeline(with_rules(RISING_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 690), (15, 700), (45, 710), (75, 719)])

    assert fetch_alerts(db) == []


def test_change_falling_level_does_not_fire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(RISING_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 750), (30, 740), (60, 700)])

    assert fetch_alerts(db) == []


def test_change_clears_when_rise_slows(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(RISING_RULE))

    feed_each(pipeline, "manggarai", "level", [(0, 700), (30, 715), (60, 725), (90, 730)])

    alerts = fetch_alerts(db)
    assert opened_at(alerts) == [at(60)]
    assert resolved_at(alerts) == [at(90)]


# --- selectors and per-device thresholds -------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "metric", "devices"),
    [
        ("kind: waste_bin", "fill", ["bin-1", "bin-2", "bin-3"]),
        ("tag: ciliwung", "level", ["manggarai", "katulampa"]),
        ("agency: dlh", "fill", ["bin-1", "bin-2"]),
        ("agency: dinas-sda", "level", ["manggarai", "katulampa", "pluit"]),
    ],
)
def test_selector_creates_one_instance_per_device(
    make_pipeline: PipelineFactory, db: DbEngine, selector: str, metric: str, devices: list[str]
) -> None:
    config = with_rules(
        f"""
rules:
  - id: r
    name: R
    agency: dinas-sda
    when: {{{selector}, metric: {metric}, at_least: 90}}
"""
    )
    pipeline = make_pipeline(config)

    for device in ("manggarai", "katulampa", "pluit"):
        feed(pipeline, device, "level", [(0, 95)])
    for device in ("bin-1", "bin-2", "bin-3"):
        feed(pipeline, device, "fill", [(0, 95)])

    assert sorted(alert.device_id for alert in fetch_alerts(db)) == sorted(devices)
    assert sorted(row.device_id for row in fetch_instances(db)) == sorted(devices)


def test_selector_instances_run_independently(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    config = with_rules(
        """
rules:
  - id: bin-penuh
    name: Bin penuh
    agency: dlh
    when: {kind: waste_bin, metric: fill, above: 90, for: 10m}
    then:
      - dispatch: {team: armada-dlh, title: "Angkut sampah di {device.name}", due: 4h}
"""
    )
    pipeline = make_pipeline(config)

    feed(pipeline, "bin-1", "fill", [(0, 95)])
    feed(pipeline, "bin-2", "fill", [(5, 95)])
    feed(pipeline, "bin-1", "fill", [(8, 50)])
    move_clock(pipeline, 60)

    assert [(job.device_id, job.team_id, job.due_at) for job in fetch_dispatch_jobs(db)] == [
        ("bin-2", "armada-dlh", at(15 + 240))
    ]
    assert [job.title for job in fetch_dispatch_jobs(db)] == ["Angkut sampah di Bin Senen"]


ATTRIBUTE_RULE = """
rules:
  - id: siaga-2
    name: Siaga 2
    agency: dinas-sda
    when: {kind: water_level, metric: level, at_least: {attribute: siaga_2}}
    then:
      - alert: {message: "Siaga 2 di {device.name}: {value} cm (ambang {device.attributes.siaga_2})"}
  - id: sangat-tinggi
    name: Sangat tinggi
    agency: dinas-sda
    when: {kind: water_level, metric: level, above: 1500}
"""


def test_attribute_thresholds_differ_per_device(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(ATTRIBUTE_RULE))

    feed(pipeline, "katulampa", "level", [(0, 150)])
    feed(pipeline, "manggarai", "level", [(0, 200), (10, 850)])

    alerts = fetch_alerts(db)
    assert [(alert.device_id, alert.opened_at) for alert in alerts] == [("katulampa", at(0)), ("manggarai", at(10))]
    assert [alert.message for alert in alerts] == [
        "Siaga 2 di Bendung Katulampa: 150 cm (ambang 150)",
        "Siaga 2 di Pintu Air Manggarai: 850 cm (ambang 850)",
    ]


def test_missing_attribute_skips_only_that_device(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # Waduk Pluit has no siaga_2 attribute.
    pipeline = make_pipeline(with_rules(ATTRIBUTE_RULE))

    feed(pipeline, "pluit", "level", [(0, 1600)])
    feed(pipeline, "katulampa", "level", [(0, 200)])

    assert [(alert.rule_id, alert.device_id) for alert in fetch_alerts(db)] == [
        ("sangat-tinggi", "pluit"),
        ("siaga-2", "katulampa"),
    ]
    assert len(pipeline.engine.skipped) == 1
    assert "pluit" in pipeline.engine.skipped[0]
    assert "siaga_2" in pipeline.engine.skipped[0]


# --- conditions on other devices ---------------------------------------------------------------

UPSTREAM_RULE = """
rules:
  - id: banjir-kiriman
    name: Banjir kiriman
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    and:
      - {device: katulampa, metric: level, at_least: 150, max_age: 1h}
    then:
      - alert: {message: "Manggarai {value} cm, Katulampa tinggi"}
"""


def test_and_condition_fresh_upstream_fires(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(UPSTREAM_RULE))

    feed(pipeline, "katulampa", "level", [(0, 200)])
    feed(pipeline, "manggarai", "level", [(60, 900)])

    assert opened_at(fetch_alerts(db)) == [at(60)]


def test_and_condition_stale_upstream_does_not_fire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(UPSTREAM_RULE))

    feed(pipeline, "katulampa", "level", [(0, 200)])
    feed(pipeline, "manggarai", "level", [(61, 900)])

    assert fetch_alerts(db) == []


def test_and_condition_false_upstream_does_not_fire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(UPSTREAM_RULE))

    feed(pipeline, "katulampa", "level", [(0, 149)])
    feed(pipeline, "manggarai", "level", [(10, 900)])

    assert fetch_alerts(db) == []


def test_and_condition_missing_upstream_does_not_fire(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(UPSTREAM_RULE))

    feed(pipeline, "manggarai", "level", [(10, 900)])

    assert fetch_alerts(db) == []


def test_and_condition_read_on_watched_reading_only(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    pipeline = make_pipeline(with_rules(UPSTREAM_RULE))

    feed(pipeline, "manggarai", "level", [(0, 900)])
    feed(pipeline, "katulampa", "level", [(10, 200)])
    after_upstream_only = fetch_alerts(db)
    feed(pipeline, "manggarai", "level", [(20, 900)])

    assert after_upstream_only == []
    assert opened_at(fetch_alerts(db)) == [at(20)]


# --- one rule, many devices --------------------------------------------------------------------


def test_selector_rule_over_20000_devices(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    # durable_rules limits the live sessions of a ruleset, so one rule over 20,000 devices fails if
    # the engine opens a session per device. Firings are counted, not timed.
    count = 20_000
    config = Config.model_validate(
        {
            "agencies": [{"id": "dlh", "name": "DLH"}],
            "kinds": {"waste_bin": {"metrics": {"fill": {"unit": "%", "min": 0, "max": 100}}}},
            "devices": [
                {"id": f"bin-{index}", "name": f"Bin {index}", "agency": "dlh", "kind": "waste_bin"}
                for index in range(count)
            ],
            "rules": [
                {
                    "id": "bin-penuh",
                    "name": "Bin penuh",
                    "agency": "dlh",
                    "when": {"kind": "waste_bin", "metric": "fill", "above": 90},
                }
            ],
        }
    )
    pipeline = make_pipeline(config)

    readings = [RawReading(device=f"bin-{index}", metric="fill", value=95, ts=at(0)) for index in range(count)]
    pipeline.process(SOURCE, readings)

    assert pipeline.tally.firings["bin-penuh"] == count
    assert count_alerts(db) == count
