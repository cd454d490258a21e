"""Edit config.yaml safely: round-trip YAML edits, whole-config validation, atomic writes, git commits.

Notes on how a save works, referred to below by number:
1. The file is loaded with ruamel.yaml in round-trip mode, so comments, key order, quoting and
   indentation survive. An edit merges the new values into the existing nodes: a value equal to
   the old one keeps its node and formatting, and a changed string keeps the old quoting style.
2. The whole new text is validated with ``rules.loader.load_config_text``, the same checks the
   hub runs. A text with any problem is never written.
3. The file on disk must still be the text that was loaded (compared by SHA-256), otherwise the
   save raises ``ConfigConflict`` with both texts. The check, the write and the commit run under
   an exclusive ``flock`` on the config file, so two saves from this machine cannot interleave.
4. The write is atomic: a temporary file in the same directory, fsync, ``os.replace``, and the
   file mode of the old file.
5. When the file is in a git work tree and not ignored, the save commits that one file with the
   staff member as author. Git runs in the file's own directory with the repository-selecting
   environment variables removed (``git rev-parse --local-env-vars``), so it cannot reach another
   repository. If the commit fails, the old text is written back and ``ConfigGitError`` raised.
6. With a store engine, the save records a ``config_changed`` audit entry with the diff and the
   commit id.

Exceptions, all under ``rules.errors.SimpulError``::

    ConfigEditError
     +-- ConfigUnreadable
     +-- ItemNotFound
     +-- InvalidItem
     +-- ConfigInvalid
     +-- ConfigConflict
     +-- ConfigGitError
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.scalarint import ScalarInt
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    ScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent
from sqlalchemy import Engine as DbEngine
from sqlalchemy.exc import SQLAlchemyError

from rules.durations import format_duration
from rules.errors import SimpulError
from rules.i18n import add_messages, translate
from rules.loader import LoadedConfig, load_config_text
from rules.problems import Problem
from rules.store import ops

logger = logging.getLogger(__name__)

# Email domain of commit authors: staff members are identified by their Simpul user name.
AUTHOR_DOMAIN = "simpul.local"
# Committer used when neither git config nor GIT_COMMITTER_NAME / GIT_COMMITTER_EMAIL name one.
FALLBACK_COMMITTER_NAME = "Simpul"
FALLBACK_COMMITTER_EMAIL = f"simpul@{AUTHOR_DOMAIN}"
GIT_TIMEOUT_SECONDS = 30
SUBJECT_MAX = 72

# Strings written in one of these styles keep the style when their text changes.
_STYLED_STRINGS = (DoubleQuotedScalarString, SingleQuotedScalarString, LiteralScalarString, FoldedScalarString)
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_BOM = "\ufeff"

add_messages(
    {
        "thing.rule": {"en": "rule", "id": "aturan"},
        "config_edit.unreadable": {
            "en": "{file} cannot be edited here because it is not valid: {detail}. Fix it by hand: "
            "'python hub.py check' lists its problems",
            "id": "{file} tidak dapat diubah di sini karena tidak valid: {detail}. Perbaiki secara manual: "
            "'python hub.py check' menampilkan masalahnya",
        },
        "config_edit.rule_not_found": {
            "en": "rule '{id}' is not in {file}: reload the page to see the current rules",
            "id": "aturan '{id}' tidak ada di {file}: muat ulang halaman untuk melihat aturan terbaru",
        },
        "config_edit.device_not_found": {
            "en": "device '{id}' is not in {file}: reload the page to see the current devices",
            "id": "perangkat '{id}' tidak ada di {file}: muat ulang halaman untuk melihat perangkat terbaru",
        },
        "config_edit.duplicate_rule": {
            "en": "a rule with id '{id}' already exists: choose another id",
            "id": "sudah ada aturan dengan id '{id}': pilih id lain",
        },
        "config_edit.not_a_mapping": {
            "en": "the {what} must be a set of fields (a mapping), got {input}",
            "id": "{what} harus berupa kumpulan isian (mapping), bukan {input}",
        },
        "config_edit.missing_id": {
            "en": "the {what} has no id: fill in the id field",
            "id": "{what} belum punya id: isi kolom id",
        },
        "config_edit.unsupported_value": {
            "en": "field {path} has a value of type {type} that cannot be written to YAML: use text, a number, "
            "true/false, a list or a mapping",
            "id": "kolom {path} berisi nilai bertipe {type} yang tidak dapat ditulis ke YAML: gunakan teks, angka, "
            "true/false, daftar atau mapping",
        },
        "config_edit.invalid_username": {
            "en": "invalid user name {input}: use letters, digits, '.', '_' or '-' (at most 100 characters)",
            "id": "nama pengguna {input} tidak valid: gunakan huruf, angka, '.', '_' atau '-' (paling banyak 100 "
            "karakter)",
        },
        "config_edit.invalid_full_name": {
            "en": "invalid full name {input}: it must not be empty or contain '<', '>' or a line break",
            "id": "nama lengkap {input} tidak valid: tidak boleh kosong atau berisi '<', '>' atau baris baru",
        },
        "config_edit.not_a_list": {
            "en": "'{section}' in {file} is not a list: fix the file by hand first",
            "id": "'{section}' di {file} bukan daftar: perbaiki berkasnya secara manual terlebih dahulu",
        },
        "config_edit.top_not_a_mapping": {
            "en": "{file} does not contain sections (a mapping) at the top: fix the file by hand first",
            "id": "{file} tidak berisi bagian-bagian (mapping) di tingkat teratas: perbaiki berkasnya secara manual "
            "terlebih dahulu",
        },
        "config_edit.invalid_config": {
            "en": "the change was not saved because {file} would have {count} problems: fix the fields listed",
            "id": "perubahan tidak disimpan karena {file} akan memiliki {count} masalah: perbaiki isian yang tercantum",
        },
        "config_edit.conflict": {
            "en": "{file} was changed on disk after you opened it, so your change was not saved: compare both "
            "versions, reload the page and make the change again",
            "id": "{file} sudah diubah di disk setelah Anda membukanya, sehingga perubahan Anda tidak disimpan: "
            "bandingkan kedua versi, muat ulang halaman, lalu ulangi perubahan",
        },
        "config_edit.git_failed": {
            "en": "the change to {file} was not saved because the git commit failed: {detail}",
            "id": "perubahan pada {file} tidak disimpan karena commit git gagal: {detail}",
        },
    }
)


# --- errors ------------------------------------------------------------------------------------


class ConfigEditError(SimpulError):
    """Base class of config editing errors; ``message(lang)`` renders it for staff in id or en."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(translate(code, "en", **params))
        self.code = code
        self.params = params

    def message(self, lang: str | None = None) -> str:
        return translate(self.code, lang, **self.params)


