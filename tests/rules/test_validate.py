"""Whole-config checks: references between items, rule semantics, duplicates, secrets, messages."""

from __future__ import annotations

import re
import string

import pytest

from rules.i18n import LANGUAGES, MESSAGES, add_messages, translate
from rules.loader import LoadedConfig, load_config_text
from rules.problems import Problem

# 19 lines, so the first rule appended after "rules:" is on line 21.
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
  waste_bin:
    metrics:
      fill: {unit: "%", min: 0, max: 100}
devices:
  - {id: katulampa, name: Katulampa, agency: dinas-sda, kind: water_level, tags: [hulu], attributes: {siaga_2: 150}}
  - {id: manggarai, name: Manggarai, agency: dinas-sda, kind: water_level, attributes: {siaga_2: "850"}}
  - {id: pompa-1, name: Pompa 1, agency: dinas-sda, kind: pump}
"""
FIRST_RULE_LINE = 21


def load_rules(rules: str) -> LoadedConfig:
    return load_config_text(BASE + "rules:\n" + rules, "config.yaml")


def rule(when: str, extra: str = "", rule_id: str = "r1") -> str:
    """Return one rule as a single YAML line, so that rule i sits on FIRST_RULE_LINE + i."""
    return f"  - {{id: {rule_id}, name: R1, agency: dinas-sda, when: {{{when}}}{extra}}}\n"


def summary(problems: list[Problem]) -> list[tuple[int | None, str, str]]:
    return [(problem.line, problem.path, problem.code) for problem in problems]


# --- references ---------------------------------------------------------------------------------


def test_unknown_device_suggests_nearest() -> None:
    loaded = load_rules(rule("device: manggari, metric: level, above: 850"))

    assert summary(loaded.problems) == [(FIRST_RULE_LINE, "rules[0].when.device", "unknown_device")]
    problem = loaded.problems[0]
    assert problem.message("en") == "device 'manggari' is not defined under devices. Did you mean 'manggarai'?"
    assert problem.message("id") == "perangkat 'manggari' tidak ada di devices. Mungkin maksud Anda 'manggarai'?"
    assert loaded.config.rules == []


def test_unknown_kind_agency_and_tag() -> None:
    rules = (
        rule("kind: water_levl, metric: level, above: 1", rule_id="r1")
        + rule("agency: bpbd, metric: level, above: 1", rule_id="r2")
        + rule("tag: hilir, metric: level, above: 1", rule_id="r3")
    )
    loaded = load_rules(rules)

    assert summary(loaded.problems) == [
        (21, "rules[0].when.kind", "unknown_kind"),
        (22, "rules[1].when.agency", "unknown_agency"),
        (23, "rules[2].when.tag", "unknown_tag"),
    ]
    assert loaded.problems[0].params == {"id": "water_levl", "suggestion": "water_level"}


def test_selector_matching_no_device() -> None:
    loaded = load_rules(rule("kind: waste_bin, metric: fill, above: 90"))

    assert summary(loaded.problems) == [(21, "rules[0].when", "no_device_matches")]
    assert loaded.problems[0].message("id") == "tidak ada perangkat yang cocok dengan pemilih (selector) aturan ini"


def test_metric_must_exist_in_kind() -> None:
    loaded = load_rules(rule("device: pompa-1, metric: level, above: 1"))

    assert summary(loaded.problems) == [(21, "rules[0].when.metric", "unknown_metric")]
    assert loaded.problems[0].message("en") == "kind 'pump' has no metric 'level' (its metrics: state)"
    assert loaded.problems[0].message("id") == (
        "jenis perangkat 'pump' tidak punya metrik 'level' (metrik yang ada: state)"
    )


def test_attribute_threshold_must_be_numeric_on_every_device() -> None:
    loaded = load_rules(rule("kind: water_level, metric: level, at_least: {attribute: siaga_2}"))

    assert summary(loaded.problems) == [(21, "rules[0].when.at_least.attribute", "attribute_not_numeric")]
    assert loaded.problems[0].message("en") == "attribute 'siaga_2' must be a number on device manggarai"


def test_attribute_threshold_must_exist_on_every_device() -> None:
    loaded = load_rules(rule("kind: water_level, metric: level, above: {attribute: siaga_1}"))

    assert summary(loaded.problems) == [(21, "rules[0].when.above.attribute", "missing_attribute")]
    assert loaded.problems[0].params["devices"] == ["katulampa", "manggarai"]
    assert loaded.problems[0].message("id") == "atribut 'siaga_1' tidak ada pada perangkat katulampa, manggarai"


def test_context_device_and_metric_are_checked() -> None:
    extra = (
        ", and: [{device: katulampa, metric: lvl, at_least: 150, max_age: 2h},"
        " {device: depok, metric: level, above: 1, max_age: 1h}]"
    )
    loaded = load_rules(rule("device: katulampa, metric: level, above: 1", extra))

    assert summary(loaded.problems) == [
        (21, "rules[0].and[0].metric", "unknown_metric"),
        (21, "rules[0].and[1].device", "unknown_device"),
    ]
    assert loaded.problems[0].params["suggestion"] == "level"


def test_dispatch_team_and_webhook_target_must_exist() -> None:
    extra = ", then: [{dispatch: {team: tim-pmpa, title: Cek}}, {webhook: {target: posko}}]"
    loaded = load_rules(rule("device: katulampa, metric: level, above: 1", extra))

    assert summary(loaded.problems) == [
        (21, "rules[0].then[0].dispatch.team", "unknown_team"),
        (21, "rules[0].then[1].webhook.target", "unknown_webhook"),
    ]
    assert loaded.problems[0].params == {"id": "tim-pmpa", "suggestion": "tim-pompa"}


def test_device_with_unknown_agency_and_kind() -> None:
    text = BASE + "  - {id: tps-1, name: TPS 1, agency: dlh, kind: tempat_sampah}\n"
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [
        (20, "devices[3].agency", "unknown_agency"),
        (20, "devices[3].kind", "unknown_kind"),
    ]
    assert [device.id for device in loaded.config.devices] == ["katulampa", "manggarai", "pompa-1"]


def test_rule_on_device_of_skipped_agency_is_skipped() -> None:
    text = BASE.replace("name: Dinas Sumber Daya Air", "name: Dinas Sumber Daya Air\n    timezone: WIB")
    text += "rules:\n" + rule("device: katulampa, metric: level, above: 1")
    loaded = load_config_text(text, "config.yaml")

    assert [(problem.path, problem.code) for problem in loaded.problems] == [
        ("agencies[0].timezone", "unknown_timezone"),
        ("devices[0].agency", "skipped_reference"),
        ("devices[1].agency", "skipped_reference"),
        ("devices[2].agency", "skipped_reference"),
        ("rules[0].agency", "skipped_reference"),
        ("rules[0].when.device", "skipped_reference"),
    ]
    assert loaded.problems[0].message("en") == (
        "unknown time zone 'WIB': use an IANA name such as Asia/Jakarta (WIB), Asia/Makassar (WITA) "
        "or Asia/Jayapura (WIT)"
    )
    assert loaded.config.devices == []
    assert loaded.config.rules == []


def test_file_and_simulated_sources_name_known_devices() -> None:
    sources = """\
