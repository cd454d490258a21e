"""Loading config.yaml: YAML errors, line numbers, key paths, and skipping bad items."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rules.config import HttpSource
from rules.loader import LoadedConfig, load_config, load_config_text
from rules.problems import Problem

# 15 lines, so the first rule appended after "rules:" is on line 17.
BASE = """\
agencies:
  - id: dinas-sda
    name: Dinas Sumber Daya Air
    teams:
      - {id: tim-pompa, name: Tim Pompa}
kinds:
  water_level:
    metrics:
      level: {unit: cm, min: 0, max: 1500}
  pump:
    metrics:
      state: {states: ["on", "off"]}
devices:
  - {id: katulampa, name: Katulampa, agency: dinas-sda, kind: water_level, attributes: {siaga_2: 150}}
  - {id: manggarai, name: Manggarai, agency: dinas-sda, kind: water_level, attributes: {siaga_2: 850}}
"""


def load_rules(rules: str) -> LoadedConfig:
    return load_config_text(BASE + "rules:\n" + rules, "config.yaml")


def summary(problems: list[Problem]) -> list[tuple[str, int | None, str, str]]:
    return [(problem.file, problem.line, problem.path, problem.code) for problem in problems]


def test_valid_config_has_no_problems() -> None:
    loaded = load_config_text(
        BASE
        + "rules:\n  - {id: r1, name: R1, agency: dinas-sda, when: {device: manggarai, metric: level, above: 850}}\n",
        "config.yaml",
    )

    assert loaded.problems == []
    assert [rule.id for rule in loaded.config.rules] == ["r1"]
    assert [device.id for device in loaded.config.devices] == ["katulampa", "manggarai"]
    assert loaded.path == Path("config.yaml")


def test_yaml_syntax_error_is_one_problem() -> None:
    loaded = load_config_text("simpul:\n  language: id\n\tport: 8080\n", "config.yaml")

    assert summary(loaded.problems) == [("config.yaml", 3, "", "yaml_tab")]
    assert loaded.config.rules == []


@pytest.mark.parametrize(
    ("text", "line", "code"),
    [
        ("rules:\n  - id: a\n    name: b\n   when: {}\n", 4, "yaml_indentation"),
        ('simpul:\n  language: "id\n  port: 1\n', 2, "yaml_unclosed_quote"),
        ("sources:\n  - id: gateway\n    auth: {token: ${SIMPUL_GATEWAY_TOKEN}}\n", 3, "yaml_flow"),
        ("simpul:\n  language: id: en\n", 2, "yaml_mapping_value"),
        ("simpul: {}\n---\nrules: []\n", 2, "yaml_multiple_documents"),
        ("rules: *missing\n", 1, "yaml_undefined_alias"),
        ("simpul: {language: !!python/name:os.system id}\n", 1, "yaml_syntax"),
    ],
)
def test_yaml_errors_have_code_and_line(text: str, line: int, code: str) -> None:
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [("config.yaml", line, "", code)]


def test_deeply_nested_yaml_is_one_problem() -> None:
    loaded = load_config_text("rules: " + "[" * 5000 + "]" * 5000 + "\n", "config.yaml")

    assert summary(loaded.problems) == [("config.yaml", None, "", "yaml_too_deep")]


def test_yaml_error_message_in_both_languages() -> None:
    problem = load_config_text("simpul:\n\tlanguage: id\n", "config.yaml").problems[0]

    assert problem.format("en") == "config.yaml:2: a tab character is used for indentation: YAML allows spaces only"
    assert problem.format("id") == "config.yaml:2: ada karakter tab untuk indentasi: YAML hanya menerima spasi"


def test_unknown_key_suggests_nearest() -> None:
    loaded = load_rules(
        "  - {id: r1, name: R1, agency: dinas-sda, when: {device: manggarai, metric: level, abve: 850}}\n"
    )

    assert summary(loaded.problems) == [("config.yaml", 17, "rules[0].when.abve", "unknown_key")]
    problem = loaded.problems[0]
    assert problem.params == {"key": "abve", "suggestion": "above"}
    assert problem.message("en") == "unknown key 'abve'. Did you mean 'above'?"
    assert problem.message("id") == "kunci 'abve' tidak dikenal. Mungkin maksud Anda 'above'?"


def test_unknown_key_uses_yaml_aliases() -> None:
    loaded = load_rules(
        "  - {id: r1, name: R1, agency: dinas-sda, when: {device: manggarai, metric: level, above: 1, fro: 5m}}\n"
    )

    assert loaded.problems[0].params == {"key": "fro", "suggestion": "for"}


def test_unknown_section_suggests_nearest() -> None:
    loaded = load_config_text("rule:\n  - id: r1\n", "config.yaml")

    assert summary(loaded.problems) == [("config.yaml", 1, "rule", "unknown_key")]
    assert loaded.problems[0].params == {"key": "rule", "suggestion": "rules"}


def test_wrong_type_names_value_in_both_languages() -> None:
    rule = """\
  - id: r1
    name: R1
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: sepuluh}
"""
    loaded = load_rules(rule)

    assert summary(loaded.problems) == [("config.yaml", 20, "rules[0].when.above", "wrong_type")]
    problem = loaded.problems[0]
    assert problem.format("en") == (
        "config.yaml:20 rules[0].when.above: expected a number or {attribute: NAME}, got 'sepuluh'"
    )
    assert problem.format("id") == (
        "config.yaml:20 rules[0].when.above: nilai harus berupa angka atau {attribute: NAMA}, bukan 'sepuluh'"
    )


def test_line_points_at_the_nested_key() -> None:
    rule = """\
  - id: r1
    name: R1
    agency: dinas-sda
    when:
      device: manggarai
      metric: level
      above: 850
      for: 15