class ConfigUnreadable(ConfigEditError):
    """Raised when the config file is not UTF-8 text or not valid YAML, so it cannot be edited in forms."""


class ItemNotFound(ConfigEditError, LookupError):
    """Raised when no rule or device in the file has the requested id."""


class InvalidItem(ConfigEditError, ValueError):
    """Raised when form data cannot be written: not a mapping, no id, a duplicate id or a value of an
    unsupported type. Checks of the config itself are ``ConfigInvalid``."""


class ConfigInvalid(ConfigEditError):
    """Raised when the edited config has problems; nothing was written.

    ``problems`` are the loader's problems, each with file, line and key path, and ``text`` is the
    rejected text.
    """

    def __init__(self, *, file: str, problems: list[Problem], text: str) -> None:
        super().__init__("config_edit.invalid_config", file=file, count=len(problems))
        self.problems = problems
        self.text = text


class ConfigConflict(ConfigEditError):
    """Raised when the file on disk changed after it was loaded; nothing was written.

    ``disk_text`` is the file as it is now and ``new_text`` the text that would have been saved.
    """

    def __init__(self, *, file: str, disk_text: str, new_text: str) -> None:
        super().__init__("config_edit.conflict", file=file)
        self.disk_text = disk_text
        self.new_text = new_text


class ConfigGitError(ConfigEditError):
    """Raised when the commit of a saved file failed; the old text was written back."""


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffMember:
    """The person who saves a change: their Simpul user name and full name, used as the commit author."""

    username: str
    full_name: str

    def __post_init__(self) -> None:
        if not _USERNAME.match(self.username):
            raise InvalidItem("config_edit.invalid_username", input=repr(self.username))
        if not self.full_name.strip() or any(char in self.full_name for char in "<>\n\r"):
            raise InvalidItem("config_edit.invalid_full_name", input=repr(self.full_name))

    @property
    def git_author(self) -> str:
        return f"{self.full_name.strip()} <{self.username}@{AUTHOR_DOMAIN}>"


@dataclass(frozen=True)
class SaveResult:
    """The outcome of a save: what changed, the diff, the commit id (None outside git) and
    whether an audit entry was recorded. ``saved`` is False when the text had not changed."""

    path: Path
    saved: bool
    changes: list[str]
    diff: str
    text: str
    commit: str | None = None
    audited: bool = False


@dataclass(frozen=True)
class ConfigCommit:
    """One git commit that changed the config file, for the audit page."""

    id: str
    author_name: str
    author_email: str
    authored_at: datetime
    message: str
    diff: str


# --- the editor --------------------------------------------------------------------------------


