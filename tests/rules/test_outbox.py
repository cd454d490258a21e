"""The outbox worker on runs written by the real pipeline, sent by the real webhook executor to
a receiver on 127.0.0.1. Time is driven by passing ``now`` to ``run_once``."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from integrations.webhook_out import WebhookExecutor, verify_signature
from rules.config import Config
from rules.outbox import DEFAULT_LEASE, Executor, OutboxWorker, backoff_delay
from rules.pipeline import Pipeline
from rules.readings import RawReading
from rules.store import ops
from rules.store.db import connect
from rules.store.models import ActionRun, utc_now
from tests.conftest import at, fetch_action_runs, load_config, open_store
from tests.integrations.test_webhook_out import Receiver, ScriptedResponse, unused_port

POSTGRES_URL = os.environ.get("SIMPUL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "s3cret-for-outbox-tests"
SECRET_ENV = "SIMPUL_TEST_WEBHOOK_SECRET"


def make_config(url: str, *, max_attempts: int = 3, timeout: str = "2s") -> Config:
    return load_config(
        f"""
agencies:
  - id: bpbd-dki
    name: BPBD DKI Jakarta
kinds:
  gauge:
    metrics:
      level: {{unit: cm}}
devices:
  - id: x
    name: Pos X
    agency: bpbd-dki
    kind: gauge
webhooks:
  - id: hook
    url: "{url}"
    secret: "${{{SECRET_ENV}}}"
    timeout: {timeout}
    max_attempts: {max_attempts}
rules:
  - id: siaga-x
    name: Siaga X
    agency: bpbd-dki
    when: {{device: x, metric: level, above: 850}}
    then:
      - webhook: {{target: hook}}
"""
    )


def fire(pipeline: Pipeline, minute: float = 0) -> None:
    """Make the rule fire once: a level below the threshold, then one above it."""
    pipeline.process("src", [RawReading("x", "level", 700, at(minute))])
    pipeline.process("src", [RawReading("x", "level", 900, at(minute + 1))])


def only_run(db: Engine) -> ActionRun:
    (run,) = fetch_action_runs(db)
    return run


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class BrokenExecutor:
    """An executor with a bug: every attempt raises an exception that is not an action error."""

    def run(self, run: ActionRun) -> None:
        raise RuntimeError("executor bug")

    def max_attempts(self, run: ActionRun) -> int:
        return 5


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def postgres_db() -> Iterator[Engine]:
    """A store in a new database on the PostgreSQL server at SIMPUL_TEST_POSTGRES_URL, dropped afterwards."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except Exception:
        pytest.skip(f"no PostgreSQL server reachable at {POSTGRES_URL}; set SIMPUL_TEST_POSTGRES_URL to run this")

    name = f"simpul_outbox_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = connect(POSTGRES_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


WorkerFactory = Callable[..., OutboxWorker]


@pytest.fixture
def make_worker(db: Engine) -> Iterator[WorkerFactory]:
    """Return a factory of workers with a webhook executor for the config's targets.

    The workers are stopped and their executors closed at the end of the test.
    """
    workers: list[OutboxWorker] = []
    executors: list[WebhookExecutor] = []

    def build(
        config: Config, *, store: Engine | None = None, executor: Executor | None = None, **options: object
    ) -> OutboxWorker:
        if executor is None:
            webhook = WebhookExecutor({target.id: target for target in config.webhooks})
            executors.append(webhook)
            executor = webhook
        worker = OutboxWorker(store if store is not None else db, {"webhook": executor}, **options)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield build
    for worker in workers:
        worker.stop()
    for webhook in executors:
        webhook.close()


def run_until_finished(worker: OutboxWorker, db: Engine, max_rounds: int = 10) -> list[ActionRun]:
    """Call run_once at each retry time until the only run is finished; return its state after each round."""
    now = utc_now()
    states: list[ActionRun] = []
    for _ in range(max_rounds):
        worker.run_once(now)
        run = only_run(db)
        states.append(run)
        if run.next_attempt_at is None:
            break
        now = run.next_attempt_at
    return states


# --- delivery ------------------------------------------------------------------------------------


