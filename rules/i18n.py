"""Messages shown to staff, in Indonesian (the default) and English.

``MESSAGES`` maps a stable code to one template per language. Templates use ``str.format``
fields filled from keyword parameters, so a literal brace in a template is written doubled
(``{{attribute: siaga_2}}``). Field names from config.yaml (above, for, metric) stay as they
are in both languages, because staff type them into the file.

To add messages, add entries to ``MESSAGES`` or call ``add_messages`` from the module that
owns them. Every entry needs both languages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"
FALLBACK_CODE = "invalid_value"

# A parameter with one of these names contains catalogue terms, not text. Each term is looked up
# under "<prefix>.<term>" and a list of terms is joined with the language's word for "or".
TERM_PARAMETERS = {"expected": "type", "what": "thing"}

MESSAGES: dict[str, dict[str, str]] = {
    # --- reading the file --------------------------------------------------------------------
    "file_not_found": {
        "en": "file not found: check the path",
        "id": "berkas tidak ditemukan: periksa lokasi dan nama berkasnya",
    },
    "file_unreadable": {
        "en": "cannot read the file: {detail}",
        "id": "berkas tidak dapat dibaca: {detail}",
    },
    "file_encoding": {
        "en": "the file is not UTF-8 text: save it again as UTF-8",
        "id": "berkas bukan teks UTF-8: simpan ulang berkas dengan encoding UTF-8",
    },
    "yaml_tab": {
        "en": "a tab character is used for indentation: YAML allows spaces only",
        "id": "ada karakter tab untuk indentasi: YAML hanya menerima spasi",
    },
    "yaml_indentation": {
        "en": "the indentation does not match the lines above: line up keys of the same block",
        "id": "indentasi tidak sejajar dengan baris di atasnya: ratakan kunci yang berada dalam satu blok",
    },
    "yaml_mapping_value": {
        "en": "unexpected ':' here: check the indentation, and put text that contains ': ' in quotes",
        "id": "tanda ':' tidak boleh ada di sini: periksa indentasi, dan beri tanda kutip pada teks yang berisi ': '",
    },
    "yaml_unclosed_quote": {
        "en": "a quote opened on this line is never closed",
        "id": "tanda kutip yang dibuka di baris ini tidak pernah ditutup",
    },
    "yaml_flow": {
        "en": "the brackets {{ }} or [ ] on this line do not match: a value with braces, "
        "such as ${{NAME}}, must be in quotes inside them",
        "id": "kurung {{ }} atau [ ] di baris ini tidak cocok: nilai yang berisi kurung kurawal, "
        "misalnya ${{NAMA}}, harus diberi tanda kutip",
    },
    "yaml_multiple_documents": {
        "en": "the file holds more than one YAML document: remove the '---' line",
        "id": "berkas berisi lebih dari satu dokumen YAML: hapus baris '---'",
    },
    "yaml_undefined_alias": {
        "en": "alias *{alias} is used before an anchor &{alias} defines it",
        "id": "alias *{alias} dipakai sebelum ada anchor &{alias} yang mendefinisikannya",
    },
    "yaml_too_deep": {
        "en": "the YAML is nested too deeply to read: check the indentation and the brackets",
        "id": "struktur YAML terlalu dalam untuk dibaca: periksa indentasi dan tanda kurung",
    },
    "yaml_syntax": {
        "en": "invalid YAML: {detail}",
        "id": "penulisan YAML tidak valid: {detail}",
    },
    "duplicate_key": {
        "en": "key '{key}' appears twice in this block (first on line {first_line}): keep one",
        "id": "kunci '{key}' ditulis dua kali di blok ini (pertama di baris {first_line}): hapus salah satu",
    },
    # --- shape and types, from pydantic errors -----------------------------------------------
    "missing": {
        "en": "required, but missing",
        "id": "wajib diisi, tetapi belum ada",
    },
    "unknown_key": {
        "en": "unknown key '{key}'",
        "id": "kunci '{key}' tidak dikenal",
    },
    "invalid_key": {
        "en": "key {key} is not a name: write keys as text, e.g. above or metric",
        "id": "kunci {key} bukan nama: tulis kunci sebagai teks, misalnya above atau metric",
    },
    "wrong_type": {
        "en": "expected {expected}, got {input}",
        "id": "nilai harus berupa {expected}, bukan {input}",
    },
    "wrong_length": {
        "en": "needs exactly {count} values, e.g. [80, 150], but has {actual}",
        "id": "harus berisi tepat {count} nilai, misalnya [80, 150], tetapi berisi {actual}",
    },
    "invalid_choice": {
        "en": "invalid value {input}: use one of {choices}",
        "id": "nilai {input} tidak dikenal: pilih salah satu dari {choices}",
    },
    "greater_than_equal": {
        "en": "must be at least {limit}, got {input}",
        "id": "nilai minimal {limit}, bukan {input}",
    },
    "greater_than": {
        "en": "must be greater than {limit}, got {input}",
        "id": "nilai harus lebih dari {limit}, bukan {input}",
    },
    "less_than_equal": {
        "en": "must be at most {limit}, got {input}",
        "id": "nilai maksimal {limit}, bukan {input}",
    },
    "less_than": {
        "en": "must be less than {limit}, got {input}",
        "id": "nilai harus kurang dari {limit}, bukan {input}",
    },
    "invalid_id": {
        "en": "invalid id {input}: use lowercase letters, digits, '-', '_' or '.', "
        "starting with a letter or digit, e.g. pa-manggarai",
        "id": "id {input} tidak valid: gunakan huruf kecil, angka, '-', '_' atau '.', "
        "diawali huruf atau angka, misalnya pa-manggarai",
    },
    "invalid_value": {
        "en": "invalid value: {detail}",
        "id": "nilai tidak valid (pesan asli dalam bahasa Inggris: {detail})",
    },
    # --- field checks in rules.config --------------------------------------------------------
    "invalid_duration": {
        "en": "invalid duration {input}: use a number with s, m, h or d, e.g. 15m or 1h30m",
        "id": "durasi {input} tidak valid: tulis angka dengan satuan s (detik), m (menit), "
        "h (jam) atau d (hari), misalnya 15m atau 1h30m",
    },
    "duration_without_unit": {
        "en": "duration {input} has no unit: add one, e.g. {input}m or {input}s",
        "id": "durasi {input} belum punya satuan: tambahkan satuan, misalnya {input}m (menit) atau {input}s (detik)",
    },
    "unknown_timezone": {
        "en": "unknown time zone {input}: use an IANA name such as Asia/Jakarta (WIB), "
        "Asia/Makassar (WITA) or Asia/Jayapura (WIT)",
        "id": "zona waktu {input} tidak dikenal: gunakan nama IANA seperti Asia/Jakarta (WIB), "
        "Asia/Makassar (WITA) atau Asia/Jayapura (WIT)",
    },
    "literal_secret": {
        "en": "a secret is written directly in the file: store it in an environment variable "
        "and write only its name here, e.g. ${{SIMPUL_GATEWAY_TOKEN}}",
        "id": "rahasia (token atau kata sandi) ditulis langsung di berkas: simpan di variabel "
        "lingkungan (environment variable) dan tulis namanya saja di sini, misalnya "
        "${{SIMPUL_GATEWAY_TOKEN}}",
    },
    "metric_range": {
        "en": "min ({min}) must be less than max ({max})",
        "id": "min ({min}) harus lebih kecil dari max ({max})",
    },
    "state_metric_with_range": {
        "en": "a metric with states takes no unit, min or max",
        "id": "metrik yang memakai states tidak boleh punya unit, min atau max",
    },
    "auth_method": {
        "en": "set exactly one of token or hmac_secret",
        "id": "isi tepat satu: token atau hmac_secret",
    },
    "timestamp_layout": {
        "en": "set either column, or date_column together with time_column",
        "id": "isi column saja, atau date_column bersama time_column",
    },
    "timestamp_split": {
        "en": "date_column and time_column go together: set both",
        "id": "date_column dan time_column harus diisi keduanya",
    },
    "long_file_fields": {
        "en": "a long file needs device and metrics",
        "id": "berkas dengan layout long memerlukan device dan metrics",
    },
    "mqtt_topic_filter": {
        "en": "invalid MQTT topic filter {input}: + and # must fill a whole level, and # must be the last level, "
        "e.g. sungai/+/level or sungai/#",
        "id": "filter topik MQTT {input} tidak valid: + dan # harus mengisi satu level utuh, dan # hanya boleh "
        "di level terakhir, misalnya sungai/+/level atau sungai/#",
    },
    "mqtt_metric_choice": {
        "en": "set exactly one of metric or metrics",
        "id": "isi tepat satu: metric atau metrics",
    },
    "mqtt_value_with_metrics": {
        "en": "metrics already names the JSON field of each value: remove value",
        "id": "metrics sudah menyebut field JSON untuk setiap nilai: hapus value",
    },
    "mqtt_fields_need_json": {
        "en": "timestamp and id are JSON field paths, so they need a JSON payload: "
        "set value to a JSON field path such as data.level",
        "id": "timestamp dan id adalah jalur field JSON, jadi payload harus berupa JSON: "
        "isi value dengan jalur field JSON, misalnya data.level",
    },
    "mqtt_segment_range": {
        "en": "topic_segment {segment} is past the end of {topic}, which has {count} levels counted from 0",
        "id": "topic_segment {segment} melewati level terakhir {topic}, yang hanya punya {count} level "
        "(dihitung mulai dari 0)",
    },
    "mqtt_password_without_username": {
        "en": "MQTT sends a password only with a username: set username",
        "id": "MQTT hanya mengirim password bersama username: isi username",
    },
    "home_assistant_entity_id": {
        "en": "invalid entity id {input}: write it as domain.object_id, e.g. sensor.tinggi_air",
        "id": "entity id {input} tidak valid: tulis dalam bentuk domain.object_id, misalnya sensor.tinggi_air",
    },
    "home_assistant_url": {
        "en": "invalid Home Assistant URL {input}: use the websocket API address, "
        "e.g. ws://127.0.0.1:8123/api/websocket",
        "id": "URL Home Assistant {input} tidak valid: gunakan alamat API websocket, "
        "misalnya ws://127.0.0.1:8123/api/websocket",
    },
    "home_assistant_duplicate_entity": {
        "en": "entity {entity_id} is listed twice: map each entity once",
        "id": "entity {entity_id} tercantum dua kali: petakan setiap entity satu kali saja",
    },
    "home_assistant_data_value": {
        "en": "data holds {input}, which cannot be sent to Home Assistant: put it in quotes",
        "id": "data berisi {input} yang tidak dapat dikirim ke Home Assistant: beri tanda kutip",
    },
    "home_assistant_service": {
        "en": "invalid service {input}: write it as domain.service, e.g. switch.turn_on",
        "id": "service {input} tidak valid: tulis dalam bentuk domain.service, misalnya switch.turn_on",
    },
    "timestamp_format": {
        "en": "invalid timestamp format {input}: use iso, epoch, epoch_ms or strptime syntax such as %d/%m/%Y %H:%M",
        "id": "format timestamp {input} tidak valid: gunakan iso, epoch, epoch_ms, atau pola strptime "
        "seperti %d/%m/%Y %H:%M",
    },
    "timezone_with_epoch": {
        "en": "epoch times are always UTC, so timezone does not apply to format {format}: remove timezone",
        "id": "waktu epoch selalu dalam UTC, jadi timezone tidak berlaku untuk format {format}: hapus timezone",
    },
    "mapping_metric_choice": {
        "en": "set exactly one of metric or metrics",
        "id": "isi tepat satu: metric atau metrics",
    },
    "mapping_value_missing": {
        "en": "metric needs value: the JSON field path of the value, e.g. data.level",
        "id": "metric memerlukan value, yaitu jalur field JSON tempat nilainya, misalnya data.level",
    },
    "mapping_value_with_metrics": {
        "en": "metrics already names the JSON field of each value: remove value",
        "id": "metrics sudah menyebut field JSON untuk setiap nilai: hapus value",
    },
    "mapping_scale_metric": {
        "en": "scale names metric {metric}, which this mapping does not read: use one of {metrics}",
        "id": "scale menyebut metrik {metric}, padahal mapping ini tidak membacanya: pakai salah satu dari {metrics}",
    },
    "mapping_scale_zero": {
        "en": "scale for {metric} is 0, so every value would be 0: use the factor from the sender's unit, "
        "e.g. 0.1 for mm to cm",
        "id": "scale untuk {metric} bernilai 0, sehingga semua nilai menjadi 0: isi faktor konversi dari satuan "
        "pengirim, misalnya 0.1 untuk mm ke cm",
    },
    "wide_file_columns": {
        "en": "a wide file needs columns, one per device and metric",
        "id": "berkas dengan layout wide memerlukan columns, satu untuk setiap perangkat dan metrik",
    },
    "invalid_node_red_path": {
        "en": "invalid path {input}: use the URL path of the flow's http-in node, e.g. /simpul/alert",
        "id": "path {input} tidak valid: isi dengan path URL node http-in di flow itu, misalnya /simpul/alert",
    },
    "invalid_url": {
        "en": "invalid url {input}: it must start with http:// or https://",
        "id": "url {input} tidak valid: harus diawali http:// atau https://",
    },
    "change_without_bound": {
        "en": "change needs above or below",
        "id": "change memerlukan above atau below",
    },
    "change_band": {
        "en": "below ({below}) must be greater than above ({above})",
        "id": "below ({below}) harus lebih besar dari above ({above})",
    },
    "no_comparison": {
        "en": "no comparison: give above, below, at_least, at_most, between, equals, not_equals or change",
        "id": "belum ada perbandingan: isi above, below, at_least, at_most, between, equals, not_equals atau change",
    },
    "empty_range": {
        "en": "the upper bound ({upper}) is not greater than the lower bound ({lower}), so no value "
        "can meet both. For 'above X or below Y', write two rules",
        "id": "batas atas ({upper}) tidak lebih besar dari batas bawah ({lower}), jadi tidak ada "
        "nilai yang memenuhi keduanya. Untuk 'di atas X atau di bawah Y', buat dua aturan",
    },
    "between_order": {
        "en": "between [{low}, {high}]: the first bound must not exceed the second",
        "id": "between [{low}, {high}]: batas pertama tidak boleh lebih besar dari batas kedua",
    },
    "no_selector": {
        "en": "say which devices the rule watches: device, kind, tag or agency",
        "id": "tentukan perangkat yang diawasi aturan: device, kind, tag atau agency",
    },
    "device_with_selector": {
        "en": "device names one device, so do not combine it with kind, tag or agency",
        "id": "device menunjuk satu perangkat, jadi jangan digabung dengan kind, tag atau agency",
    },
    "offline_with_comparison": {
        "en": "an offline trigger watches the whole device, so it takes no metric or comparison",
        "id": "pemicu offline mengawasi seluruh perangkat, jadi tidak memakai metric atau perbandingan",
    },
    "missing_metric": {
        "en": "missing metric: say which metric the rule compares, e.g. metric: level",
        "id": "metric belum diisi: tentukan metrik yang dibandingkan, misalnya metric: level",
    },
    "invalid_time_of_day": {
        "en": "invalid time of day {input}: use HH:MM, e.g. 06:00",
        "id": "jam {input} tidak valid: tulis JJ:MM, misalnya 06:00",
    },
    "action_count": {
        "en": "each action names exactly one of alert, dispatch, webhook, node_red, command, home_assistant or log",
        "id": "setiap aksi harus berisi tepat satu dari alert, dispatch, webhook, node_red, command, home_assistant "
        "atau log",
    },
    "command_payload_boolean": {
        "en": 'YAML reads a bare ON, OFF, yes or no as true or false: put the payload in quotes, e.g. "ON"',
        "id": "YAML membaca ON, OFF, yes atau no tanpa tanda kutip sebagai true atau false: "
        'beri tanda kutip pada payload, misalnya "ON"',
    },
    "command_topic_wildcard": {
        "en": "invalid topic {input}: a topic to publish to has no + or # wildcards, e.g. pompa/{{device.id}}/set",
        "id": "topic {input} tidak valid: topic tujuan publish tidak boleh memakai wildcard + atau #, "
        "misalnya pompa/{{device.id}}/set",
    },
    # --- whole-config checks in rules.validate -----------------------------------------------
    "duplicate_id": {
        "en": "id '{id}' is already used on line {first_line}: each id must be unique",
        "id": "id '{id}' sudah dipakai di baris {first_line}: setiap id harus unik",
    },
    "duplicate_team": {
        "en": "team '{id}' already exists on line {first_line}: team ids must be unique across "
        "all agencies, because dispatch names a team by its id",
        "id": "tim '{id}' sudah ada di baris {first_line}: id tim harus unik di semua instansi, "
        "karena dispatch menyebut tim dengan id-nya",
    },
    "unknown_agency": {
        "en": "agency '{id}' is not defined under agencies",
        "id": "instansi '{id}' tidak ada di agencies",
    },
    "unknown_kind": {
        "en": "kind '{id}' is not defined under kinds",
        "id": "jenis perangkat '{id}' tidak ada di kinds",
    },
    "unknown_device": {
        "en": "device '{id}' is not defined under devices",
        "id": "perangkat '{id}' tidak ada di devices",
    },
    "unknown_team": {
        "en": "team '{id}' is not defined in any agency's teams",
        "id": "tim '{id}' tidak ada di teams instansi mana pun",
    },
    "unknown_webhook": {
        "en": "webhook target '{id}' is not defined under webhooks",
        "id": "target webhook '{id}' tidak ada di webhooks",
    },
    "unknown_command_source": {
        "en": "source '{id}' is not defined under sources",
        "id": "source '{id}' tidak ada di sources",
    },
    "command_source_not_mqtt": {
        "en": "source '{id}' is a {type} source, but commands are published through an mqtt source",
        "id": "source '{id}' bertipe {type}, padahal perintah hanya dapat dikirim lewat source bertipe mqtt",
    },
    "unknown_home_assistant_source": {
        "en": "source '{id}' is not defined under sources",
        "id": "source '{id}' tidak ada di sources",
    },
    "action_source_not_home_assistant": {
        "en": "source '{id}' is a {type} source, but Home Assistant services are called through a "
        "home_assistant source",
        "id": "source '{id}' bertipe {type}, padahal service Home Assistant hanya dapat dipanggil lewat source "
        "bertipe home_assistant",
    },
    "device_without_commands": {
        "en": "device '{id}' has no commands: add commands with via, topic and payloads to the device",
        "id": "perangkat '{id}' tidak punya commands: tambahkan commands berisi via, topic dan payloads "
        "pada perangkat itu",
    },
    "skipped_commands": {
        "en": "the commands of device '{id}' have errors of their own, so this action is skipped too",
        "id": "commands pada perangkat '{id}' salah, jadi aksi ini juga dilewati",
    },
    "unknown_command": {
        "en": "device '{device}' has no command '{command}' (its commands: {commands})",
        "id": "perangkat '{device}' tidak punya perintah '{command}' (perintah yang ada: {commands})",
    },
    "unknown_tag": {
        "en": "no device has the tag '{tag}'",
        "id": "tidak ada perangkat dengan tag '{tag}'",
    },
    "unknown_metric": {
        "en": "kind '{kind}' has no metric '{metric}' (its metrics: {metrics})",
        "id": "jenis perangkat '{kind}' tidak punya metrik '{metric}' (metrik yang ada: {metrics})",
    },
    "skipped_reference": {
        "en": "{what} '{id}' has errors of its own and was skipped, so this is skipped too",
        "id": "{what} '{id}' dilewati karena definisinya salah, jadi bagian ini juga dilewati",
    },
    "no_device_matches": {
        "en": "no device matches this rule's selector",
        "id": "tidak ada perangkat yang cocok dengan pemilih (selector) aturan ini",
    },
    "missing_attribute": {
        "en": "attribute '{attribute}' is missing on device {devices}",
        "id": "atribut '{attribute}' tidak ada pada perangkat {devices}",
    },
    "attribute_not_numeric": {
        "en": "attribute '{attribute}' must be a number on device {devices}",
        "id": "atribut '{attribute}' harus berupa angka pada perangkat {devices}",
    },
    "numeric_on_state": {
        "en": "metric '{metric}' has states ({states}), so compare it with equals or not_equals",
        "id": "metrik '{metric}' berupa status ({states}), jadi bandingkan dengan equals atau not_equals",
    },
    "unknown_state": {
        "en": "{input} is not a state of metric '{metric}' (its states: {states})",
        "id": "{input} bukan status dari metrik '{metric}' (status yang ada: {states})",
    },
    "state_on_numeric": {
        "en": "metric '{metric}' is a number, so {input} never matches: compare with a number",
        "id": "metrik '{metric}' berupa angka, jadi {input} tidak akan pernah cocok: bandingkan dengan angka",
    },
    "outside_range": {
        "en": "this condition can never hold, because metric '{metric}' only ranges from {min} to {max}",
        "id": "kondisi ini tidak akan pernah terpenuhi, karena metrik '{metric}' hanya bernilai antara {min} dan {max}",
    },
    "never_holds": {
        "en": "this condition can never hold",
        "id": "kondisi ini tidak akan pernah terpenuhi",
    },
    "clear_implies_trigger": {
        "en": "every value that meets this clear condition also meets the trigger (when), so the "
        "rule would clear while still triggered: clear on the other side, e.g. when above 850 "
        "and clear below 800",
        "id": "setiap nilai yang memenuhi kondisi clear ini juga memenuhi pemicu (when), jadi aturan "
        "akan dianggap pulih padahal masih terpicu: buat clear di sisi sebaliknya, misalnya when "
        "above 850 dan clear below 800",
    },
    "unknown_template_field": {
        "en": "the message uses {{{field}}}, which does not exist: use value, unit, metric, ts, "
        "device.name, device.attributes.NAME or rule.name",
        "id": "pesan memakai {{{field}}} yang tidak ada: gunakan value, unit, metric, ts, "
        "device.name, device.attributes.NAMA atau rule.name",
    },
    "invalid_template": {
        "en": "the braces {{ }} in this message do not match",
        "id": "kurung kurawal {{ }} di pesan ini tidak berpasangan",
    },
    # --- hints appended to another message ---------------------------------------------------
    "did_you_mean": {
        "en": "Did you mean '{suggestion}'?",
        "id": "Mungkin maksud Anda '{suggestion}'?",
    },
    # --- the check command -------------------------------------------------------------------
    "check.ok": {
        "en": "{file}: no problems found. Agencies: {agencies}, devices: {devices}, rules: {rules}.",
        "id": "{file}: tidak ada masalah. Instansi: {agencies}, perangkat: {devices}, aturan: {rules}.",
    },
    "check.secret_unset": {
        "en": "{file}: warning: {path} refers to the environment variable {name}, which is not set; "
        "set it before starting the hub, or the hub cannot use this part of the config",
        "id": "{file}: peringatan: {path} memakai variabel lingkungan {name}, yang belum diisi; "
        "isi variabel itu sebelum menjalankan hub, karena tanpa itu hub tidak bisa memakai bagian ini",
    },
    "check.failed": {
        "en": "{file}: {count} problem(s) found. Fix them and run the check again.",
        "id": "{file}: ditemukan {count} masalah. Perbaiki lalu jalankan pemeriksaan lagi.",
    },
    # --- terms used inside other messages ----------------------------------------------------
    "word.or": {"en": "or", "id": "atau"},
    "type.number": {"en": "a number", "id": "angka"},
    "type.integer": {"en": "a whole number", "id": "bilangan bulat"},
    "type.text": {"en": "text", "id": "teks"},
    "type.boolean": {"en": "true or false", "id": "true atau false"},
    "type.list": {"en": "a list", "id": "daftar (list)"},
    "type.mapping": {"en": "a block of key: value pairs", "id": "blok berisi pasangan kunci: nilai"},
    "type.attribute_ref": {"en": "{attribute: NAME}", "id": "{attribute: NAMA}"},
    "type.duration": {"en": "a duration such as 15m", "id": "durasi seperti 15m"},
    "type.secret_ref": {
        "en": "an environment variable reference such as ${SIMPUL_GATEWAY_TOKEN}",
        "id": "rujukan variabel lingkungan seperti ${SIMPUL_GATEWAY_TOKEN}",
    },
    "thing.agency": {"en": "agency", "id": "instansi"},
    "thing.kind": {"en": "kind", "id": "jenis perangkat"},
    "thing.device": {"en": "device", "id": "perangkat"},
    "thing.team": {"en": "team", "id": "tim"},
    "thing.webhook": {"en": "webhook target", "id": "target webhook"},
    "thing.source": {"en": "source", "id": "source"},
}


class _Fields(dict[str, Any]):
    """Template fields that render a missing field as written, so a gap shows instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def add_messages(entries: Mapping[str, Mapping[str, str]]) -> None:
    """Add catalogue entries; raise ValueError for a code already present or a missing language."""
    for code, texts in entries.items():
        if code in MESSAGES:
            raise ValueError(f"message code {code!r} is already in the catalogue")
        missing = [language for language in LANGUAGES if language not in texts]
        if missing:
            raise ValueError(f"message code {code!r} has no text for {', '.join(missing)}")
    for code, texts in entries.items():
        MESSAGES[code] = dict(texts)