@dataclass
class ConfigEditor:
    """A config file loaded for editing. Edits change the in-memory document; ``save`` writes it.

    Rules and devices are read and written as plain dicts with the keys of config.yaml, e.g.
    ``{"id": "manggarai-siaga-2", "when": {"device": "manggarai", "metric": "level", "above": 850,
    "for": "15m"}, ...}``. A None value leaves its key out. Durations may also be given as
    ``timedelta``, and a pydantic model (such as ``rules.config.Rule``) as the whole item.
    """

    path: Path
    loaded_text: str
    loaded_hash: str
    _yaml: YAML = field(repr=False)
    _data: CommentedMap = field(repr=False)
    _bom: bool = False
    changes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> ConfigEditor:
        """Read the config file at ``path`` for editing.

        Raise OSError when it cannot be read, and ConfigUnreadable when it is not UTF-8 or not valid
        YAML (including a key written twice), which only an edit by hand can fix.
        """
        resolved = Path(path).resolve()
        return cls.parse(resolved, resolved.read_bytes())

    @classmethod
    def parse(cls, path: str | Path, raw: bytes) -> ConfigEditor:
        """Build an editor for ``path`` from its content ``raw`` as read earlier, e.g. when a form opened.

        A save then raises ConfigConflict if the file no longer contains ``raw``. Raise
        ConfigUnreadable as ``load`` does.
        """
        resolved = Path(path).resolve()
        try:
            text = raw.decode("utf-8")
            bom = text.startswith(_BOM)
            body = text.removeprefix(_BOM)
            round_trip = _round_trip_yaml(body)
            data = round_trip.load(body)
        except (UnicodeDecodeError, YAMLError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigUnreadable("config_edit.unreadable", file=resolved.name, detail=detail) from error
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            raise InvalidItem("config_edit.top_not_a_mapping", file=resolved.name)
        editor = cls(resolved, text, _sha256(raw), round_trip, data, bom)
        if editor.render() != text:
            # ruamel.yaml writes one indentation for the whole file, so a file that mixes
            # indentations is reformatted by the first save.
            logger.warning("config %s: ruamel.yaml does not reproduce its layout exactly; a save reformats it", path)
        return editor

    # --- reading ---------------------------------------------------------------------------

    @property
    def file_name(self) -> str:
        return self.path.name

    def rule_ids(self) -> list[str]:
        return [str(item.get("id")) for item in self._items("rules") if isinstance(item, CommentedMap)]

    def device_ids(self) -> list[str]:
        return [str(item.get("id")) for item in self._items("devices") if isinstance(item, CommentedMap)]

    def get_rule(self, rule_id: str) -> dict[str, Any]:
        """Return the rule ``rule_id`` as a plain dict; raise ItemNotFound when it is not in the file."""
        return _to_plain(self._find("rules", rule_id))  # type: ignore[no-any-return]

    def get_device(self, device_id: str) -> dict[str, Any]:
        """Return the device ``device_id`` as a plain dict; raise ItemNotFound when it is not in the file."""
        return _to_plain(self._find("devices", device_id))  # type: ignore[no-any-return]

    def rule_yaml(self, rule_id: str) -> str:
        """Render the rule ``rule_id`` as it is in the edited document, with the comments inside it.

        Blank lines and comments after its last line are left out: they separate it from the next item.
        """
        lines = self._dump_item(self._find("rules", rule_id)).splitlines()
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
            lines.pop()
        return "\n".join(lines) + "\n"

    def render(self) -> str:
        """Render the whole edited document as text."""
        stream = io.StringIO()
        self._yaml.dump(self._data, stream)
        return (_BOM if self._bom else "") + stream.getvalue()

    def diff(self) -> str:
        """Return the unified diff from the loaded text to the edited text."""
        return _unified_diff(self.loaded_text, self.render(), self.file_name)

    def validate(self) -> LoadedConfig:
        """Validate the whole edited text with the hub's loader; return the config and its problems.

        The typed rules of the result are what ``rules.backtest`` takes, e.g. the changed rule.
        """
        return load_config_text(self.render().removeprefix(_BOM), self.file_name)

    def check(self) -> list[Problem]:
        """Validate the whole edited text with the hub's loader and return its problems."""
        return self.validate().problems

    # --- editing ---------------------------------------------------------------------------

    def replace_rule(self, rule_id: str, rule: Mapping[str, Any] | BaseModel) -> list[str]:
        """Replace the rule ``rule_id`` with ``rule`` and return the changed fields, e.g.
        ``["when.above 850 -> 800"]``; unchanged fields keep their formatting (note 1)."""
        new = _item_input(rule, "rule")
        target = self._find("rules", rule_id)
        new_id = new["id"]
        if new_id != rule_id and new_id in self.rule_ids():
            raise InvalidItem("config_edit.duplicate_rule", id=new_id)

        changed: list[str] = []
        _merge_mapping(target, new, "", changed)
        if changed:
            self.changes.append(f"Change rule {rule_id}: {', '.join(changed)}")
        return changed

    def add_rule(self, rule: Mapping[str, Any] | BaseModel) -> None:
        """Append ``rule`` to ``rules``; raise InvalidItem when its id is already used."""
        new = _item_input(rule, "rule")
        if new["id"] in self.rule_ids():
            raise InvalidItem("config_edit.duplicate_rule", id=new["id"])
        self._append("rules", _to_node(new, "", top=True))
        self.changes.append(f"Add rule {new['id']}")

    def set_rule_enabled(self, rule_id: str, enabled: bool) -> bool:
        """Set ``enabled`` of the rule ``rule_id``; return False when it already had that value."""
        target = self._find("rules", rule_id)
        if bool(target.get("enabled", True)) == enabled:
            return False
        if "enabled" in target:
            target["enabled"] = enabled
        else:
            _insert_after(target, "enabled", enabled, ("agency", "name", "id"))
        self.changes.append(f"{'Enable' if enabled else 'Disable'} rule {rule_id}")
        return True

    def put_device(self, device: Mapping[str, Any] | BaseModel) -> list[str]:
        """Add ``device``, or replace the device with its id; return the changed fields, or
        ``["added"]`` for a new device."""
        new = _item_input(device, "device")
        device_id = new["id"]
        if device_id not in self.device_ids():
            self._append("devices", _to_node(new, "", top=True))
            self.changes.append(f"Add device {device_id}")
            return ["added"]

        changed: list[str] = []
        _merge_mapping(self._find("devices", device_id), new, "", changed)
        if changed:
            self.changes.append(f"Change device {device_id}: {', '.join(changed)}")
        return changed

    # --- saving ----------------------------------------------------------------------------

    def save(self, *, author: StaffMember, db: DbEngine | None = None) -> SaveResult:
        """Validate, write and commit the edited config, then audit it (notes 2 to 6).

        Raise ConfigInvalid or ConfigConflict without writing anything, and ConfigGitError after
        writing the old text back. A text equal to the loaded one is not written or committed.
        """
        new_text = self.render()
        if new_text == self.loaded_text:
            return SaveResult(self.path, saved=False, changes=[], diff="", text=new_text)

        problems = load_config_text(new_text.removeprefix(_BOM), self.file_name).problems
        if problems:
            raise ConfigInvalid(file=self.file_name, problems=problems, text=new_text)

        diff = _unified_diff(self.loaded_text, new_text, self.file_name)
        changes = list(self.changes) or [f"Edit {self.file_name}"]
        if not self.path.exists():
            raise ConfigConflict(file=self.file_name, disk_text="", new_text=new_text)
        with _locked(self.path):
            disk = self.path.read_bytes()
            if _sha256(disk) != self.loaded_hash:
                raise ConfigConflict(file=self.file_name, disk_text=disk.decode("utf-8"), new_text=new_text)

            _write_atomic(self.path, new_text)
            commit = None
            repository = _repository_of(self.path)
            if repository is not None:
                try:
                    commit = _commit(repository, self.path, author, _commit_message(changes, author))
                except ConfigGitError:
                    _write_atomic(self.path, self.loaded_text)
                    raise

        self.loaded_text = new_text
        self.loaded_hash = _sha256(new_text.encode("utf-8"))
        self.changes = []
        logger.info("config %s saved by %s (commit %s): %s", self.path, author.username, commit, "; ".join(changes))

        audited = False
        if db is not None:
            audited = _record_change(db, self.path, author, changes, diff, commit)
        return SaveResult(
            self.path, saved=True, changes=changes, diff=diff, text=new_text, commit=commit, audited=audited
        )

    # --- helpers ---------------------------------------------------------------------------

    def _items(self, section: str) -> list[Any]:
        items = self._data.get(section)
        if items is None:
            return []
        if not isinstance(items, CommentedSeq):
            raise InvalidItem("config_edit.not_a_list", section=section, file=self.file_name)
        return list(items)

    def _find(self, section: str, item_id: str) -> CommentedMap:
        for item in self._items(section):
            if isinstance(item, CommentedMap) and item.get("id") == item_id:
                return item
        code = "config_edit.rule_not_found" if section == "rules" else "config_edit.device_not_found"
        raise ItemNotFound(code, id=item_id, file=self.file_name)

    def _append(self, section: str, node: CommentedMap) -> None:
        self._items(section)
        items = self._data.get(section)
        if items is None:
            items = CommentedSeq()
            self._data[section] = items
        if len(items):
            _move_trailing_comments(items[-1], items)
        items.append(node)

    def _dump_item(self, node: Any) -> str:
        stream = io.StringIO()
        self._yaml.dump(node, stream)
        return stream.getvalue()


def render_rule_yaml(rule: Mapping[str, Any] | BaseModel) -> str:
    """Render a rule from form data as YAML text, the way ``add_rule`` writes a new rule."""
    node = _to_node(_item_input(rule, "rule"), "", top=True)
    stream = io.StringIO()
    _round_trip_yaml("").dump(node, stream)
    return stream.getvalue()


# --- YAML nodes --------------------------------------------------------------------------------


def _round_trip_yaml(text: str) -> YAML:
    mapping, sequence, offset = _guess_indent(text)
    round_trip = YAML(typ="rt")
    round_trip.preserve_quotes = True
    # Long lines stay on one line: the file's own lines are often longer than 80 characters.
    round_trip.width = 4096
    round_trip.indent(mapping=mapping, sequence=sequence, offset=offset)
    return round_trip


def _guess_indent(text: str) -> tuple[int, int, int]:
    """Return the mapping indent, sequence indent and dash offset of ``text``; (2, 4, 2) when unknown.

    ruamel.yaml's ``load_yaml_guess_indent`` finds the sequence indent and dash offset. The
    mapping indent is the step between a key that ends its line and the next key below it.
    """
    mapping = None
    previous_key_indent = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if previous_key_indent is not None and not stripped.startswith("- ") and indent > previous_key_indent:
            mapping = indent - previous_key_indent
            break
        previous_key_indent = indent if stripped.endswith(":") and not stripped.startswith("- ") else None

    sequence, offset = None, None
    if text.strip():
        with contextlib.suppress(Exception):
            _data, sequence, offset = load_yaml_guess_indent(text)
    mapping = mapping or 2
    offset = offset if offset is not None else mapping
    sequence = sequence if sequence is not None else offset + 2
    return mapping, sequence, offset


def _item_input(item: Mapping[str, Any] | BaseModel, what: str) -> dict[str, Any]:
    """Turn form data or a config model into a plain dict with YAML-ready values and an id."""
    if isinstance(item, BaseModel):
        item = item.model_dump(by_alias=True, exclude_defaults=True, mode="python")
    if not isinstance(item, Mapping):
        raise InvalidItem("config_edit.not_a_mapping", what=what, input=type(item).__name__)
    plain: dict[str, Any] = _input_value(item, "")
    if not plain.get("id"):
        raise InvalidItem("config_edit.missing_id", what=what)
    return plain


def _input_value(value: Any, path: str) -> Any:
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_defaults=True, mode="python")
    if isinstance(value, Mapping):
        return {str(key): _input_value(item, _join(path, str(key))) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_input_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        # Forms and config models give thresholds as floats; 800 reads better than 800.0.
        return int(value)
    if isinstance(value, (str, bool, int, float)):
        return value
    raise InvalidItem("config_edit.unsupported_value", path=path or "-", type=type(value).__name__)


def _to_node(value: Any, path: str, *, top: bool = False) -> Any:
    """Build a new ruamel node from a plain value, in the styles config.yaml uses (see ``_is_flow``)."""
    if isinstance(value, dict):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = _to_node(item, _join(path, key))
        if not top and _is_flow(value):
            node.fa.set_flow_style()
        else:
            node.fa.set_block_style()
        return node
    if isinstance(value, list):
        seq = CommentedSeq(_to_node(item, f"{path}[{index}]") for index, item in enumerate(value))
        if _is_flow(value):
            seq.fa.set_flow_style()
        else:
            seq.fa.set_block_style()
        return seq
    if isinstance(value, str):
        return _quoted_if_needed(value)
    return value


def _is_flow(value: dict[str, Any] | list[Any]) -> bool:
    """Return whether a new collection is written in flow style, as config.yaml writes them.

    Flow style is for collections of scalars and of scalar-only collections, such as
    ``when: {device: depok, metric: level, at_least: {attribute: siaga_2}}`` or
    ``schedule: {days: [mon, tue], from: "06:00"}``. An item of ``rules`` or ``devices`` and a
    one-key mapping around a mapping, such as ``- alert: {message: ...}``, stay block style.
    """
    items = list(value.values()) if isinstance(value, dict) else value
    if isinstance(value, dict) and len(value) == 1 and isinstance(items[0], dict):
        return False
    for item in items:
        if isinstance(item, (dict, list)):
            inner = item.values() if isinstance(item, dict) else item
            if any(isinstance(part, (dict, list)) for part in inner):
                return False
    return True


# PyYAML's resolver, which the hub's loader builds on: a text that it would read as another type
# (on, off, yes, 18:00, 1e3) must be quoted, although ruamel.yaml (YAML 1.2) would write it plain.
_RESOLVER = yaml.resolver.Resolver()


# Times of day are quoted because YAML 1.1 reads some of them, such as 18:00, as base-60 numbers.
_CLOCK = re.compile(r"^\d{1,2}:\d{2}(?::\d{2})?$")
# A plain scalar cannot start with one of these characters, contain ": " or " #", or have spaces
# at either end. ruamel.yaml would quote such text itself, but config.yaml uses double quotes.
_INDICATORS = tuple("-?:,[]{}#&*!|>'\"%@`")


def _quoted_if_needed(text: str) -> str:
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
    needs_quotes = (
        tag != "tag:yaml.org,2002:str"
        or not text
        or text.startswith(_INDICATORS)
        or ": " in text
        or " #" in text
        or text != text.strip()
        or text.endswith(":")
        or _CLOCK.match(text) is not None
    )
    return DoubleQuotedScalarString(text) if needs_quotes else text


def _to_plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(key): _to_plain(value) for key, value in node.items()}
    if isinstance(node, CommentedSeq):
        return [_to_plain(item) for item in node]
    if isinstance(node, ScalarBoolean):
        return bool(node)
    if isinstance(node, bool):
        return node
    if isinstance(node, ScalarString):
        return str(node)
    if isinstance(node, ScalarInt):
        return int(node)
    if isinstance(node, ScalarFloat):
        return float(node)
    return node


