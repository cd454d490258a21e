"""Config reload: in a pipeline, and on a running hub through SIGHUP."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from rules.pipeline import Pipeline
from rules.store.db import connect
from rules.store.models import Alert, AuditEntry
from tests.conftest import T0, at, load_config, raw_readings
from tests.hub_process import free_port, start_hub

BASE = """
agencies: [{id: dinas-sda, name: Dinas SDA}]
kinds: {water_level: {metrics: {level: {unit: cm, min: -100, max: 2000}}}}
devices:
  - {id: manggarai, name: PA Manggarai, agency: dinas-sda, kind: water_level}
  - {id: depok, name: Pos Depok, agency: dinas-sda, kind: water_level}
sources:
  - {id: gateway, type: http, auth: {token: "${SIMPUL_TEST_GATEWAY_TOKEN}"}}
rules:
  - id: manggarai-siaga-2
    name: Manggarai Siaga 2
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850, for: 15m}
    then: [{alert: {message: "Manggarai {value} cm"}}]
  - id: depok-siaga
    name: Depok Siaga
    agency: dinas-sda
    when: {device: depok, metric: level, above: DEPOK_THRESHOLD}
    then: [{alert: {message: "Depok {value} cm"}}]
"""


def _config_text(depok_threshold: int) -> str:
    return BASE.replace("DEPOK_THRESHOLD", str(depok_threshold))


def test_reload_keeps_unchanged_rule_state(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path}/reload.db")
    pipeline = Pipeline(load_config(_config_text(270)), db, event_clock=True)
    pipeline.process(
        "file", raw_readings("manggarai", "level", [(0, 860)]) + raw_readings("depok", "level", [(1, 300)])
    )

    pipeline.reload(load_config(_config_text(350)))
    pipeline.process("file", raw_readings("depok", "level", [(20, 310)]))

    with Session(db) as session:
        alerts = session.execute(select(Alert).order_by(Alert.id)).scalars().all()
    summary = [(alert.rule_id, alert.status, alert.opened_at, alert.resolve_note) for alert in alerts]
    assert summary == [
        ("depok-siaga", "resolved", at(1), "rule changed or removed"),
        ("manggarai-siaga-2", "open", T0 + timedelta(minutes=15), None),
    ]
    db.dispose()


def test_sighup_reloads_running_hub(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(_config_text(270))
    log_path = tmp_path / "hub.log"
    hub = start_hub(
        config_path=config_path,
        db_url=f"sqlite:///{tmp_path}/hub.db",
        port=free_port(),
        log_path=log_path,
        env={"SIMPUL_TEST_GATEWAY_TOKEN": "reload-test-token"},
    )
    try:
        config_path.write_text(_config_text(350))
        hub.send_signal(signal.SIGHUP)

        reloaded = False
        for _ in range(100):
            if "config reloaded from" in log_path.read_text():
                reloaded = True
                break
            time.sleep(0.1)
        assert reloaded, log_path.read_text()
        assert hub.poll() is None
    finally:
        hub.terminate()
        hub.wait(timeout=20)

    db = connect(f"sqlite:///{tmp_path}/hub.db")
    with Session(db) as session:
        actions = session.execute(select(AuditEntry.action)).scalars().all()
    assert actions == ["config_reloaded"]
    db.dispose()