sources:
  - {id: simulasi, type: simulated, devices: [katulampa, depok]}
  - id: arsip
    type: file
    layout: wide
    timestamp: {column: waktu}
    columns:
      - {column: tma_katulampa, device: katulampa, metric: levl}
"""
    loaded = load_config_text(BASE + sources, "config.yaml")

    assert summary(loaded.problems) == [
        (21, "sources[0].devices[1]", "unknown_device"),
        (27, "sources[1].columns[0].metric", "unknown_metric"),
    ]
    assert loaded.config.sources == []


# --- comparisons against the metric ---------------------------------------------------------------


def test_numeric_comparison_on_state_metric() -> None:
    loaded = load_rules(rule("device: pompa-1, metric: state, above: 1"))

    assert summary(loaded.problems) == [(21, "rules[0].when.above", "numeric_on_state")]
    assert loaded.problems[0].message("en") == (
        "metric 'state' has states (on, off), so compare it with equals or not_equals"
    )


def test_equals_value_not_in_states() -> None:
    loaded = load_rules(rule("device: pompa-1, metric: state, equals: mati"))

    assert summary(loaded.problems) == [(21, "rules[0].when.equals", "unknown_state")]
    assert loaded.problems[0].message("id") == "'mati' bukan status dari metrik 'state' (status yang ada: on, off)"


def test_bare_off_reads_as_state() -> None:
    loaded = load_rules(rule("device: pompa-1, metric: state, equals: off"))

    assert loaded.problems == []
    assert loaded.config.rules[0].when.equals == "off"


def test_text_equals_on_numeric_metric() -> None:
    loaded = load_rules(rule("device: katulampa, metric: level, equals: tinggi"))

    assert summary(loaded.problems) == [(21, "rules[0].when.equals", "state_on_numeric")]


def test_trigger_outside_metric_range() -> None:
    loaded = load_rules(rule("device: katulampa, metric: level, above: 1500"))

    assert summary(loaded.problems) == [(21, "rules[0].when", "outside_range")]
    assert loaded.problems[0].message("en") == (
        "this condition can never hold, because metric 'level' only ranges from 0 to 1500"
    )


def test_clear_outside_metric_range() -> None:
    loaded = load_rules(rule("device: katulampa, metric: level, above: 850", ", clear: {below: 0, for: 30m}"))

    assert summary(loaded.problems) == [(21, "rules[0].clear", "outside_range")]


def test_clear_state_not_in_states() -> None:
    loaded = load_rules(rule("device: pompa-1, metric: state, equals: off", ", clear: {equals: nyala}"))

    assert summary(loaded.problems) == [(21, "rules[0].clear.equals", "unknown_state")]


@pytest.mark.parametrize(
    ("trigger", "clear"),
    [
        ("above: 850", "above: 900"),
        ("above: 850", "at_least: 851"),
        ("at_least: 850", "between: [900, 1000]"),
        ("below: 100", "below: 50"),
        ("at_least: {attribute: siaga_2}", "above: 200"),
    ],
)
def test_clear_implying_trigger_is_reported(trigger: str, clear: str) -> None:
    loaded = load_rules(rule(f"device: katulampa, metric: level, {trigger}", f", clear: {{{clear}}}"))

    assert summary(loaded.problems) == [(21, "rules[0].clear", "clear_implies_trigger")]


def test_clear_implying_state_trigger_is_reported() -> None:
    loaded = load_rules(rule('device: pompa-1, metric: state, equals: "off"', ', clear: {not_equals: "on"}'))

    assert summary(loaded.problems) == [(21, "rules[0].clear", "clear_implies_trigger")]


@pytest.mark.parametrize(
    ("trigger", "clear"),
    [
        ("above: 850", "below: 800"),
        ("above: 850", "at_most: 850"),
        ("at_least: {attribute: siaga_2}", "below: {attribute: siaga_2}"),
        ("above: 850", "for: 30m"),
        ("change: {over: 1h, above: 20}", "below: 100"),
    ],
)
def test_clear_on_other_side_is_accepted(trigger: str, clear: str) -> None:
    loaded = load_rules(rule(f"device: katulampa, metric: level, {trigger}", f", clear: {{{clear}}}"))

    assert loaded.problems == []
    assert len(loaded.config.rules) == 1


def test_message_template_fields_are_checked() -> None:
    extra = ', then: [{alert: {message: "{value} cm di {devce.name}"}}, {log: {message: "{rule.name"}}]'
    loaded = load_rules(rule("device: katulampa, metric: level, above: 1", extra))

    assert summary(loaded.problems) == [
        (21, "rules[0].then[0].alert.message", "unknown_template_field"),
        (21, "rules[0].then[1].log.message", "invalid_template"),
    ]
    assert loaded.problems[0].message("en") == (
        "the message uses {devce.name}, which does not exist: use value, unit, metric, ts, device.name, "
        "device.attributes.NAME or rule.name. Did you mean 'device.name'?"
    )


def test_model_errors_keep_their_simpul_code() -> None:
    loaded = load_rules(rule("device: katulampa, metric: level, above: 900, below: 800"))

    assert summary(loaded.problems) == [(21, "rules[0].when", "empty_range")]
    assert loaded.problems[0].message("id") == (
        "batas atas (800.0) tidak lebih besar dari batas bawah (900.0), jadi tidak ada nilai yang memenuhi "
        "keduanya. Untuk 'di atas X atau di bawah Y', buat dua aturan"
    )


# --- duplicates ---------------------------------------------------------------------------------


def test_duplicate_rule_id_keeps_the_first() -> None:
    rules = rule("device: katulampa, metric: level, above: 1") + rule("device: manggarai, metric: level, above: 2")
    loaded = load_rules(rules)

    assert summary(loaded.problems) == [(22, "rules[1].id", "duplicate_id")]
    assert loaded.problems[0].message("en") == "id 'r1' is already used on line 21: each id must be unique"
    assert [r.when.device for r in loaded.config.rules] == ["katulampa"]


def test_duplicate_device_id() -> None:
    text = BASE + "  - {id: pompa-1, name: Pompa lain, agency: dinas-sda, kind: pump}\n"
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [(20, "devices[3].id", "duplicate_id")]
    assert [device.name for device in loaded.config.devices] == ["Katulampa", "Manggarai", "Pompa 1"]


def test_team_ids_unique_across_agencies() -> None:
    text = BASE.replace(
        "kinds:\n",
        "  - id: bpbd\n    name: BPBD\n    teams:\n      - {id: tim-pompa, name: Tim Pompa BPBD}\n"
        "      - {id: trc, name: TRC}\nkinds:\n",
    )
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [(9, "agencies[1].teams[0].id", "duplicate_team")]
    assert [team.id for team in loaded.config.agencies[1].teams] == ["trc"]
    assert loaded.problems[0].message("en") == (
        "team 'tim-pompa' already exists on line 5: team ids must be unique across all agencies, "
        "because dispatch names a team by its id"
    )


# --- secrets ------------------------------------------------------------------------------------


def test_literal_secret_is_reported_without_its_value() -> None:
    text = "sources:\n  - id: gateway\n    type: http\n    auth: {token: rahasia-123}\n"
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [(4, "sources[0].auth.token", "literal_secret")]
    for language in LANGUAGES:
        assert "rahasia-123" not in loaded.problems[0].format(language)
    assert loaded.config.sources == []


def test_secret_named_key_anywhere_must_be_a_reference() -> None:
    text = BASE.replace(
        "kind: pump}", 'kind: pump, attributes: {api_key: abc123, admin_password: "${POMPA_PASSWORD}"}}'
    )
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [(19, "devices[2].attributes.api_key", "literal_secret")]
    assert [device.id for device in loaded.config.devices] == ["katulampa", "manggarai"]


def test_secret_of_wrong_type_hides_its_value() -> None:
    text = "webhooks:\n  - {id: posko, url: 'http://127.0.0.1:9000/', secret: [abc123]}\n"
    loaded = load_config_text(text, "config.yaml")

    assert summary(loaded.problems) == [(2, "webhooks[0].secret", "wrong_type")]
    assert loaded.problems[0].message("en") == (
        "expected an environment variable reference such as ${SIMPUL_GATEWAY_TOKEN}, got ***"
    )


def test_keys_ending_in_token_words_only() -> None:
    text = BASE.replace("kind: pump}", "kind: pump, attributes: {token_count: 5, secret_level: 2}}")
    loaded = load_config_text(text, "config.yaml")

    assert loaded.problems == []


# --- pydantic error types and the catalogue -------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "path", "code"),
    [
        ("agencies: [{id: bpbd}]", "agencies[0].name", "missing"),
        ("agencies: [{id: bpbd, name: B, nama: C}]", "agencies[0].nama", "unknown_key"),
        ("simpul: {port: delapan}", "simpul.port", "wrong_type"),
        ("simpul: {port: 80.5}", "simpul.port", "wrong_type"),
        ("agencies: [{id: bpbd, name: [B]}]", "agencies[0].name", "wrong_type"),
        ("simpul: {language: jawa}", "simpul.language", "invalid_choice"),
        ("agencies: [{id: bpbd, name: B, teams: tim}]", "agencies[0].teams", "wrong_type"),
        ("kinds: {pump: {metrics: [state]}}", "kinds.pump.metrics", "wrong_type"),
        ("simpul: {max_body_bytes: 10}", "simpul.max_body_bytes", "greater_than_equal"),
        ("simpul: {port: 70000}", "simpul.port", "less_than_equal"),
        ("agencies: [{id: BPBD Kota, name: B}]", "agencies[0].id", "invalid_id"),
        ("agencies: [{id: bpbd, name: B, teams: [tim]}]", "agencies[0].teams[0]", "wrong_type"),
        ("sources: [{id: s, type: modbus}]", "sources[0].type", "invalid_choice"),
        ("sources: [{id: s}]", "sources[0].type", "missing"),
        ("agencies: [{id: bpbd, name: B, 1: x}]", "agencies[0]", "invalid_key"),
        ("agencies: &loop [*loop]", "agencies[0]", "wrong_type"),
    ],
)
def test_pydantic_errors_get_translated_messages(snippet: str, path: str, code: str) -> None:
    loaded = load_config_text(snippet + "\n", "config.yaml")

    assert summary(loaded.problems) == [(1, path, code)]
    for language in LANGUAGES:
        message = loaded.problems[0].message(language)
        assert "{" not in message
        assert "Input should" not in message


def test_bool_parsing_message() -> None:
    loaded = load_config_text(BASE.replace("kind: pump}", "kind: pump, enabled: mungkin}"), "config.yaml")

    assert loaded.problems[0].message("en") == "expected true or false, got 'mungkin'"
    assert loaded.problems[0].message("id") == "nilai harus berupa true atau false, bukan 'mungkin'"


def test_unknown_code_shows_original_text() -> None:
    text = translate("some_new_pydantic_error", "id", detail="Input should be a valid UUID")

    assert text == "nilai tidak valid (pesan asli dalam bahasa Inggris: Input should be a valid UUID)"


def test_translate_rejects_unknown_language() -> None:
    with pytest.raises(ValueError, match="unsupported language 'jv'"):
        translate("missing", "jv")


def test_translate_defaults_to_indonesian() -> None:
    assert translate("missing") == "wajib diisi, tetapi belum ada"


def test_catalogue_languages_use_the_same_fields() -> None:
    formatter = string.Formatter()
    for code, texts in MESSAGES.items():
        assert set(texts) == set(LANGUAGES), code
        if code.startswith(("type.", "thing.", "word.")):
            continue
        fields = [{name for _, name, _, _ in formatter.parse(texts[language]) if name} for language in LANGUAGES]
        assert fields[0] == fields[1], code


# Codes that rules.loader and rules.validate report themselves.
PROBLEM_CODES = [
    "file_not_found", "file_unreadable", "file_encoding", "yaml_tab", "yaml_indentation",
    "yaml_mapping_value", "yaml_unclosed_quote", "yaml_flow", "yaml_multiple_documents",
    "yaml_undefined_alias", "yaml_too_deep", "yaml_syntax", "duplicate_key", "missing", "unknown_key", "wrong_type",
    "wrong_length", "invalid_choice", "greater_than_equal", "greater_than", "less_than_equal",
    "less_than", "invalid_id", "invalid_key", "invalid_value", "literal_secret", "duplicate_id", "duplicate_team",
    "unknown_agency", "unknown_kind", "unknown_device", "unknown_team", "unknown_webhook",
    "unknown_tag", "unknown_metric", "skipped_reference", "no_device_matches", "missing_attribute",
    "attribute_not_numeric", "numeric_on_state", "unknown_state", "state_on_numeric",
    "outside_range", "never_holds", "clear_implies_trigger", "unknown_template_field",
    "invalid_template",
]  # fmt: skip


def test_every_problem_code_is_in_the_catalogue() -> None:
    with open("rules/config.py", encoding="utf-8") as handle:
        config_codes = re.findall(r'config_error\(\s*"([a-z_]+)"', handle.read())

    assert len(config_codes) > 20
    assert sorted(code for code in [*PROBLEM_CODES, *config_codes] if code not in MESSAGES) == []


def test_add_messages_rejects_duplicates_and_gaps() -> None:
    with pytest.raises(ValueError, match="already in the catalogue"):
        add_messages({"missing": {"en": "x", "id": "y"}})
    with pytest.raises(ValueError, match="has no text for id"):
        add_messages({"engine.new": {"en": "x"}})
    assert "engine.new" not in MESSAGES