def _merge_mapping(target: CommentedMap, new: dict[str, Any], path: str, changed: list[str]) -> None:
    """Make ``target`` equal ``new`` in place, keeping the nodes of equal values; record each change."""
    for key in [key for key in target if str(key) not in new]:
        changed.append(f"{_join(path, str(key))} {_show(target[key])} -> (none)")
        del target[key]

    previous: str | None = None
    for key, value in new.items():
        key_path = _join(path, key)
        if key in target:
            target[key] = _merge_value(target[key], value, key_path, changed)
        else:
            changed.append(f"{key_path} (none) -> {_show(value)}")
            node = _to_node(value, key_path)
            if previous is None:
                target.insert(0, key, node)
            elif target.fa.flow_style():
                target.insert(list(target).index(previous) + 1, key, node)
            else:
                _insert_after(target, key, node, (previous,))
        previous = key


def _merge_value(old: Any, new: Any, path: str, changed: list[str]) -> Any:
    if isinstance(old, CommentedMap) and isinstance(new, dict):
        _merge_mapping(old, new, path, changed)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list):
        _merge_sequence(old, new, path, changed)
        return old
    if not isinstance(old, (CommentedMap, CommentedSeq)) and not isinstance(new, (dict, list)):
        if _same_scalar(old, new):
            return old
        changed.append(f"{path} {_show(old)} -> {_show(new)}")
        if isinstance(old, _STYLED_STRINGS) and isinstance(new, str):
            return type(old)(new)
        return _to_node(new, path)
    changed.append(f"{path} {_show(old)} -> {_show(new)}")
    return _to_node(new, path)


