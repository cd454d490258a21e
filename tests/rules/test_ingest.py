"""The ingestor: readings from futures and from coroutines are committed before their results return."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine as DbEngine
from sqlalchemy import text

from rules.ingest import Ingestor, IngestorStopped
from rules.pipeline import Pipeline
from rules.readings import RawReading
from tests.conftest import T0, fetch_readings, load_config

CONFIG = """
agencies:
  - {id: dinas-sda, name: Dinas SDA}
kinds:
  water_level: {metrics: {level: {unit: cm, min: -100, max: 2000}}}
devices:
  - {id: manggarai, name: Pintu Air Manggarai, agency: dinas-sda, kind: water_level}
  - {id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level}
"""


@pytest.fixture
def ingestor(db: DbEngine) -> Iterator[Ingestor]:
    running = Ingestor(Pipeline(load_config(CONFIG), db, event_clock=False))
    running.start()
    yield running
    running.stop()


def level(device: str, minute: int, value: object = 700) -> RawReading:
    return RawReading(device, "level", value, T0 + timedelta(minutes=minute), id=f"{device}-{minute}")


def test_stored_readings_committed_before_results(ingestor: Ingestor, db: DbEngine) -> None:
    async def send() -> list[str | None]:
        results = await ingestor.store("gateway", [level("manggarai", 0), level("manggarai", 1, "rusak")])
        # The commit is visible to another connection by the time the results arrive.
        return [row.uid for row in fetch_readings(db)] + [result.outcome for result in results]

    assert asyncio.run(send()) == ["manggarai-0", "accepted", "rejected"]


def test_concurrent_coroutines_each_get_their_results(ingestor: Ingestor, db: DbEngine) -> None:
    async def send_all() -> list[list[str | None]]:
        requests = [
            ingestor.store("gateway", [level("depok", minute), level("manggarai", minute)]) for minute in range(50)
        ]
        answers = await asyncio.gather(*requests)
        return [[result.reading_id for result in results] for results in answers]

    answers = asyncio.run(send_all())

    assert answers == [[f"depok-{minute}", f"manggarai-{minute}"] for minute in range(50)]
    assert len(fetch_readings(db)) == 100


def test_futures_and_coroutines_share_writer(ingestor: Ingestor, db: DbEngine) -> None:
    future = ingestor.submit("feed", [level("depok", 0)])

    async def send() -> str:
        [result] = await ingestor.store("gateway", [level("depok", 0)])
        return result.outcome

    outcome = asyncio.run(send())

    assert [result.outcome for result in future.result(10)] == ["accepted"]
    assert outcome == "duplicate"
    assert len(fetch_readings(db)) == 1


def test_failed_batch_raises_in_coroutine(ingestor: Ingestor, db: DbEngine) -> None:
    with db.begin() as connection:
        connection.execute(text("DROP TABLE reading"))

    async def send() -> None:
        await ingestor.store("gateway", [level("manggarai", 0)])

    with pytest.raises(Exception, match="reading"):
        asyncio.run(send())


def test_cancelled_coroutine_readings_still_stored(ingestor: Ingestor, db: DbEngine) -> None:
    async def send_then_cancel() -> None:
        task = asyncio.create_task(ingestor.store("gateway", [level("manggarai", 0)]))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(send_then_cancel())
    ingestor.stop()

    assert [row.uid for row in fetch_readings(db)] == ["manggarai-0"]


def test_store_after_stop_raises(ingestor: Ingestor) -> None:
    ingestor.stop()

    async def send() -> None:
        await ingestor.store("gateway", [level("manggarai", 0)])

    with pytest.raises(IngestorStopped, match="send the readings again later"):
        asyncio.run(send())
