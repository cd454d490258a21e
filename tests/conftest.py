"""Shared test helpers: configs from YAML text, a store in a temporary SQLite file, pipelines on
that store, readings from (minutes, value) steps, and queries that read results back.

Tests import the plain helpers with ``from tests.conftest import ...`` and take the store and
pipeline factory as fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sqlalchemy import Engine as DbEngine
from sqlmodel import Session, SQLModel, select

from rules.config import Config
from rules.pipeline import Pipeline
from rules.readings import RawReading, ReadingResult
from rules.store.db import connect
from rules.store.models import ActionRun, Alert, DispatchJob, Reading, RejectedReading, RuleInstance

# Monday 2025-01-06 10:00 WIB: inside a weekday 06:00-18:00 window in Asia/Jakarta.
T0 = datetime(2025, 1, 6, 3, 0, tzinfo=UTC)

SOURCE = "test"

Row = TypeVar("Row", bound=SQLModel)


def load_config(text: str) -> Config:
    """Build a Config from YAML text through the same model the hub loads config.yaml with."""
    return Config.model_validate(yaml.safe_load(text))


def at(minutes: float, start: datetime = T0) -> datetime:
    """Return the aware UTC time ``minutes`` after ``start``."""
    return start + timedelta(minutes=minutes)


def raw_readings(
    device: str,
    metric: str,
    steps: Iterable[tuple[float, object]],
    *,
    start: datetime = T0,
) -> list[RawReading]:
    """Build one RawReading per (minutes after ``start``, value) step, with aware timestamps."""
    return [RawReading(device=device, metric=metric, value=value, ts=at(minutes, start)) for minutes, value in steps]


def feed(
    pipeline: Pipeline,
    device: str,
    metric: str,
    steps: Iterable[tuple[float, object]],
    *,
    start: datetime = T0,
    now: datetime | None = None,
) -> list[ReadingResult]:
    """Process the steps as one batch from the test source and return the per-reading results."""
    return pipeline.process(SOURCE, raw_readings(device, metric, steps, start=start), now=now)


def feed_each(
    pipeline: Pipeline,
    device: str,
    metric: str,
    steps: Iterable[tuple[float, object]],
    *,
    start: datetime = T0,
) -> list[ReadingResult]:
    """Process each step as its own batch, the way a live sender posts one reading at a time."""
    results: list[ReadingResult] = []
    for step in steps:
        results.extend(feed(pipeline, device, metric, [step], start=start))
    return results


def _fetch(db: DbEngine, model: type[Row], order: Any) -> list[Row]:
    with Session(db) as session:
        return list(session.exec(select(model).order_by(order)).all())


def fetch_alerts(db: DbEngine) -> list[Alert]:
    return _fetch(db, Alert, Alert.id)


def fetch_action_runs(db: DbEngine) -> list[ActionRun]:
    return _fetch(db, ActionRun, ActionRun.id)


def fetch_dispatch_jobs(db: DbEngine) -> list[DispatchJob]:
    return _fetch(db, DispatchJob, DispatchJob.id)


def fetch_instances(db: DbEngine) -> list[RuleInstance]:
    return _fetch(db, RuleInstance, RuleInstance.rule_id)


def fetch_readings(db: DbEngine) -> list[Reading]:
    return _fetch(db, Reading, Reading.id)


def fetch_rejected(db: DbEngine) -> list[RejectedReading]:
    return _fetch(db, RejectedReading, RejectedReading.id)


def opened_at(alerts: Sequence[Alert]) -> list[datetime]:
    return [alert.opened_at for alert in alerts]


def resolved_at(alerts: Sequence[Alert]) -> list[datetime | None]:
    return [alert.resolved_at for alert in alerts]


def open_store(tmp_path: Path) -> DbEngine:
    """Open and migrate the SQLite store ``t.db`` in ``tmp_path``. The caller disposes the engine."""
    return connect(f"sqlite:///{tmp_path}/t.db")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DbEngine]:
    engine = open_store(tmp_path)
    yield engine
    engine.dispose()


PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def make_pipeline(db: DbEngine) -> PipelineFactory:
    """Return a factory of pipelines on the test store, called as ``make_pipeline(yaml_text_or_config)``.

    Pipelines run on the event-time clock (replay mode) unless ``event_clock=False`` is given.
    """

    def build(config: str | Config, *, event_clock: bool = True) -> Pipeline:
        loaded = load_config(config) if isinstance(config, str) else config
        return Pipeline(loaded, db, event_clock=event_clock)

    return build