def _merge_sequence(old: CommentedSeq, new: list[Any], path: str, changed: list[str]) -> None:
    for index in range(min(len(old), len(new))):
        old[index] = _merge_value(old[index], new[index], f"{path}[{index}]", changed)
    while len(old) > len(new):
        index = len(old) - 1
        changed.append(f"{path}[{index}] {_show(old[index])} -> (none)")
        del old[index]
    for index in range(len(old), len(new)):
        changed.append(f"{path}[{index}] (none) -> {_show(new[index])}")
        if len(old) and not old.fa.flow_style():
            _move_trailing_comments(old[-1], old)
        old.append(_to_node(new[index], f"{path}[{index}]"))


def _same_scalar(old: Any, new: Any) -> bool:
    old_plain, new_plain = _to_plain(old), new
    if isinstance(old_plain, bool) or isinstance(new_plain, bool):
        return type(old_plain) is type(new_plain) and old_plain == new_plain
    numbers = (int, float)
    if isinstance(old_plain, numbers) and isinstance(new_plain, numbers):
        return bool(old_plain == new_plain)
    return type(old_plain) is type(new_plain) and old_plain == new_plain


def _insert_after(target: CommentedMap, key: str, value: Any, anchors: Sequence[str | None]) -> None:
    """Insert ``key`` after the first of ``anchors`` present in ``target``, else at the end.

    A blank line or comment after the last entry belongs to whatever follows the mapping, e.g. the
    next rule. ruamel.yaml keeps it on the last entry, so a key that would go last is put before
    the last entry instead, which keeps that separation in place.
    """
    keys = list(target)
    position = len(keys)
    for anchor in anchors:
        if anchor in keys:
            position = keys.index(anchor) + 1
            break
    if position == len(keys) and keys and _has_trailing_comments(target[keys[-1]], target, keys[-1]):
        position = len(keys) - 1
    target.insert(position, key, value)