def translate(code: str, lang: str | None = None, **params: Any) -> str:
    """Render the message for ``code`` in ``lang`` (Indonesian when None).

    An unknown code renders the generic ``invalid_value`` message with ``params["detail"]``,
    so a new error type still shows its original English text. Raise ValueError for a language
    other than ``id`` or ``en``.
    """
    language = lang or DEFAULT_LANGUAGE
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}: use one of {', '.join(LANGUAGES)}")

    entry = MESSAGES.get(code)
    if entry is None:
        entry = MESSAGES[FALLBACK_CODE]
        params = {"detail": params.get("detail", code)}

    fields = _Fields()
    for name, value in params.items():
        fields[name] = _render_param(name, value, language)
    return entry[language].format_map(fields)


def _render_param(name: str, value: Any, language: str) -> str:
    prefix = TERM_PARAMETERS.get(name)
    if prefix is not None and isinstance(value, (str, list, tuple)):
        terms = [value] if isinstance(value, str) else list(value)
        texts = [MESSAGES.get(f"{prefix}.{term}", {}).get(language, str(term)) for term in terms]
        return _join_alternatives(texts, language)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def _join_alternatives(texts: list[str], language: str) -> str:
    if len(texts) <= 1:
        return "".join(texts)
    word = MESSAGES["word.or"][language]
    return f"{', '.join(texts[:-1])} {word} {texts[-1]}"
