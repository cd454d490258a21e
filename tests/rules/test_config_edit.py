"""Config editing: round-trip edits of the repository's config.yaml, validation, conflicts, git commits, audit."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine as DbEngine
from sqlalchemy import select
from sqlmodel import Session

from rules.config_edit import (
    ConfigConflict,
    ConfigEditor,
    ConfigGitError,
    ConfigInvalid,
    ConfigUnreadable,
    InvalidItem,
    ItemNotFound,
    StaffMember,
    list_config_commits,
    render_rule_yaml,
)
from rules.loader import load_config, load_config_text
from rules.store.models import AuditEntry

ROOT = Path(__file__).resolve().parents[2]
SITI = StaffMember(username="siti.rahma", full_name="Siti Rahma")
THRESHOLD_LINE = "    when: {device: manggarai, metric: level, at_least: 850, for: 15m}\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def make_repo(path: Path, *, user: bool = True) -> Path:
    """Create a git repository with a copy of the repository's config.yaml, committed once."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    if user:
        git(path, "config", "user.name", "Hub Operator")
        git(path, "config", "user.email", "operator@dinas.example")
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path / "config.yaml")
    git(path, "add", "config.yaml")
    git(
        path,
        "-c",
        "user.name=Setup",
        "-c",
        "user.email=setup@example.invalid",
        "commit",
        "--quiet",
        "--no-verify",
        "-m",
        "Add config",
    )
    return path / "config.yaml"


@pytest.fixture
def repo_config(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    """Return the (old, new) pairs of lines that differ, for texts with the same number of lines."""
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines)
    return [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]


def lower_threshold(editor: ConfigEditor, value: int = 800) -> list[str]:
    rule = editor.get_rule("manggarai-siaga-2")
    rule["when"]["at_least"] = value
    return editor.replace_rule("manggarai-siaga-2", rule)


# --- round trip --------------------------------------------------------------------------------


def test_unedited_render_is_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)

    editor = ConfigEditor.load(path)

    assert editor.render() == (ROOT / "tests" / "fixtures" / "kota.yaml").read_text(encoding="utf-8")
    assert editor.diff() == ""
    assert editor.check() == []


def test_threshold_edit_changes_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    original = path.read_text(encoding="utf-8")
    editor = ConfigEditor.load(path)

    changes = lower_threshold(editor)

    assert changes == ["when.at_least 850 -> 800"]
    assert changed_lines(original, editor.render()) == [(THRESHOLD_LINE, THRESHOLD_LINE.replace("850", "800"))]