def _last_entry(node: Any) -> tuple[Any, Any] | None:
    if isinstance(node, CommentedMap) and len(node):
        key = list(node)[-1]
        return key, node[key]
    if isinstance(node, CommentedSeq) and len(node):
        return len(node) - 1, node[-1]
    return None


def _trailing_chain(value: Any, parent: Any, key: Any) -> Iterator[tuple[Any, Any, Any]]:
    """Yield (parent, key, value) down the last entries of ``value``, starting with ``value`` itself."""
    while True:
        yield parent, key, value
        if not isinstance(value, (CommentedMap, CommentedSeq)) or value.fa.flow_style():
            return
        entry = _last_entry(value)
        if entry is None:
            return
        parent, (key, value) = value, entry


def _has_trailing_comments(value: Any, parent: Any, key: Any) -> bool:
    for holder, holder_key, node in _trailing_chain(value, parent, key):
        if isinstance(node, (CommentedMap, CommentedSeq)) and node.ca.end:
            return True
        token = holder.ca.items.get(holder_key, [None, None, None, None])
        eol = token[2] if len(token) > 2 else None
        if eol is not None and eol.value.count("\n") > 1:
            return True
    return False


def _move_trailing_comments(last_item: Any, seq: CommentedSeq) -> None:
    """Move the blank lines and comments after ``last_item`` to the end of ``seq``, so that an
    item appended to ``seq`` goes before them instead of after them.

    ruamel.yaml keeps them in one of two places: the end comments of the last block collection
    inside the item, or the end-of-line comment of its last key, after that line's own comment.
    """
    for holder, key, node in _trailing_chain(last_item, seq, len(seq) - 1):
        if isinstance(node, (CommentedMap, CommentedSeq)) and node.ca.end and node is not seq:
            _add_end_comments(seq, list(node.ca.end))
            node.ca.end = []
            return
        if not isinstance(holder, CommentedMap):
            continue
        entry = holder.ca.items.get(key)
        token = entry[2] if entry and len(entry) > 2 else None
        if token is not None and token.value.count("\n") > 1:
            own_line, following = token.value.split("\n", 1)
            token.value = own_line + "\n"
            _add_end_comments(seq, [_comment_token(line) for line in following.splitlines(keepends=True)])
            return


