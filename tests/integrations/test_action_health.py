"""Health of the webhook and Node-RED executors: the latest attempt for each target, against the
scripted HTTP receiver of test_webhook_out.py."""

from __future__ import annotations

import pytest

from integrations.action_health import ReportingExecutor
from integrations.webhook_out import WebhookExecutor
from rules.errors import PermanentActionError, RetryableActionError
from tests.integrations.test_webhook_out import Receiver, ScriptedResponse, make_run, make_target, receiver

__all__ = ["receiver"]


@pytest.fixture
def executor(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> ReportingExecutor:
    monkeypatch.setenv("SIMPUL_TEST_WEBHOOK_SECRET", "s3cret-for-tests-only")
    return ReportingExecutor(WebhookExecutor({"hook": make_target(receiver.url())}))


def test_no_attempt_yet_is_healthy(executor: ReportingExecutor) -> None:
    assert executor.health() == {"healthy": True, "targets": {}}


def test_target_is_unhealthy_until_an_attempt_reaches_it(executor: ReportingExecutor, receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(503), ScriptedResponse(200))

    with pytest.raises(RetryableActionError):
        executor.run(make_run())
    while_failing = executor.health()
    executor.run(make_run())
    after = executor.health()

    assert while_failing["healthy"] is False
    assert while_failing["targets"]["hook"]["healthy"] is False
    assert while_failing["targets"]["hook"]["last_error"] == "webhook target hook returned HTTP 503 Service Unavailable"
    assert after["healthy"] is True
    assert after["targets"]["hook"]["last_error"] is None


def test_refused_run_keeps_target_healthy_with_its_error(executor: ReportingExecutor, receiver: Receiver) -> None:
    receiver.script(ScriptedResponse(400))

    with pytest.raises(PermanentActionError):
        executor.run(make_run())

    health = executor.health()
    assert health["healthy"] is True
    assert health["targets"]["hook"]["last_error"] == "webhook target hook returned HTTP 400 Bad Request"


def test_max_attempts_come_from_the_wrapped_executor(executor: ReportingExecutor) -> None:
    assert executor.max_attempts(make_run()) == 6