"""
    loaded = load_rules(rule)

    assert summary(loaded.problems) == [("config.yaml", 24, "rules[0].when.for", "duration_without_unit")]
    assert loaded.problems[0].message("en") == "duration 15 has no unit: add one, e.g. 15m or 15s"
    assert loaded.problems[0].message("id") == (
        "durasi 15 belum punya satuan: tambahkan satuan, misalnya 15m (menit) atau 15s (detik)"
    )


def test_missing_key_points_at_its_block() -> None:
    loaded = load_rules("  - id: r1\n    agency: dinas-sda\n    when: {device: manggarai, metric: level, above: 1}\n")

    assert summary(loaded.problems) == [("config.yaml", 17, "rules[0].name", "missing")]
    assert loaded.problems[0].format("id") == "config.yaml:17 rules[0].name: wajib diisi, tetapi belum ada"


def test_bad_rule_is_skipped_and_others_kept() -> None:
    rules = """\
  - {id: r1, name: R1, agency: dinas-sda, when: {device: manggarai, metric: level, above: 850}}
  - {id: r2, name: R2, agency: dinas-sda, when: {device: manggarai, metric: level, above: tinggi}}
  - {id: r3, name: R3, agency: dinas-sda, when: {device: katulampa, metric: level, above: 150}}
"""
    loaded = load_rules(rules)

    assert summary(loaded.problems) == [("config.yaml", 18, "rules[1].when.above", "wrong_type")]
    assert [rule.id for rule in loaded.config.rules] == ["r1", "r3"]


def test_bad_device_is_skipped_with_its_rules() -> None:
    text = BASE.replace("attributes: {siaga_2: 850}", "attributes: {siaga_2: 850}, enabled: maybe")
    rules = """\
rules:
  - {id: r1, name: R1, agency: dinas-sda, when: {device: manggarai, metric: level, above: 850}}
  - {id: r2, name: R2, agency: dinas-sda, when: {device: katulampa, metric: level, above: 150}}
"""
    loaded = load_config_text(text + rules, "config.yaml")

    assert summary(loaded.problems) == [
        ("config.yaml", 15, "devices[1].enabled", "wrong_type"),
        ("config.yaml", 17, "rules[0].when.device", "skipped_reference"),
    ]
    assert [device.id for device in loaded.config.devices] == ["katulampa"]
    assert [rule.id for rule in loaded.config.rules] == ["r2"]
    assert loaded.problems[1].message("en") == (
        "device 'manggarai' has errors of its own and was skipped, so this is skipped too"
    )


def test_settings_fall_back_per_key() -> None:
    text = "simpul:\n  language: en\n  timezone: Asia/Jakrta\n  port: 99999\n"
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [
        ("config.yaml", 3, "simpul.timezone", "unknown_timezone"),
        ("config.yaml", 4, "simpul.port", "less_than_equal"),
    ]
    settings = loaded.config.simpul
    assert settings.language == "en"
    assert settings.timezone == "Asia/Jakarta"
    assert settings.port == 8080


def test_times_of_day_stay_text() -> None:
    rule = (
        "  - {id: r1, name: R1, agency: dinas-sda, when: {device: manggarai, metric: level, above: 1},"
        " schedule: {from: 06:00, to: 18:00}}\n"
    )
    loaded = load_rules(rule)

    assert loaded.problems == []
    schedule = loaded.config.rules[0].schedule
    assert schedule is not None
    assert (schedule.from_, schedule.to) == ("06:00", "18:00")


def test_key_written_twice_is_reported() -> None:
    rule = """\
  - id: r1
    name: R1
    agency: dinas-sda
    when: {device: manggarai, metric: level, above: 850}
    name: R1 lagi
