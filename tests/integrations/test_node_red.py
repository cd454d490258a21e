"""Flow files, the diff, and ``hub.py flows`` against a real Node-RED 4.1.8 from flows/node_modules.

The Node-RED tests start it on 127.0.0.1 with a free port, a temporary userDir and adminAuth
with a user whose bcrypt hash is made here by the bcryptjs package that Node-RED ships.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine as DbEngine

from integrations.node_red import FlowFileError, NodeRedExecutor, NodeRedSettings, diff, load_flow_files
from rules.loader import load_config_text
from rules.outbox import OutboxWorker
from rules.pipeline import Pipeline
from rules.readings import RawReading
from tests.conftest import PipelineFactory, at, fetch_action_runs
from tests.hub_process import ROOT, free_port

FLOWS = ROOT / "flows"
NODE_RED_BIN = FLOWS / "node_modules" / ".bin" / "node-red"
USERNAME = "simpul-admin"
PASSWORD = "only-for-this-test-run"

needs_node_red = pytest.mark.skipif(
    not NODE_RED_BIN.exists() or shutil.which("node") is None,
    reason="Node-RED is not installed: run `make test`, or `npm ci --prefix flows`, with node and npm on PATH",
)

SETTINGS_TEMPLATE = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %(port)d,
    userDir: %(user_dir)s,
    flowFile: "flows.json",
    credentialSecret: "test-only-credential-secret",
    httpNodeRoot: "/",
    diagnostics: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    logging: { console: { level: "warn", metrics: false, audit: false } },
    adminAuth: {
        type: "credentials",
        users: [{ username: %(username)s, password: %(password_hash)s, permissions: "*" }],
    },
};
"""


ACTION_CONFIG = """\
agencies:
  - {id: bpbd-dki, name: BPBD DKI Jakarta}
kinds:
  gauge:
    metrics:
      level: {unit: cm}
devices:
  - {id: manggarai, name: Manggarai, agency: bpbd-dki, kind: gauge}
rules:
  - id: siaga-manggarai
    name: Siaga Manggarai
    agency: bpbd-dki
    when: {device: manggarai, metric: level, above: 850}
    then:
      - node_red: {flow: notifikasi-alert, path: %s}
"""


@dataclass(frozen=True)
class NodeRed:
    url: str
    log_path: Path


def write_flow(folder: Path, name: str, document: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / name).write_text(text, encoding="utf-8")