def test_unchanged_rule_replacement_is_noop(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    for rule_id in editor.rule_ids():
        assert editor.replace_rule(rule_id, editor.get_rule(rule_id)) == []
    for device_id in editor.device_ids():
        assert editor.put_device(editor.get_device(device_id)) == []

    assert editor.render() == editor.loaded_text
    assert editor.changes == []


def test_quoted_string_keeps_its_quotes(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    original = path.read_text(encoding="utf-8")
    editor = ConfigEditor.load(path)

    rule = editor.get_rule("manggarai-siaga-2")
    rule["then"][0]["alert"]["message"] = "Air {value} cm di {device.name}"
    changes = editor.replace_rule("manggarai-siaga-2", rule)

    assert changes == [
        "then[0].alert.message Tinggi muka air {value} cm di {device.n… -> Air {value} cm di {device.name}"
    ]
    old_line = '      - alert: {message: "Tinggi muka air {value} cm di {device.name} (Siaga 2)"}\n'
    assert changed_lines(original, editor.render()) == [
        (old_line, '      - alert: {message: "Air {value} cm di {device.name}"}\n')
    ]


def test_added_key_goes_before_next_rule_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    rule = editor.get_rule("siaga-2")
    rule["cooldown"] = "1h"
    editor.replace_rule("siaga-2", rule)
    rendered = editor.render()

    expected = (
        "    clear: {below: {attribute: siaga_2}, for: 15m}\n"
        "    cooldown: 1h\n"
        "    then:\n"
        '      - alert: {message: "{rule.name}: {value} cm di {device.name}. Siapkan evakuasi warga bantaran."}\n'
        '      - dispatch: {team: tim-reaksi-cepat, title: "Pantau bantaran sungai dekat {device.name}", due: 1h}\n'
        "\n"
        "  # Fires after 15 minutes at or above 850 cm"
    )
    assert expected in rendered
    assert load_config_text(rendered, "config.yaml").config.rules[1].cooldown.total_seconds() == 3600


def test_removed_key_is_deleted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    rule = editor.get_rule("manggarai-siaga-2")
    del rule["clear"]
    changes = editor.replace_rule("manggarai-siaga-2", rule)

    assert changes == ['clear {"below": 800, "for": "30m"} -> (none)']
    assert "    clear: {below: 800, for: 30m}\n" not in editor.render()
    assert editor.check() == []


# --- add, disable, devices ---------------------------------------------------------------------


def test_add_rule_appends_in_file_style(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    original = path.read_text(encoding="utf-8")
    editor = ConfigEditor.load(path)
    rule = {
        "id": "depok-siaga-1",
        "name": "Depok Siaga 1",
        "agency": "dinas-sda",
        "severity": "critical",
        "when": {"device": "depok", "metric": "level", "at_least": 350, "for": "10m"},
        "clear": {"below": 330, "for": "20m"},
        "schedule": {"days": ["mon", "tue"], "from": "06:00", "to": "18:00"},
        "cooldown": None,
        "then": [{"alert": {"message": "{rule.name}: {value} cm"}}, {"log": {"message": "on"}}],
    }

    editor.add_rule(rule)
    rendered = editor.render()

    expected_tail = (
        "  - id: depok-siaga-1\n"
        "    name: Depok Siaga 1\n"
        "    agency: dinas-sda\n"
        "    severity: critical\n"
        "    when: {device: depok, metric: level, at_least: 350, for: 10m}\n"
        "    clear: {below: 330, for: 20m}\n"
        '    schedule: {days: [mon, tue], from: "06:00", to: "18:00"}\n'
        "    then:\n"
        '      - alert: {message: "{rule.name}: {value} cm"}\n'
        '      - log: {message: "on"}\n'
    )
    assert rendered == original + expected_tail
    assert editor.changes == ["Add rule depok-siaga-1"]
    assert render_rule_yaml(rule) == "\n".join(line[4:] for line in expected_tail.splitlines()) + "\n"
    loaded = load_config_text(rendered, "config.yaml")
    assert loaded.problems == []
    added = loaded.config.rules[-1]
    assert added.then[1].log is not None
    assert added.then[1].log.message == "on"


def test_add_rule_with_used_id_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    with pytest.raises(InvalidItem) as raised:
        editor.add_rule(editor.get_rule("tps-penuh"))

    assert raised.value.message("en") == "a rule with id 'tps-penuh' already exists: choose another id"
    assert raised.value.message("id") == "sudah ada aturan dengan id 'tps-penuh': pilih id lain"
    assert editor.render() == editor.loaded_text


def test_missing_rule_is_item_not_found(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    with pytest.raises(ItemNotFound) as raised:
        editor.get_rule("tidak-ada")

    assert raised.value.message("id") == (
        "aturan 'tidak-ada' tidak ada di config.yaml: muat ulang halaman untuk melihat aturan terbaru"
    )
    with pytest.raises(ItemNotFound):
        editor.set_rule_enabled("tidak-ada", False)


def test_form_without_id_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    with pytest.raises(InvalidItem) as raised:
        editor.put_device({"name": "Tanpa id", "agency": "dlh", "kind": "waste_bin"})

    assert raised.value.message("en") == "the device has no id: fill in the id field"
    assert raised.value.message("id") == "perangkat belum punya id: isi kolom id"


def test_disable_rule_inserts_enabled_after_agency(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    assert editor.set_rule_enabled("tps-penuh", False) is True
    assert editor.set_rule_enabled("tps-penuh", False) is False

    assert "    agency: dlh\n    enabled: false\n    severity: low\n" in editor.render()
    assert editor.changes == ["Disable rule tps-penuh"]
    loaded = editor.validate()
    assert loaded.problems == []
    assert [rule.enabled for rule in loaded.config.rules if rule.id == "tps-penuh"] == [False]


def test_put_device_adds_then_changes(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    original = path.read_text(encoding="utf-8")
    editor = ConfigEditor.load(path)
    device = {
        "id": "tps-pasar-baru",
        "name": "TPS Pasar Baru",
        "agency": "dlh",
        "kind": "waste_bin",
        "location": {"lat": -6.16, "lon": 106.83},
        "tags": ["tps", "pasar"],
    }

    assert editor.put_device(device) == ["added"]
    manggarai = editor.get_device("manggarai")
    manggarai["attributes"]["siaga_2"] = 840
    assert editor.put_device(manggarai) == ["attributes.siaga_2 850 -> 840"]

    rendered = editor.render()
    added = (
        "  - {id: udara-terminal, name: Stasiun Udara Terminal, agency: dlh, kind: air_quality}\n"
        "  - id: tps-pasar-baru\n"
        "    name: TPS Pasar Baru\n"
        "    agency: dlh\n"
        "    kind: waste_bin\n"
        "    location: {lat: -6.16, lon: 106.83}\n"
        "    tags: [tps, pasar]\n"
        "\n"
        "sources:\n"
    )
    assert added in rendered
    assert "    attributes: {siaga_3: 750, siaga_2: 840, siaga_1: 950}\n" in rendered
    assert len(rendered.splitlines()) == len(original.splitlines()) + 6
    assert editor.changes == ["Add device tps-pasar-baru", "Change device manggarai: attributes.siaga_2 850 -> 840"]
    assert editor.check() == []


def test_text_read_as_boolean_is_quoted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    editor = ConfigEditor.load(path)

    device = editor.get_device("tps-stasiun")
    device["name"] = "yes"
    editor.put_device(device)

    assert '{id: tps-stasiun, name: "yes", agency: dlh' in editor.render()
    assert [d.name for d in editor.validate().config.devices if d.id == "tps-stasiun"] == ["yes"]


# --- saving ------------------------------------------------------------------------------------


def test_save_commits_only_config_with_staff_author(repo_config: Path) -> None:
    repo = repo_config.parent
    (repo / "notes.txt").write_text("staged by someone else\n")
    git(repo, "add", "notes.txt")
    before = head(repo)
    editor = ConfigEditor.load(repo_config)
    lower_threshold(editor)

    result = editor.save(author=SITI)

    assert result.saved is True
    assert result.commit == head(repo)
    assert result.commit != before
    assert result.changes == ["Change rule manggarai-siaga-2: when.at_least 850 -> 800"]
    assert "-    when: {device: manggarai, metric: level, at_least: 850, for: 15m}" in result.diff
    assert repo_config.read_text(encoding="utf-8") == result.text
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s") == (
        "Siti Rahma <siti.rahma@simpul.local>|Hub Operator <operator@dinas.example>|"
        "Change rule manggarai-siaga-2: when.at_least 850 -> 800\n"
    )
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["config.yaml"]
    assert git(repo, "status", "--porcelain").splitlines() == ["A  notes.txt"]
    assert load_config(repo_config).problems == []


def test_invalid_edit_writes_and_commits_nothing(repo_config: Path) -> None:
    repo = repo_config.parent
    original = repo_config.read_bytes()
    before = head(repo)
    editor = ConfigEditor.load(repo_config)
    lower_threshold(editor, "sepuluh")  # type: ignore[arg-type]

    with pytest.raises(ConfigInvalid) as raised:
        editor.save(author=SITI)

    problems = raised.value.problems
    assert [(problem.line, problem.path) for problem in problems] == [(154, "rules[2].when.at_least")]
    assert problems[0].format("en").startswith("config.yaml:154 rules[2].when.at_least: ")
    assert "sepuluh" in problems[0].format("id")
    assert raised.value.message("id").startswith("perubahan tidak disimpan karena config.yaml akan memiliki 1 masalah")
    assert repo_config.read_bytes() == original
    assert head(repo) == before
    assert git(repo, "status", "--porcelain") == ""


def test_changed_file_on_disk_is_a_conflict(repo_config: Path) -> None:
    repo = repo_config.parent
    before = head(repo)
    editor = ConfigEditor.load(repo_config)
    lower_threshold(editor)
    someone_else = repo_config.read_text(encoding="utf-8").replace("cooldown: 3h", "cooldown: 4h")
    repo_config.write_text(someone_else, encoding="utf-8")

    with pytest.raises(ConfigConflict) as raised:
        editor.save(author=SITI)

    assert raised.value.disk_text == someone_else
    assert raised.value.new_text == editor.render()
    assert "at_least: 800" in raised.value.new_text
    assert repo_config.read_text(encoding="utf-8") == someone_else
    assert head(repo) == before


def test_second_editor_conflicts_after_first_save(repo_config: Path) -> None:
    first = ConfigEditor.load(repo_config)
    second = ConfigEditor.load(repo_config)
    lower_threshold(first)
    second.set_rule_enabled("tps-offline", False)

    first.save(author=SITI)
    with pytest.raises(ConfigConflict):
        second.save(author=StaffMember(username="budi", full_name="Budi Santoso"))

    assert "enabled: false" not in repo_config.read_text(encoding="utf-8")
    assert len(list_config_commits(repo_config)) == 2


def test_save_without_changes_writes_nothing(repo_config: Path) -> None:
    repo = repo_config.parent
    before = head(repo)
    editor = ConfigEditor.load(repo_config)

    result = editor.save(author=SITI)

    assert result.saved is False
    assert result.commit is None
    assert head(repo) == before


def test_file_outside_git_is_written_with_mode(tmp_path: Path) -> None:
    assert subprocess.run(["git", "rev-parse"], cwd=tmp_path, capture_output=True).returncode != 0
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    os.chmod(path, 0o640)
    editor = ConfigEditor.load(path)
    editor.set_rule_enabled("tps-offline", False)

    result = editor.save(author=SITI)

    assert result.commit is None
    assert result.changes == ["Disable rule tps-offline"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text(encoding="utf-8") == result.text
    assert [entry.name for entry in tmp_path.iterdir()] == ["config.yaml"]


def test_commit_without_git_user_uses_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    path = make_repo(tmp_path / "repo", user=False)
    git(path.parent, "config", "user.useConfigOnly", "true")
    editor = ConfigEditor.load(path)
    lower_threshold(editor)

    result = editor.save(author=SITI)

    assert result.commit is not None
    assert git(path.parent, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "Siti Rahma <siti.rahma@simpul.local>|Simpul <simpul@simpul.local>\n"
    )


def test_git_dir_variable_cannot_redirect_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_repo(tmp_path / "repo")
    other = tmp_path / "other"
    make_repo(other)
    other_head = head(other)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    editor = ConfigEditor.load(path)
    lower_threshold(editor)

    result = editor.save(author=SITI)

    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert result.commit == head(path.parent)
    assert head(other) == other_head


def test_failed_commit_restores_file(repo_config: Path) -> None:
    repo = repo_config.parent
    original = repo_config.read_bytes()
    before = head(repo)
    # A lock file of another git process on the index makes `git add` fail.
    (repo / ".git" / "index.lock").write_text("")
    editor = ConfigEditor.load(repo_config)
    lower_threshold(editor)

    with pytest.raises(ConfigGitError) as raised:
        editor.save(author=SITI)

    assert "index.lock': File exists" in raised.value.message("en")
    assert repo_config.read_bytes() == original
    (repo / ".git" / "index.lock").unlink()
    assert head(repo) == before


def test_save_records_audit_entry(repo_config: Path, db: DbEngine) -> None:
    editor = ConfigEditor.load(repo_config)
    lower_threshold(editor)
    editor.set_rule_enabled("tps-offline", False)

    result = editor.save(author=SITI, db=db)

    with Session(db) as session:
        entries = session.execute(select(AuditEntry)).scalars().all()
    assert result.audited is True
    assert [(entry.actor, entry.action, entry.target) for entry in entries] == [
        ("siti.rahma", "config_changed", "config.yaml")
    ]
    detail = entries[0].detail
    assert detail["commit"] == result.commit
    assert detail["diff"] == result.diff
    assert detail["changes"] == [
        "Change rule manggarai-siaga-2: when.at_least 850 -> 800",
        "Disable rule tps-offline",
    ]


def test_long_change_list_gets_short_subject(repo_config: Path) -> None:
    repo = repo_config.parent
    editor = ConfigEditor.load(repo_config)
    lower_threshold(editor)
    editor.set_rule_enabled("tps-offline", False)

    editor.save(author=SITI)

    assert git(repo, "log", "-1", "--format=%s%n%b") == (
        "Change rule manggarai-siaga-2 and 1 more changes\n"
        "- Change rule manggarai-siaga-2: when.at_least 850 -> 800\n"
        "- Disable rule tps-offline\n"
        "\n"
        "Saved in Simpul by Siti Rahma (siti.rahma).\n"
        "\n"
    )


# --- history -----------------------------------------------------------------------------------


def test_list_config_commits_newest_first(repo_config: Path) -> None:
    editor = ConfigEditor.load(repo_config)
    lower_threshold(editor)
    first = editor.save(author=SITI)
    editor.set_rule_enabled("tps-offline", False)
    second = editor.save(author=StaffMember(username="budi", full_name="Budi Santoso"))

    commits = list_config_commits(repo_config)

    assert [commit.id for commit in commits[:2]] == [second.commit, first.commit]
    assert [commit.message.splitlines()[0] for commit in commits] == [
        "Disable rule tps-offline",
        "Change rule manggarai-siaga-2: when.at_least 850 -> 800",
        "Add config",
    ]
    assert [commit.author_email for commit in commits] == [
        "budi@simpul.local",
        "siti.rahma@simpul.local",
        "setup@example.invalid",
    ]
    assert commits[0].author_name == "Budi Santoso"
    assert commits[0].authored_at.tzinfo is not None
    assert "+    enabled: false" in commits[0].diff
    assert "-    when: {device: manggarai, metric: level, at_least: 850, for: 15m}" in commits[1].diff
    assert list_config_commits(repo_config, limit=1)[0].id == second.commit


def test_list_config_commits_outside_git_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)

    assert list_config_commits(path) == []


def test_staff_member_rejects_unsafe_names() -> None:
    with pytest.raises(InvalidItem) as raised:
        StaffMember(username="siti rahma", full_name="Siti Rahma")
    assert raised.value.message("en").startswith("invalid user name 'siti rahma'")

    with pytest.raises(InvalidItem):
        StaffMember(username="siti", full_name="Siti <root@example>")


SECTION_AFTER_RULES = """\
agencies: [{id: dlh, name: DLH}]
kinds:
  waste_bin:
    metrics:
      fill: {unit: "%", min: 0, max: 100}
rules:
  - id: penuh
    name: Penuh
    agency: dlh
    when: {kind: waste_bin, metric: fill, above: 90}
    then:
      - log: {message: "penuh"}

# Bins of the market.
devices:
  - {id: tps-a, name: TPS A, agency: dlh, kind: waste_bin}
"""


def test_appended_items_stay_inside_their_section(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SECTION_AFTER_RULES, encoding="utf-8")
    editor = ConfigEditor.load(path)

    editor.add_rule(
        {
            "id": "kosong",
            "name": "Kosong",
            "agency": "dlh",
            "when": {"kind": "waste_bin", "metric": "fill", "below": 5},
            "then": [{"log": {"message": "kosong"}}],
        }
    )
    rule = editor.get_rule("kosong")
    rule["then"].append({"log": {"message": "dua"}})
    editor.replace_rule("kosong", rule)

    rendered = editor.render()
    assert rendered.endswith(
        "  - id: kosong\n"
        "    name: Kosong\n"
        "    agency: dlh\n"
        "    when: {kind: waste_bin, metric: fill, below: 5}\n"
        "    then:\n"
        "      - log: {message: kosong}\n"
        "      - log: {message: dua}\n"
        "\n"
        "# Bins of the market.\n"
        "devices:\n"
        "  - {id: tps-a, name: TPS A, agency: dlh, kind: waste_bin}\n"
    )
    assert editor.check() == []


def test_invalid_yaml_cannot_be_edited(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("rules:\n  - id: a\n    id: b\n", encoding="utf-8")

    with pytest.raises(ConfigUnreadable) as raised:
        ConfigEditor.load(path)

    assert raised.value.message("id").startswith("config.yaml tidak dapat diubah di sini karena tidak valid: ")
    assert raised.value.message("en").endswith("Fix it by hand: 'python hub.py check' lists its problems")


def test_rule_model_replaces_rule(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(ROOT / "tests" / "fixtures" / "kota.yaml", path)
    original = path.read_text(encoding="utf-8")
    editor = ConfigEditor.load(path)
    rule = next(rule for rule in editor.validate().config.rules if rule.id == "manggarai-siaga-2")
    lower = rule.model_copy(update={"when": rule.when.model_copy(update={"at_least": 800.0})})

    changes = editor.replace_rule("manggarai-siaga-2", lower)

    assert changes == ["when.at_least 850 -> 800"]
    assert changed_lines(original, editor.render()) == [(THRESHOLD_LINE, THRESHOLD_LINE.replace("850", "800"))]


def test_parsed_snapshot_detects_later_change(repo_config: Path) -> None:
    snapshot = repo_config.read_bytes()
    current = ConfigEditor.parse(repo_config, snapshot)
    lower_threshold(current)
    current.save(author=SITI)

    stale = ConfigEditor.parse(repo_config, snapshot)
    stale.set_rule_enabled("tps-offline", False)

    with pytest.raises(ConfigConflict) as raised:
        stale.save(author=SITI)
    assert raised.value.disk_text == repo_config.read_text(encoding="utf-8")
    assert "at_least: 800" in raised.value.disk_text
    assert len(list_config_commits(repo_config)) == 2


def test_appended_rule_after_end_of_line_comment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = SECTION_AFTER_RULES.replace(
        '      - log: {message: "penuh"}\n', '      - log: {message: "penuh"}\n    cooldown: 6h     # one job per bin\n'
    )
    path.write_text(text, encoding="utf-8")
    editor = ConfigEditor.load(path)
    assert editor.render() == text

    editor.add_rule({"id": "kosong", "name": "Kosong", "agency": "dlh", "when": {"kind": "waste_bin", "offline": "1h"}})

    assert editor.render() == text.replace(
        "    cooldown: 6h     # one job per bin\n",
        "    cooldown: 6h     # one job per bin\n"
        "  - id: kosong\n"
        "    name: Kosong\n"
        "    agency: dlh\n"
        "    when: {kind: waste_bin, offline: 1h}\n",
    )
    assert editor.check() == []
