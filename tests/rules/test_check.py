"""The check command: output lines, language choice and exit codes, also through hub.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rules.check import run_check
from rules.loader import load_config

REPOSITORY = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPOSITORY / "config.yaml"

BROKEN = """\
simpul:
  language: en
agencies:
  - id: dlh
    name: Dinas Lingkungan Hidup
kinds:
  waste_bin:
    metrics:
      fill: {unit: "%", min: 0, max: 100}
devices:
  - {id: tps-1, name: TPS 1, agency: dlh, kind: waste_bin}
rules:
  - {id: tps-penuh, name: Penuh, agency: dlh, when: {kind: waste_bin, metric: fill, above: sembilan puluh}}
  - {id: tps-kosong, name: Kosong, agency: dlh, when: {kind: waste_bin, metric: fil, below: 5}}
"""


def run(path: Path, lang: str | None = None) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = run_check(path, lang=lang, out=out)
    return code, out.getvalue().splitlines()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_config_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPUL_GATEWAY_TOKEN", "check-test-token")
    code, lines = run(EXAMPLE_CONFIG, lang="en")

    assert code == 0
    assert lines == [f"{EXAMPLE_CONFIG}: no problems found. Agencies: 3, devices: 12, rules: 8."]


def test_repository_config_summary_in_indonesian(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPUL_GATEWAY_TOKEN", "check-test-token")
    code, lines = run(EXAMPLE_CONFIG)

    assert code == 0
    assert lines == [f"{EXAMPLE_CONFIG}: tidak ada masalah. Instansi: 3, perangkat: 12, aturan: 8."]


def test_unset_secret_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIMPUL_GATEWAY_TOKEN", raising=False)
    code, lines = run(EXAMPLE_CONFIG, lang="en")

    assert code == 0
    assert lines[1] == (
        f"{EXAMPLE_CONFIG}: warning: sources[0].auth.token refers to the environment variable "
        "SIMPUL_GATEWAY_TOKEN, which is not set; set it before starting the hub, or the hub cannot "
        "use this part of the config"
    )
    assert len(lines) == 2


def test_repository_config_webhook_example_passes_when_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIMPUL_GATEWAY_TOKEN", "check-test-token")
    monkeypatch.setenv("SIMPUL_POSKO_WEBHOOK_SECRET", "check-test-secret")
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    uncommented = (
        text.replace("# webhooks:\n", "webhooks:\n")
        .replace("#   - id: posko\n", "  - id: posko\n")
        .replace("#     url: ", "    url: ")
        .replace("#     secret: ", "    secret: ")
        .replace("# - webhook: ", "- webhook: ")
    )
    path = write_config(tmp_path, uncommented)

    code, lines = run(path, lang="en")

    assert code == 0
    assert lines == [f"{path}: no problems found. Agencies: 3, devices: 12, rules: 8."]
    config = load_config(path).config
    assert [webhook.id for webhook in config.webhooks] == ["posko"]
    rule = next(rule for rule in config.rules if rule.id == "manggarai-siaga-2")
    assert [action.type for action in rule.then] == ["alert", "dispatch", "webhook"]


def test_problems_printed_one_per_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, BROKEN)

    code, lines = run(path)

    assert code == 1
    assert lines == [
        f"{path}:13 rules[0].when.above: expected a number or {{attribute: NAME}}, got 'sembilan puluh'",
        f"{path}:14 rules[1].when.metric: kind 'waste_bin' has no metric 'fil' (its metrics: fill). "
        "Did you mean 'fill'?",
        f"{path}: 2 problem(s) found. Fix them and run the check again.",
    ]


def test_lang_argument_overrides_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, BROKEN)

    code, lines = run(path, lang="id")

    assert code == 1
    assert (
        lines[0]
        == f"{path}:13 rules[0].when.above: nilai harus berupa angka atau {{attribute: NAMA}}, bukan 'sembilan puluh'"
    )
    assert lines[-1] == f"{path}: ditemukan 2 masalah. Perbaiki lalu jalankan pemeriksaan lagi."


def test_problems_sorted_by_line(tmp_path: Path) -> None:
    text = BROKEN.replace("  language: en\n", "  language: en\n  port: x\n")
    path = write_config(tmp_path, text)

    code, lines = run(path)

    assert code == 1
    assert [line.split(" ")[0] for line in lines[:-1]] == [f"{path}:3", f"{path}:14", f"{path}:15"]


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "tidak-ada.yaml"

    code, lines = run(path)

    assert code == 1
    assert lines == [
        f"{path}: berkas tidak ditemukan: periksa lokasi dan nama berkasnya",
        f"{path}: ditemukan 1 masalah. Perbaiki lalu jalankan pemeriksaan lagi.",
    ]


def test_hub_check_command(tmp_path: Path) -> None:
    broken = write_config(tmp_path, BROKEN)
    command = [sys.executable, "hub.py", "check"]
    environment = dict(os.environ, SIMPUL_GATEWAY_TOKEN="check-test-token")

    passed = subprocess.run(
        [*command, "--lang", "en"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
    )
    failed = subprocess.run(
        [*command, "--config", str(broken), "--lang", "id"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert passed.returncode == 0, passed.stderr
    assert passed.stdout == "config.yaml: no problems found. Agencies: 3, devices: 12, rules: 8.\n"
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout.splitlines()[0] == (
        f"{broken}:13 rules[0].when.above: nilai harus berupa angka atau {{attribute: NAMA}}, bukan 'sembilan puluh'"
    )
    assert len(failed.stdout.splitlines()) == 3