def run_flows_command(*args: str, url: str, username: str | None = USERNAME, password: str | None = PASSWORD):  # type: ignore[no-untyped-def]
    """Run ``hub.py flows ...`` as a process with the Node-RED variables set, and return the result."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SIMPUL_NODE_RED_")}
    env["SIMPUL_NODE_RED_URL"] = url
    if username is not None:
        env["SIMPUL_NODE_RED_USERNAME"] = username
    if password is not None:
        env["SIMPUL_NODE_RED_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, str(ROOT / "hub.py"), "flows", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- flow files and diff, without Node-RED ---------------------------------------------------


def test_repository_flow_files_are_valid() -> None:
    nodes = load_flow_files(FLOWS)

    ids = {node["id"] for node in nodes}
    assert "simpul.notifikasi.tab" in ids
    assert "simpul.pembacaan.tab" in ids
    http_in = [node for node in nodes if node["type"] == "http in"]
    assert [(node["method"], node["url"]) for node in http_in] == [("post", "/simpul/alert")]


def test_reading_flow_takes_token_from_environment() -> None:
    nodes = load_flow_files(FLOWS)
    function = next(node for node in nodes if node["id"] == "simpul.pembacaan.siapkan")

    assert 'env.get("SIMPUL_NODE_RED_TOKEN")' in function["func"]
    assert '"X-Simpul-Source"' in function["func"]
    assert "/api/v1/readings" in function["func"]
    request = next(node for node in nodes if node["type"] == "http request")
    assert request["headers"] == []
    assert request["authType"] == ""


def test_load_reports_every_broken_file(tmp_path: Path) -> None:
    tab = {"id": "tab1", "type": "tab", "label": "Satu"}
    write_flow(tmp_path, "a-valid.json", [tab, {"id": "n1", "type": "debug", "z": "tab1", "name": "log"}])
    write_flow(tmp_path, "b-not-json.json", '[{"id": "x",')
    write_flow(tmp_path, "c-object.json", {"id": "n2", "type": "debug"})
    write_flow(tmp_path, "d-nodes.json", [7, {"id": "n3"}, {"id": "n1", "type": "inject"}])
    write_flow(tmp_path, "e-orphan.json", [{"id": "n4", "type": "debug", "z": "missing-tab", "name": "sendiri"}])
    write_flow(tmp_path, "package.json", {"name": "not a flow file"})

    with pytest.raises(FlowFileError) as caught:
        load_flow_files(tmp_path)

    assert caught.value.problems == [
        "b-not-json.json:1:13: invalid JSON: Expecting property name enclosed in double quotes",
        "c-object.json: expected a JSON list of nodes, got an object",
        "d-nodes.json[0]: expected a node object, got a number",
        "d-nodes.json[1]: node 'n3' is missing type (a non-empty string)",
        "d-nodes.json: node id 'n1' (inject) is already used in a-valid.json",
        "e-orphan.json: node 'n4' (debug 'sendiri') has z 'missing-tab', which is no tab or subflow in the flow files",
    ]


def test_load_rejects_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FlowFileError, match="flow folder not found"):
        load_flow_files(tmp_path / "absent")
    with pytest.raises(FlowFileError, match=r"no \*\.json flow files found"):
        load_flow_files(tmp_path)


def test_cli_rejects_broken_flows_before_connecting(tmp_path: Path) -> None:
    write_flow(tmp_path, "broken.json", {"flows": []})
    unused_port = free_port()

    result = run_flows_command("deploy", "--folder", str(tmp_path), url=f"http://127.0.0.1:{unused_port}")

    assert result.returncode == 1
    assert "nothing was sent to Node-RED" in result.stderr
    assert "broken.json: expected a JSON list of nodes, got an object" in result.stderr
    assert "not reachable" not in result.stderr


def test_cli_names_unreachable_url_without_credentials() -> None:
    unused_port = free_port()

    result = run_flows_command("diff", url=f"http://someone:secret-in-url@127.0.0.1:{unused_port}")

    assert result.returncode == 1
    assert f"Node-RED is not reachable at http://127.0.0.1:{unused_port}" in result.stderr
    assert "SIMPUL_NODE_RED_URL" in result.stderr
    assert "secret-in-url" not in result.stderr + result.stdout


def test_diff_lists_nodes_by_id_and_name() -> None:
    current = [
        {"id": "t", "type": "tab", "label": "Alur"},
        {"id": "old", "type": "debug", "z": "t", "name": "lama"},
        {"id": "f", "type": "function", "z": "t", "name": "hitung", "func": "return msg;"},
    ]
    wanted = [
        {"id": "t", "type": "tab", "label": "Alur"},
        {"id": "f", "type": "function", "z": "t", "name": "hitung", "func": "return null;"},
        {"id": "new", "type": "inject", "z": "t"},
    ]

    changes = diff(current, wanted)

    assert changes.added == ["new (inject)"]
    assert changes.removed == ["old (debug 'lama')"]
    assert changes.changed == ["f (function 'hitung')"]
    assert changes.lines() == ["+ new (inject)", "- old (debug 'lama')", "~ f (function 'hitung')"]
    assert diff(wanted, wanted).is_empty


# --- the node_red action, without Node-RED ----------------------------------------------------


def fire(pipeline: Pipeline) -> None:
    """Make the rule fire once: a level below the threshold, then one above it."""
    pipeline.process("src", [RawReading("manggarai", "level", 700, at(0))])
    pipeline.process("src", [RawReading("manggarai", "level", 861, at(1))])


def test_node_red_action_is_pending_run(make_pipeline: PipelineFactory, db: DbEngine) -> None:
    fire(make_pipeline(ACTION_CONFIG % "/simpul/alert"))

    (run,) = fetch_action_runs(db)
    assert run.type == "node_red"
    assert run.status == "pending"
    assert run.target == "/simpul/alert"
    assert run.attempts == 0
    assert run.payload["rule"]["id"] == "siaga-manggarai"
    assert run.payload["device"]["id"] == "manggarai"
    assert run.payload["value"] == 861


@pytest.mark.parametrize("path", ["simpul/alert", "//other-host/alert"])
def test_node_red_path_must_be_absolute(path: str) -> None:
    loaded = load_config_text(ACTION_CONFIG % json.dumps(path), "config.yaml")

    assert [(problem.path, problem.code) for problem in loaded.problems] == [
        ("rules[0].then[0].node_red.path", "invalid_node_red_path")
    ]
    assert "http-in" in loaded.problems[0].message("en")
    assert "path URL node http-in" in loaded.problems[0].message("id")
    assert loaded.config.rules == []


# --- a real Node-RED ---------------------------------------------------------------------------


def _bcrypt_hash(password: str) -> str:
    result = subprocess.run(
        ["node", "-e", 'console.log(require("bcryptjs").hashSync(process.argv[1], 8))', password],
        cwd=FLOWS,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def node_red(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRed]:
    if not NODE_RED_BIN.exists() or shutil.which("node") is None:
        pytest.skip("Node-RED is not installed: run `make test`, or `npm ci --prefix flows`, with node and npm on PATH")
    user_dir = tmp_path_factory.mktemp("node-red")
    port = free_port()
    settings_path = user_dir / "settings.js"
    settings_path.write_text(
        SETTINGS_TEMPLATE
        % {
            "port": port,
            "user_dir": json.dumps(str(user_dir)),
            "username": json.dumps(USERNAME),
            "password_hash": json.dumps(_bcrypt_hash(PASSWORD)),
        },
        encoding="utf-8",
    )
    log_path = user_dir / "node-red.log"
    url = f"http://127.0.0.1:{port}"

    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(NODE_RED_BIN), "--settings", str(settings_path), "--userDir", str(user_dir)],
            cwd=user_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(lambda: httpx.get(f"{url}/auth/login", timeout=1).status_code == 200, what="Node-RED to start")
        yield NodeRed(url=url, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for(condition, *, what: str, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@needs_node_red
def test_deploy_then_alert_endpoint_answers(node_red: NodeRed) -> None:
    before = run_flows_command("diff", url=node_red.url)
    assert before.returncode == 0, before.stderr
    assert "+ simpul.notifikasi.masuk (http in 'Terima firing')" in before.stdout.splitlines()
    assert "+ simpul.pembacaan.tab (tab 'Kirim pembacaan')" in before.stdout.splitlines()

    deployed = run_flows_command("deploy", url=node_red.url)
    assert deployed.returncode == 0, deployed.stderr
    assert f"to Node-RED at {node_red.url} (rev " in deployed.stdout
    assert PASSWORD not in deployed.stdout + deployed.stderr

    after = run_flows_command("diff", url=node_red.url)
    assert after.returncode == 0, after.stderr
    assert after.stdout.startswith(f"Node-RED at {node_red.url} already runs the flows in flows")

    # http-in endpoints can answer 404 for a moment after a deployment, until the flows have started.
    firing = {"alert_id": 7, "rule": {"id": "banjir-siaga"}, "device": {"id": "manggarai"}, "value": 861}
    _wait_for(
        lambda: httpx.post(f"{node_red.url}/simpul/alert", json=firing, timeout=2).status_code != 404,
        what="the /simpul/alert endpoint",
    )
    response = httpx.post(f"{node_red.url}/simpul/alert", json=firing, timeout=5)
    assert response.status_code == 200
    acknowledgement = response.json()
    assert acknowledgement["ok"] is True
    assert acknowledgement["alert_id"] == 7
    assert acknowledgement["rule"] == "banjir-siaga"
    assert acknowledgement["device"] == "manggarai"

    rejected = httpx.post(f"{node_red.url}/simpul/alert", json=[1, 2], timeout=5)
    assert rejected.status_code == 400
    assert rejected.json()["ok"] is False


@needs_node_red
def test_second_deploy_changes_nothing(node_red: NodeRed) -> None:
    first = run_flows_command("deploy", url=node_red.url)
    assert first.returncode == 0, first.stderr
    rev = _current_rev(node_red)

    second = run_flows_command("deploy", url=node_red.url)

    assert second.returncode == 0, second.stderr
    assert "already runs the flows" in second.stdout
    assert "deployed" not in second.stdout
    assert _current_rev(node_red) == rev
    assert run_flows_command("diff", url=node_red.url).stdout.startswith(f"Node-RED at {node_red.url} already runs")


@needs_node_red
def test_deploy_shows_and_removes_editor_only_nodes(node_red: NodeRed, tmp_path: Path) -> None:
    assert run_flows_command("deploy", url=node_red.url).returncode == 0
    shutil.copy(FLOWS / "notifikasi-alert.json", tmp_path / "notifikasi-alert.json")

    preview = run_flows_command("diff", "--folder", str(tmp_path), url=node_red.url)
    deployed = run_flows_command("deploy", "--folder", str(tmp_path), url=node_red.url)

    assert preview.returncode == 0, preview.stderr
    assert "- simpul.pembacaan.tab (tab 'Kirim pembacaan')" in preview.stdout.splitlines()
    assert not [line for line in preview.stdout.splitlines() if line.startswith(("+", "~"))]
    assert deployed.returncode == 0, deployed.stderr
    running_ids = {node["id"] for node in _running_flows(node_red)}
    assert "simpul.pembacaan.tab" not in running_ids
    assert "simpul.notifikasi.tab" in running_ids


@needs_node_red
def test_wrong_password_is_rejected(node_red: NodeRed) -> None:
    result = run_flows_command("diff", url=node_red.url, password="not-the-password")

    assert result.returncode == 1
    assert f"rejected the login of user '{USERNAME}'" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout


@needs_node_red
def test_missing_credentials_are_reported(node_red: NodeRed) -> None:
    result = run_flows_command("diff", url=node_red.url, username=None, password=None)

    assert result.returncode == 1
    assert "401 Unauthorized" in result.stderr
    assert "SIMPUL_NODE_RED_USERNAME" in result.stderr


def _admin_token(node_red: NodeRed) -> str:
    form = {
        "client_id": "node-red-admin",
        "grant_type": "password",
        "scope": "*",
        "username": USERNAME,
        "password": PASSWORD,
    }
    response = httpx.post(f"{node_red.url}/auth/token", data=form, timeout=5)
    response.raise_for_status()
    return str(response.json()["access_token"])


def _flows_body(node_red: NodeRed) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {_admin_token(node_red)}", "Node-RED-API-Version": "v2"}
    response = httpx.get(f"{node_red.url}/flows", headers=headers, timeout=5)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _current_rev(node_red: NodeRed) -> str:
    return str(_flows_body(node_red)["rev"])


def _running_flows(node_red: NodeRed) -> list[dict[str, Any]]:
    flows: list[dict[str, Any]] = _flows_body(node_red)["flows"]
    return flows


@needs_node_red
def test_outbox_sends_node_red_run(node_red: NodeRed, make_pipeline: PipelineFactory, db: DbEngine) -> None:
    assert run_flows_command("deploy", url=node_red.url).returncode == 0
    settings = NodeRedSettings(url=node_red.url)
    _wait_for(
        lambda: httpx.post(f"{node_red.url}/simpul/alert", json={}, timeout=2).status_code != 404,
        what="the /simpul/alert endpoint",
    )
    fire(make_pipeline(ACTION_CONFIG % "/simpul/alert"))
    executor = NodeRedExecutor(settings)
    try:
        ran = OutboxWorker(db, {"node_red": executor}).run_once()
    finally:
        executor.close()

    (run,) = fetch_action_runs(db)
    assert ran == 1
    assert run.status == "succeeded", run.last_error
    assert run.attempts == 1


@needs_node_red
def test_outbox_retries_missing_endpoint(node_red: NodeRed, make_pipeline: PipelineFactory, db: DbEngine) -> None:
    fire(make_pipeline(ACTION_CONFIG % "/simpul/tidak-ada"))
    executor = NodeRedExecutor(NodeRedSettings(url=node_red.url))
    try:
        OutboxWorker(db, {"node_red": executor}).run_once()
    finally:
        executor.close()

    (run,) = fetch_action_runs(db)
    assert run.status == "failed"
    assert run.attempts == 1
    assert run.last_error == f"Node-RED endpoint {node_red.url}/simpul/tidak-ada returned HTTP 404 Not Found"