def _add_end_comments(seq: CommentedSeq, tokens: list[CommentToken]) -> None:
    # ruamel.yaml writes a collection's end comments only when its `comment` is a list.
    if seq.ca.comment is None:
        seq.ca.comment = [None, None]
    seq.ca.end = tokens + list(seq.ca.end or [])


def _comment_token(line: str) -> CommentToken:
    """Build a comment token for one line of a comment block, keeping the line's indentation."""
    text = line.lstrip(" ")
    return CommentToken(text, CommentMark(len(line) - len(text)))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any, limit: int = 40) -> str:
    plain = _to_plain(value)
    if isinstance(plain, (dict, list)):
        text = json.dumps(plain, ensure_ascii=False, separators=(", ", ": "), default=str)
    elif isinstance(plain, bool):
        text = "true" if plain else "false"
    else:
        text = str(plain)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unified_diff(old: str, new: str, name: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=f"a/{name}", tofile=f"b/{name}"
    )
    return "".join(lines)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- files -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (the file itself, so no lock file is left behind).

    A save that waited for the lock re-reads the path and gets the replaced file's new text, so
    it raises a conflict instead of overwriting the change made while it waited.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` through a synced temporary file in the same directory (note 4)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise

    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- git ---------------------------------------------------------------------------------------


@functools.cache
def _repository_variables() -> frozenset[str]:
    """Return the environment variables that select a repository, index or object store.

    ``git rev-parse --local-env-vars`` lists them (GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE, ...);
    when it cannot run, the list from git 2.39 is used.
    """
    try:
        listed = subprocess.run(
            ["git", "rev-parse", "--local-env-vars"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    known = {
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_OBJECT_DIRECTORY",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_GRAFT_FILE",
        "GIT_INDEX_FILE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_REPLACE_REF_BASE",
        "GIT_PREFIX",
        "GIT_SHALLOW_FILE",
        "GIT_COMMON_DIR",
    }
    return frozenset(known | set(listed))


def _git(
    directory: Path, *args: str, stdin: str = "", extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run git in ``directory`` with an argument list, without a shell or a terminal prompt."""
    blocked = _repository_variables()
    env = {name: value for name, value in os.environ.items() if name not in blocked}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.update(extra_env or {})
    return subprocess.run(
        ["git", *args],
        cwd=directory,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )


def _repository_of(path: Path) -> Path | None:
    """Return the top of the git work tree that contains ``path``, or None outside git, for a file
    git ignores, or when git is not installed."""
    try:
        found = _git(path.parent, "rev-parse", "--show-toplevel")
    except FileNotFoundError:
        logger.warning("git is not installed, so config %s is saved without a commit", path)
        return None
    if found.returncode != 0:
        return None
    top = Path(found.stdout.strip())
    if _git(top, "check-ignore", "-q", "--", str(path.relative_to(top))).returncode == 0:
        logger.info("config %s is ignored by git, so it is saved without a commit", path)
        return None
    return top


def _committer_env(top: Path) -> dict[str, str]:
    """Return GIT_COMMITTER_NAME / GIT_COMMITTER_EMAIL fallbacks for what neither git config nor the
    environment sets, so that a commit does not fail for a missing committer identity."""
    extra: dict[str, str] = {}
    if not os.environ.get("GIT_COMMITTER_NAME") and _git(top, "config", "user.name").returncode != 0:
        extra["GIT_COMMITTER_NAME"] = FALLBACK_COMMITTER_NAME
    if not os.environ.get("GIT_COMMITTER_EMAIL") and _git(top, "config", "user.email").returncode != 0:
        extra["GIT_COMMITTER_EMAIL"] = FALLBACK_COMMITTER_EMAIL
    return extra


def _commit(top: Path, path: Path, author: StaffMember, message: str) -> str:
    """Commit ``path`` alone and return the commit id; raise ConfigGitError when git fails.

    ``--only`` commits this path even when other changes are staged, and leaves them staged.
    Hooks and signing are skipped, because they may need a terminal or a network that the
    hub does not have.
    """
    relative = str(path.relative_to(top))
    env = _committer_env(top)
    commit_args = ["-c", "commit.gpgsign=false", "commit", "--only", "--no-verify", "--quiet"]
    commit_args += [f"--author={author.git_author}", "--file=-", "--", relative]
    for args, stdin in ((["add", "--", relative], ""), (commit_args, message)):
        result = _git(top, *args, stdin=stdin, extra_env=env)
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            logger.error("git %s failed for config %s: %s", args[0], path, " / ".join(lines))
            detail = lines[0] if lines else f"git {args[0]} exited with status {result.returncode}"
            raise ConfigGitError("config_edit.git_failed", file=path.name, detail=detail)

    return _git(top, "rev-parse", "HEAD").stdout.strip()


def _commit_message(changes: list[str], author: StaffMember) -> str:
    """Build a commit message whose subject names the change and whose body lists every change."""
    joined = "; ".join(changes)
    first_action = changes[0].split(":", 1)[0]
    if len(joined) <= SUBJECT_MAX:
        subject = joined
    elif len(changes) == 1:
        subject = first_action
    else:
        subject = f"{first_action} and {len(changes) - 1} more changes"
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 1] + "…"
    body = "\n".join(f"- {change}" for change in changes)
    return f"{subject}\n\n{body}\n\nSaved in Simpul by {author.full_name.strip()} ({author.username}).\n"


def list_config_commits(path: str | Path, *, limit: int = 100) -> list[ConfigCommit]:
    """Return the newest ``limit`` git commits that changed the config file, newest first, each with
    its diff of that file; an empty list outside git."""
    resolved = Path(path).resolve()
    top = _repository_of(resolved)
    if top is None:
        return []

    record, unit = "\x1e", "\x1f"
    result = _git(
        top,
        "-c",
        "core.quotepath=off",
        "log",
        f"--max-count={limit}",
        "--no-color",
        "--no-ext-diff",
        "--patch",
        f"--format={record}%H{unit}%an{unit}%ae{unit}%aI{unit}%B{unit}",
        "--",
        str(resolved.relative_to(top)),
    )
    if result.returncode != 0:
        # A repository without commits yet has no history of the file.
        logger.debug("git log of %s failed: %s", resolved, result.stderr.strip())
        return []

    commits = []
    for chunk in result.stdout.split(record)[1:]:
        commit_id, name, email, when, message, diff = chunk.split(unit, 5)
        commits.append(
            ConfigCommit(
                id=commit_id,
                author_name=name,
                author_email=email,
                authored_at=datetime.fromisoformat(when),
                message=message.strip(),
                diff=diff.strip("\n") + "\n" if diff.strip() else "",
            )
        )
    return commits


# --- audit -------------------------------------------------------------------------------------


def _record_change(
    db: DbEngine, path: Path, author: StaffMember, changes: list[str], diff: str, commit: str | None
) -> bool:
    detail = {"file": str(path), "changes": changes, "diff": diff, "commit": commit}
    try:
        ops.record_audit(engine=db, actor=author.username, action="config_changed", target=path.name, detail=detail)
    except SQLAlchemyError:
        # The file is saved and committed; only the store's copy of the change is missing.
        logger.exception("config %s saved (commit %s) but its audit entry was not recorded", path, commit)
        return False
    return True
