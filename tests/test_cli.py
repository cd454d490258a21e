"""The hub's CLI commands for alerts, action runs and dispatch jobs, on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

import hub
from rules.pipeline import Pipeline
from rules.store.db import connect
from rules.store.models import ActionRun, AuditEntry
from tests.conftest import load_config, raw_readings

CONFIG = """
agencies:
  - {id: dinas-sda, name: Dinas SDA, teams: [{id: tim-pompa, name: Tim Pompa}]}
kinds: {water_level: {metrics: {level: {unit: cm, min: -100, max: 2000}}}}
devices:
  - {id: manggarai, name: PA Manggarai, agency: dinas-sda, kind: water_level}
webhooks:
  - {id: posko, url: "http://127.0.0.1:9/", secret: "${SIMPUL_TEST_WEBHOOK_SECRET}"}
rules:
  - id: siaga
    name: Siaga Manggarai
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    then:
      - alert: {message: "Tinggi {value} cm"}
      - webhook: {target: posko}
      - dispatch: {team: tim-pompa, title: "Cek {device.name}"}
"""


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, str]:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(CONFIG)
    url = f"sqlite:///{tmp_path}/cli.db"
    db = connect(url)
    Pipeline(load_config(CONFIG), db, event_clock=True).process("test", raw_readings("manggarai", "level", [(0, 900)]))
    with Session(db) as session:
        session.execute(update(ActionRun).where(ActionRun.type == "webhook").values(status="dead", attempts=6))
        session.commit()
    db.dispose()
    return config_path, url


def run_cli(store: tuple[Path, str], *args: str) -> int:
    config_path, url = store
    command, *rest = args
    return hub.main([command, "--config", str(config_path), "--db", url, *rest])


def test_runs_list_shows_dead_run(store: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(store, "runs", "list", "--status", "dead")

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert lines[1].split()[:4] == ["2", "dead", "webhook", "6"]


def test_runs_retry_requeues_and_audits(store: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(store, "runs", "retry", "2", "--by", "sari")

    assert code == 0
    assert capsys.readouterr().out == "action run 2 is pending again\n"
    db = connect(store[1])
    with Session(db) as session:
        run = session.get(ActionRun, 2)
        audit = session.execute(select(AuditEntry.actor, AuditEntry.action, AuditEntry.target)).all()
    db.dispose()
    assert run is not None
    assert (run.status, run.attempts) == ("pending", 0)
    assert [tuple(row) for row in audit] == [("sari", "action_run_retried", "action_run:2")]


def test_runs_retry_rejects_live_run(store: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(store, "runs", "retry", "1", "--by", "sari")

    assert code == 1
    assert capsys.readouterr().err == "error: action run 1 is succeeded; only a dead run can be retried\n"


def test_runs_retry_needs_a_name(store: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(store, "runs", "retry", "2")

    assert code == 2
    assert "--by NAME" in capsys.readouterr().err


def test_jobs_lists_dispatch_job(store: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(store, "jobs")

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert lines[1].split()[:3] == ["1", "new", "tim-pompa"]
    assert lines[1].endswith("manggarai: Cek PA Manggarai")


def test_alerts_ack_then_resolve(store: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    acknowledged = run_cli(store, "alerts", "ack", "1", "--by", "sari", "--note", "tim menuju lokasi")
    resolved = run_cli(store, "alerts", "resolve", "1", "--by", "budi")

    assert acknowledged == 0
    assert resolved == 0
    assert capsys.readouterr().out == "alert 1 is now acknowledged\nalert 1 is now resolved\n"


def test_users_add_password_from_env(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rules import users

    config_path, url = store
    monkeypatch.setenv("SANDI_BARU", "sandi-operator-01")
    common = ["users", "--config", str(config_path), "--db", url]

    code = hub.main(
        [*common, "add", "rina", "--name", "Rina", "--role", "dinas-sda=operator", "--password-env", "SANDI_BARU"]
    )
    assert code == 0
    assert hub.main([*common, "list"]) == 0

    assert "rina                 yes     Rina" in capsys.readouterr().out
    db = connect(url)
    member = users.authenticate(engine=db, username="rina", password="sandi-operator-01")
    db.dispose()
    assert member is not None
    assert member.roles == {"dinas-sda": "operator"}


def test_users_add_unknown_agency(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, url = store
    monkeypatch.setenv("SANDI_BARU", "sandi-operator-01")

    code = hub.main(
        [
            "users",
            "--config",
            str(config_path),
            "--db",
            url,
            "add",
            "rina",
            "--role",
            "dinas-pu=viewer",
            "--password-env",
            "SANDI_BARU",
        ]
    )

    assert code == 1
    assert "instansi dinas-pu tidak dikenal" in capsys.readouterr().err


def test_replay_without_file_source(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config_path, _url = store
    export = tmp_path / "tma.csv"
    export.write_text("waktu,manggarai\n2025-01-15 10:00,900\n")

    code = hub.main(["replay", str(export), "--config", str(config_path)])

    assert code != 0
    assert "the config has no file source: add a source with type: file" in capsys.readouterr().err


def test_users_add_without_terminal(
    store: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    config_path, url = store
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    code = hub.main(["users", "--config", str(config_path), "--db", url, "add", "rina", "--role", "dinas-sda=viewer"])

    assert code == 2
    assert "set one with --password-env VARIABLE instead" in capsys.readouterr().err
