"""Try a rule change on recorded history: run the rule as it is and as changed over stored readings.

Each variant runs in its own in-memory engine (``rules.engine.build_engine``) on a config that
contains only that rule, fed the stored readings in event-time order. Before each reading the
clock advances to the reading's time, as the hub's pipeline does when it replays a file, so a
``for: 15m`` fires at t0 + 15 min and a ``clear`` ends an alert at the time it holds. Nothing is
written to the store.

How a variant runs:
1. Every instance starts idle at ``start``. A condition that is already true then counts from
   its first reading inside the period.
2. Readings from before ``start`` seed the values that ``and`` conditions and ``change``
   windows read, as far back as the longest ``max_age`` or ``change.over`` of the two variants.
3. Readings that the hub stored as late (older than a reading it had already evaluated) are not
   evaluated, because the live hub did not evaluate them either. They are still in the chart data.
4. An alert still open at ``end`` has no ``resolved_at``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine as DbEngine

from rules.compile import select_devices
from rules.config import Config, Rule
from rules.durable import DurableMatcher
from rules.engine import Firing, NormalReading, Resolution, build_engine
from rules.errors import SimpulError
from rules.i18n import add_messages, translate
from rules.store import ops
from rules.store.models import Reading

logger = logging.getLogger(__name__)

# Readings loaded for one backtest, warm-up included. About 100 bytes each in memory as rows,
# so the default stays under about 100 MB.
MAX_READINGS = 1_000_000

add_messages(
    {
        "backtest.no_rule": {
            "en": "nothing to try: give the rule as it is, the changed rule, or both",
            "id": "tidak ada yang dapat dicoba: berikan aturan yang sekarang, aturan yang diubah, atau keduanya",
        },
        "backtest.naive_time": {
            "en": "the time {value} of the period has no time zone: give times with a zone, e.g. "
            "2025-01-06T10:00+07:00",
            "id": "waktu {value} pada periode tidak memiliki zona waktu: berikan waktu dengan zona, misalnya "
            "2025-01-06T10:00+07:00",
        },
        "backtest.empty_period": {
            "en": "the period is empty: the end ({end}) must be after the start ({start})",
            "id": "periode kosong: akhir ({end}) harus sesudah awal ({start})",
        },
        "backtest.too_many_readings": {
            "en": "the period holds more than {limit} readings: choose a shorter period",
            "id": "periode ini berisi lebih dari {limit} pembacaan: pilih periode yang lebih pendek",
        },
    }
)


class BacktestError(SimpulError, ValueError):
    """Raised when a backtest cannot run: no rule given, a period without time zone or empty, or too
    many readings. ``message(lang)`` renders it for staff in id or en."""

    def __init__(self, code: str, **params: object) -> None:
        super().__init__(translate(code, "en", **params))
        self.code = code
        self.params = params

    def message(self, lang: str | None = None) -> str:
        return translate(self.code, lang, **self.params)


@dataclass(frozen=True)
class BacktestAlert:
    """An alert that a variant would have opened: the device, when, at what value, and when it ended."""

    device_id: str
    opened_at: datetime
    resolved_at: datetime | None
    value: float | str | None


@dataclass(frozen=True)
class VariantResult:
    """The alerts of one variant, oldest first, and the devices its rule watches.

    ``rule`` is None for a variant without the rule (a rule that is added or removed). ``skipped``
    lists devices the engine could not watch, e.g. for a missing threshold attribute.
    """

    rule: Rule | None
    devices: list[str]
    alerts: list[BacktestAlert]
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ChartPoint:
    """One stored reading inside the period, for drawing a chart."""

    metric: str
    ts: datetime
    value: float | str
    late: bool


@dataclass(frozen=True)
class BacktestResult:
    """The two variants over [start, end) and the readings of every device either one watches or reads
    in an ``and`` condition, keyed by device id."""

    start: datetime
    end: datetime
    before: VariantResult
    after: VariantResult
    readings: dict[str, list[ChartPoint]]


_matcher_lock = threading.Lock()
_shared_matcher: DurableMatcher | None = None


def _matcher() -> DurableMatcher:
    """Return the process's matcher for backtests.

    A durable_rules host cannot be freed, so every backtest shares one. Rulesets are named by a
    hash of their conditions, so a rule tried again reuses its ruleset.
    """
    global _shared_matcher
    with _matcher_lock:
        if _shared_matcher is None:
            _shared_matcher = DurableMatcher()
        return _shared_matcher


# DurableMatcher.holds stores each match result on the matcher itself, so engines on the shared
# matcher run one at a time.
_run_lock = threading.Lock()


def run_backtest(
    *,
    config: Config,
    db: DbEngine,
    before: Rule | None,
    after: Rule | None,
    start: datetime,
    end: datetime,
    max_readings: int = MAX_READINGS,
) -> BacktestResult:
    """Run ``before`` and ``after`` over the readings stored for [start, end) and return both variants.

    ``config`` supplies devices, kinds and agencies; its own rules are ignored. Either rule may be
    None, for a rule being added or removed. Raise BacktestError for no rule, a time without zone,
    an empty period, or more than ``max_readings`` readings.
    """
    _check_request(before, after, start, end)
    rules = [rule for rule in (before, after) if rule is not None]
    keys = _watched_keys(config, rules)
    warm_up = max((_warm_up(rule) for rule in rules), default=timedelta(0))

    rows = ops.list_readings(
        engine=db,
        device_ids=sorted({device_id for device_id, _metric in keys}),
        metrics=sorted({metric for _device_id, metric in keys}),
        start=start - warm_up,
        end=end,
        limit=max_readings + 1,
    )
    if len(rows) > max_readings:
        raise BacktestError("backtest.too_many_readings", limit=max_readings)
    rows = [row for row in rows if (row.device_id, row.metric) in keys]

    with _run_lock:
        results = [_run_variant(config, rule, rows, start, end) for rule in (before, after)]
    readings = _chart_points(row for row in rows if row.ts >= start)
    logger.info(
        "backtest of rule %s over %s - %s: %d readings, %d alerts before, %d after",
        rules[-1].id,
        start.isoformat(),
        end.isoformat(),
        len(rows),
        len(results[0].alerts),
        len(results[1].alerts),
    )
    return BacktestResult(start=start, end=end, before=results[0], after=results[1], readings=readings)


def _check_request(before: Rule | None, after: Rule | None, start: datetime, end: datetime) -> None:
    if before is None and after is None:
        raise BacktestError("backtest.no_rule")
    for value in (start, end):
        if value.tzinfo is None:
            raise BacktestError("backtest.naive_time", value=value.isoformat())
    if end <= start:
        raise BacktestError("backtest.empty_period", start=start.isoformat(), end=end.isoformat())


def _watched_keys(config: Config, rules: list[Rule]) -> set[tuple[str, str]]:
    """Return each (device, metric) the rules watch or read in ``and`` conditions.

    An offline rule watches every metric of its devices, since any valid reading keeps a device online.
    """
    kinds = config.kinds
    keys: set[tuple[str, str]] = set()
    for rule in rules:
        for device in select_devices(config, rule):
            if rule.when.metric is not None:
                keys.add((device.id, rule.when.metric))
            elif device.kind in kinds:
                keys.update((device.id, metric) for metric in kinds[device.kind].metrics)
        keys.update((context.device, context.metric) for context in rule.conditions)
    return keys


def _warm_up(rule: Rule) -> timedelta:
    spans = [context.max_age for context in rule.conditions]
    spans += [comparison.change.over for comparison in (rule.when, rule.clear) if comparison and comparison.change]
    return max(spans, default=timedelta(0))


def _run_variant(
    config: Config, rule: Rule | None, rows: list[Reading], start: datetime, end: datetime
) -> VariantResult:
    """Feed the readings to a fresh engine holding only ``rule`` and collect the alerts it opens."""
    if rule is None:
        return VariantResult(rule=None, devices=[], alerts=[])

    engine = build_engine(config.model_copy(update={"rules": [rule]}), _matcher())

    # 1. Instances start idle at `start`; earlier readings only seed the values conditions read.
    engine.start_clock(start)
    seed = [row for row in rows if row.ts < start and not row.late]
    engine.seed(
        latest={(row.device_id, row.metric): (row.ts, _value(row)) for row in seed},
        history=[(row.device_id, row.metric, row.ts, row.value_num) for row in seed if row.value_num is not None],
    )

    # 2. Advance the clock to each reading before evaluating it, as the pipeline does on replay.
    for row in rows:
        if row.ts < start or row.late:
            continue
        engine.advance(row.ts)
        engine.evaluate(NormalReading(row.device_id, row.metric, _value(row), row.ts, row.uid, row.source_id, row.unit))
    # 3. Deadlines up to the end of the period still fire; one at `end` itself is outside it.
    engine.advance(end - timedelta(microseconds=1))

    devices = sorted({device_id for device_id, _metric in engine.by_metric} | set(engine.offline))
    return VariantResult(rule=rule, devices=devices, alerts=_alerts(engine.take_effects()), skipped=engine.skipped)


def _alerts(effects: Iterable[object]) -> list[BacktestAlert]:
    """Pair each firing with the resolution of the same device that follows it."""
    alerts: list[BacktestAlert] = []
    open_index: dict[str, int] = {}
    for effect in effects:
        if isinstance(effect, Firing):
            open_index[effect.device.id] = len(alerts)
            alerts.append(BacktestAlert(effect.device.id, effect.at, None, effect.value))
        elif isinstance(effect, Resolution):
            index = open_index.pop(effect.instance.device_id, None)
            if index is not None:
                alerts[index] = dataclasses.replace(alerts[index], resolved_at=effect.at)
    return alerts


def _value(row: Reading) -> float | str:
    if row.value_text is not None:
        return row.value_text
    assert row.value_num is not None, f"reading {row.id} has neither a number nor a text value"
    return row.value_num


def _chart_points(rows: Iterable[Reading]) -> dict[str, list[ChartPoint]]:
    points: dict[str, list[ChartPoint]] = {}
    for row in rows:
        points.setdefault(row.device_id, []).append(ChartPoint(row.metric, row.ts, _value(row), row.late))
    return points