"""
    loaded = load_rules(rule)

    assert summary(loaded.problems) == [("config.yaml", 21, "rules[0].name", "duplicate_key")]
    assert loaded.problems[0].message("en") == "key 'name' appears twice in this block (first on line 18): keep one"
    assert loaded.config.rules == []


def test_merged_keys_take_the_anchor_line() -> None:
    text = """\
agencies:
  - &sda
    id: dinas-sda
    name: Dinas SDA
    timezone: Asia/Jakrta
  - <<: *sda
    id: bpbd
"""
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [
        ("config.yaml", 5, "agencies[0].timezone", "unknown_timezone"),
        ("config.yaml", 5, "agencies[1].timezone", "unknown_timezone"),
    ]


def test_environment_reference_stays_a_reference() -> None:
    text = "sources:\n  - id: gateway\n    type: http\n    auth:\n      token: ${SIMPUL_GATEWAY_TOKEN}\n"
    loaded = load_config_text(text, "config.yaml")

    assert loaded.problems == []
    source = loaded.config.sources[0]
    assert isinstance(source, HttpSource)
    assert source.auth.token is not None
    assert source.auth.token.env == "SIMPUL_GATEWAY_TOKEN"


def test_empty_file_is_empty_config() -> None:
    loaded = load_config_text("# nothing yet\n", "config.yaml")

    assert loaded.problems == []
    assert loaded.config.agencies == []
    assert loaded.config.simpul.language == "id"


def test_top_level_list_is_wrong_type() -> None:
    loaded = load_config_text("- agencies\n- rules\n", "config.yaml")

    assert summary(loaded.problems) == [("config.yaml", 1, "", "wrong_type")]
    assert (
        loaded.problems[0].format("en") == "config.yaml:1: expected a block of key: value pairs, got [agencies, rules]"
    )


def test_section_of_wrong_type_is_reported() -> None:
    loaded = load_config_text("agencies:\n  id: bpbd\nkinds: [water_level]\n", "config.yaml")

    assert summary(loaded.problems) == [
        ("config.yaml", 1, "agencies", "wrong_type"),
        ("config.yaml", 3, "kinds", "wrong_type"),
    ]
    assert loaded.problems[0].message("id") == "nilai harus berupa daftar (list), bukan {id: bpbd}"


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("simpul:\n  language: fr\n", encoding="utf-8")

    loaded = load_config(path)

    assert summary(loaded.problems) == [(str(path), 2, "simpul.language", "invalid_choice")]
    assert loaded.problems[0].message("en") == "invalid value 'fr': use one of id, en"
    assert loaded.path == path


def test_missing_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "tidak-ada.yaml"

    loaded = load_config(path)

    assert summary(loaded.problems) == [(str(path), None, "", "file_not_found")]
    assert loaded.problems[0].format("en") == f"{path}: file not found: check the path"


def test_file_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes("simpul:\n  language: id\n# Dinas Pekerjaan Umum \u2013 bidang air\n".encode("cp1252"))

    loaded = load_config(path)

    assert summary(loaded.problems) == [(str(path), None, "", "file_encoding")]


def test_problems_are_sorted_by_line() -> None:
    rules = """\
  - {id: r1, name: R1, agency: dinas-sda, when: {device: manggarai, metric: level, above: x}}
  - {id: r2, name: R2, agency: nowhere, when: {device: manggarai, metric: level, above: 1}}
"""
    text = "simpul:\n  port: x\n" + BASE + "rules:\n" + rules
    loaded = load_config_text(text, "config.yaml")

    assert [problem.line for problem in loaded.problems] == [2, 19, 20]


def test_durations_are_parsed() -> None:
    rule = (
        "  - {id: r1, name: R1, agency: dinas-sda, cooldown: 1h30m, when: {device: manggarai, metric: level, above: 1}}"
    )
    loaded = load_rules(rule + "\n")

    assert loaded.problems == []
    assert loaded.config.rules[0].cooldown == timedelta(hours=1, minutes=30)