def test_webhook_run_is_delivered(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(config)

    ran = worker.run_once(utc_now())

    run = only_run(db)
    assert ran == 1
    assert run.status == "succeeded"
    assert run.attempts == 1
    assert run.finished_at is not None
    assert run.next_attempt_at is None


def test_delivery_id_header_is_run_id(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    make_worker(config).run_once(utc_now())

    assert receiver.delivery_ids() == [str(only_run(db).id)]


def test_delivered_body_is_signed_payload(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    make_worker(config).run_once(utc_now())

    delivery = receiver.deliveries[0]
    timestamp = delivery.headers["X-Simpul-Timestamp"]
    signature = delivery.headers["X-Simpul-Signature"]
    assert json.loads(delivery.body) == only_run(db).payload
    assert verify_signature(SECRET.encode(), timestamp, delivery.body, signature, now=time.time(), max_skew_seconds=60)


def test_skipped_run_is_not_sent(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True, send_actions=False))

    ran = make_worker(config).run_once(utc_now())

    assert ran == 0
    assert only_run(db).status == "skipped"
    assert receiver.deliveries == []


# --- retries -------------------------------------------------------------------------------------


def test_server_error_is_retried_until_dead(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.default = ScriptedResponse(500)
    config = make_config(receiver.url(), max_attempts=3)
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert [state.status for state in states] == ["failed", "failed", "dead"]
    assert [state.attempts for state in states] == [1, 2, 3]
    assert len(receiver.deliveries) == 3
    assert "HTTP 500" in (states[-1].last_error or "")


def test_retry_waits_grow(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.default = ScriptedResponse(503)
    config = make_config(receiver.url(), max_attempts=4)
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(config)
    now = utc_now()
    waits = []

    for _ in range(3):
        worker.run_once(now)
        retry_at = only_run(db).next_attempt_at
        assert retry_at is not None
        waits.append((retry_at - now).total_seconds())
        now = retry_at

    assert 1.8 <= waits[0] <= 2.0
    assert 3.6 <= waits[1] <= 4.0
    assert 7.2 <= waits[2] <= 8.0


def test_failed_run_waits_for_its_retry_time(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.script(ScriptedResponse(500))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(config)
    now = utc_now()
    worker.run_once(now)

    ran_early = worker.run_once(now + timedelta(seconds=1))

    assert ran_early == 0
    assert len(receiver.deliveries) == 1


def test_dead_run_is_not_sent_again(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.default = ScriptedResponse(500)
    config = make_config(receiver.url(), max_attempts=2)
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(config)
    run_until_finished(worker, db)

    ran = worker.run_once(utc_now() + timedelta(days=1))

    assert ran == 0
    assert len(receiver.deliveries) == 2


def test_connection_refused_is_retried_until_dead(db: Engine, make_worker: WorkerFactory) -> None:
    config = make_config(f"http://127.0.0.1:{unused_port()}/hook", max_attempts=2)
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert [state.status for state in states] == ["failed", "dead"]
    assert "request failed" in (states[-1].last_error or "")


def test_closed_connection_is_retried(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.script(ScriptedResponse(close=True))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert [state.status for state in states] == ["failed", "succeeded"]


def test_client_error_is_dead_at_once(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.default = ScriptedResponse(400)
    config = make_config(receiver.url(), max_attempts=5)
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert [state.status for state in states] == ["dead"]
    assert states[-1].attempts == 1
    assert len(receiver.deliveries) == 1
    assert "HTTP 400" in (states[-1].last_error or "")


def test_too_many_requests_is_retried(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.script(ScriptedResponse(429))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert [state.status for state in states] == ["failed", "succeeded"]


def test_retry_after_delays_next_attempt(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.script(ScriptedResponse(429, {"Retry-After": "30"}))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(config)
    now = utc_now()

    worker.run_once(now)

    retry_at = only_run(db).next_attempt_at
    assert retry_at is not None
    assert retry_at - now >= timedelta(seconds=30)
    assert worker.run_once(now + timedelta(seconds=29)) == 0


def test_success_after_failure_counts_attempts(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.script(ScriptedResponse(500), ScriptedResponse(500))
    config = make_config(receiver.url(), max_attempts=5)
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert states[-1].status == "succeeded"
    assert states[-1].attempts == 3
    assert states[-1].last_error is None
    assert len(receiver.deliveries) == 3


def test_every_attempt_has_the_same_delivery_id(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.script(ScriptedResponse(502))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    run_until_finished(make_worker(config), db)

    assert receiver.delivery_ids() == [str(only_run(db).id)] * 2


# --- configuration problems ----------------------------------------------------------------------


def test_missing_secret_makes_run_dead(
    db: Engine, receiver: Receiver, make_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    config = make_config(receiver.url(), max_attempts=5)
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert [state.status for state in states] == ["dead"]
    assert f"environment variable {SECRET_ENV} is not set" in (states[-1].last_error or "")
    assert receiver.deliveries == []


def test_unknown_target_makes_run_dead(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    with WebhookExecutor({}) as executor:
        states = run_until_finished(make_worker(config, executor=executor), db)

    assert [state.status for state in states] == ["dead"]
    assert "unknown webhook target 'hook'" in (states[-1].last_error or "")


# --- executor bugs and the thread ----------------------------------------------------------------


def test_executor_exception_is_retried(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(config, executor=BrokenExecutor())

    worker.run_once(utc_now())

    run = only_run(db)
    assert run.status == "failed"
    assert run.attempts == 1
    assert "unexpected RuntimeError in the webhook executor: executor bug" in (run.last_error or "")


def test_executor_exception_keeps_thread_running(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    worker = make_worker(config, executor=BrokenExecutor(), poll_seconds=0.05)

    worker.start()

    assert wait_until(lambda: only_run(db).attempts == 1)
    assert worker.health()["running"]
    assert worker.health()["healthy"]


def test_started_worker_delivers_and_stops(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    config = make_config(receiver.url())
    worker = make_worker(config, poll_seconds=0.05)
    stop = worker.start()

    fire(Pipeline(config, db, event_clock=True))

    assert wait_until(lambda: only_run(db).status == "succeeded")
    stop()
    assert not worker.health()["running"]


def test_health_counts_outcomes(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    receiver.script(ScriptedResponse(500), ScriptedResponse(200), ScriptedResponse(404))
    config = make_config(receiver.url())
    pipeline = Pipeline(config, db, event_clock=True)
    worker = make_worker(config)
    fire(pipeline, minute=0)
    fire(pipeline, minute=10)

    now = utc_now()
    worker.run_once(now)
    worker.run_once(now + timedelta(minutes=1))

    health = worker.health()
    assert health["retried"] == 1
    assert health["succeeded"] == 1
    assert health["dead"] == 1


def test_worker_without_executors_is_rejected(db: Engine) -> None:
    with pytest.raises(ValueError, match="at least one executor"):
        OutboxWorker(db, {})


# --- logs ----------------------------------------------------------------------------------------


def test_logs_never_contain_secret_or_query(
    db: Engine, receiver: Receiver, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script(ScriptedResponse(500), ScriptedResponse(400))
    config = make_config(receiver.url("token=query-token"))
    fire(Pipeline(config, db, event_clock=True))

    states = run_until_finished(make_worker(config), db)

    assert states[-1].status == "dead"
    assert SECRET not in caplog.text
    assert "query-token" not in caplog.text
    assert "query-token" not in (states[-1].last_error or "")


def test_retry_is_logged_as_warning_with_ids(
    db: Engine, receiver: Receiver, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script(ScriptedResponse(500))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    make_worker(config).run_once(utc_now())

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"action run {only_run(db).id} (rule siaga-x, device x, target hook) failed attempt 1 of 3"
    )
    assert warnings[0].endswith("s: webhook target hook returned HTTP 500 Internal Server Error")


def test_dead_run_is_logged_as_error_with_ids(
    db: Engine, receiver: Receiver, make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script(ScriptedResponse(400))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))

    make_worker(config).run_once(utc_now())

    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert errors == [
        f"action run {only_run(db).id} (rule siaga-x, device x, target hook) is dead after attempt 1: "
        "webhook target hook returned HTTP 400 Bad Request"
    ]


# --- restarts and several workers ----------------------------------------------------------------


def test_restarted_worker_never_resends_succeeded_run(
    db: Engine, tmp_path: Path, receiver: Receiver, make_worker: WorkerFactory
) -> None:
    config = make_config(receiver.url())
    pipeline = Pipeline(config, db, event_clock=True)
    fire(pipeline, minute=0)
    make_worker(config).run_once(utc_now())
    fire(pipeline, minute=10)
    restarted_store = open_store(tmp_path)

    try:
        ran = make_worker(config, store=restarted_store).run_once(utc_now())
    finally:
        restarted_store.dispose()

    first, second = fetch_action_runs(db)
    assert ran == 1
    assert receiver.delivery_ids() == [str(first.id), str(second.id)]
    assert second.status == "succeeded"


def test_restarted_worker_resends_run_left_mid_send(
    db: Engine, tmp_path: Path, receiver: Receiver, make_worker: WorkerFactory
) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    now = utc_now()
    # A worker leases the run and then dies before it writes the outcome.
    ops.lease_due_runs(engine=db, types=["webhook"], now=now, lease=DEFAULT_LEASE)
    restarted_store = open_store(tmp_path)

    try:
        worker = make_worker(config, store=restarted_store)
        ran_during_lease = worker.run_once(now + timedelta(seconds=1))
        ran_after_lease = worker.run_once(now + DEFAULT_LEASE + timedelta(seconds=1))
    finally:
        restarted_store.dispose()

    assert ran_during_lease == 0
    assert ran_after_lease == 1
    assert only_run(db).status == "succeeded"


def test_restarted_worker_resumes_failed_run(
    db: Engine, tmp_path: Path, receiver: Receiver, make_worker: WorkerFactory
) -> None:
    receiver.script(ScriptedResponse(500))
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    make_worker(config).run_once(utc_now())
    retry_at = only_run(db).next_attempt_at
    assert retry_at is not None
    restarted_store = open_store(tmp_path)

    try:
        make_worker(config, store=restarted_store).run_once(retry_at)
    finally:
        restarted_store.dispose()

    run = only_run(db)
    assert run.status == "succeeded"
    assert run.attempts == 2


def send_with_two_workers(store: Engine, receiver: Receiver, make_worker: WorkerFactory) -> list[int]:
    """Fire the rule six times, let two workers run the due runs at the same moment, and return
    how many runs each worker ran."""
    receiver.default = ScriptedResponse(200, delay_seconds=0.02)
    config = make_config(receiver.url())
    pipeline = Pipeline(config, store, event_clock=True)
    # Firings 90 minutes apart stay below the default flapping limit of 4 firings an hour.
    for minute in range(0, 6 * 90, 90):
        fire(pipeline, minute)
    workers = [make_worker(config, store=store), make_worker(config, store=store)]
    now = utc_now()
    start = threading.Barrier(2)
    counts: list[int] = []

    def drain(worker: OutboxWorker) -> None:
        start.wait()
        counts.append(worker.run_once(now))

    threads = [threading.Thread(target=drain, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return counts


def test_two_workers_send_each_run_once(db: Engine, receiver: Receiver, make_worker: WorkerFactory) -> None:
    counts = send_with_two_workers(db, receiver, make_worker)

    run_ids = [str(run.id) for run in fetch_action_runs(db)]
    assert sum(counts) == 6
    assert sorted(receiver.delivery_ids()) == sorted(run_ids)


@pytest.mark.postgres
def test_postgres_workers_send_each_run_once(
    postgres_db: Engine, receiver: Receiver, make_worker: WorkerFactory
) -> None:
    counts = send_with_two_workers(postgres_db, receiver, make_worker)

    run_ids = [str(run.id) for run in fetch_action_runs(postgres_db)]
    assert sum(counts) == 6
    assert sorted(receiver.delivery_ids()) == sorted(run_ids)


def test_lost_lease_keeps_other_workers_outcome(db: Engine, receiver: Receiver) -> None:
    config = make_config(receiver.url())
    fire(Pipeline(config, db, event_clock=True))
    now = utc_now()
    # The first worker's lease runs out while it is still sending, so a second worker leases
    # the run and writes its outcome first.
    (first,) = ops.lease_due_runs(engine=db, types=["webhook"], now=now, lease=DEFAULT_LEASE)
    later = now + DEFAULT_LEASE + timedelta(seconds=1)
    (second,) = ops.lease_due_runs(engine=db, types=["webhook"], now=later, lease=DEFAULT_LEASE)
    assert first.id is not None
    assert first.next_attempt_at is not None
    assert second.next_attempt_at is not None
    second_write = ops.finish_leased_run(
        engine=db,
        run_id=first.id,
        lease_until=second.next_attempt_at,
        status=ops.RUN_SUCCEEDED,
        attempts=2,
        error=None,
        next_attempt_at=None,
    )

    first_write = ops.finish_leased_run(
        engine=db,
        run_id=first.id,
        lease_until=first.next_attempt_at,
        status=ops.RUN_FAILED,
        attempts=1,
        error="timed out",
        next_attempt_at=later,
    )

    assert second_write
    assert not first_write
    assert only_run(db).status == "succeeded"


# --- backoff -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "full_seconds"),
    [(1, 2), (2, 4), (3, 8), (4, 16), (8, 256), (9, 512), (10, 600), (50, 600)],
)
def test_backoff_doubles_up_to_ten_minutes(attempts: int, full_seconds: float) -> None:
    seconds = backoff_delay(attempts).total_seconds()

    assert full_seconds * 0.9 <= seconds <= full_seconds


def test_backoff_honours_retry_after() -> None:
    assert backoff_delay(1, retry_after_seconds=45).total_seconds() == 45


def test_backoff_caps_retry_after_at_ten_minutes() -> None:
    assert backoff_delay(1, retry_after_seconds=86_400).total_seconds() == 600
