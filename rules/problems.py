"""Problems found in config.yaml, each tied to a file, a line and a key path.

A key path is a tuple of YAML keys and list indexes, e.g. ``("rules", 3, "when", "above")``,
written for people as ``rules[3].when.above``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.i18n import translate

KeyPath = tuple[str | int, ...]

# Shown in place of a value given for a secret, so that messages and logs never carry it.
HIDDEN = "***"

# Keys whose value is a credential: the whole key, or its last part after "_" or "-".
SECRET_KEY = re.compile(r"(?:^|[_-])(?:token|secret|password|passwd|api[_-]?key|apikey)$", re.IGNORECASE)


def format_path(path: KeyPath) -> str:
    """Write a key path the way it reads in the file, e.g. ``rules[3].when.above``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and SECRET_KEY.search(key) is not None


@dataclass(frozen=True)
class Problem:
    """One problem in a config file; ``code`` is stable and ``params`` fill its message."""

    file: str
    line: int | None
    path: str
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def message(self, lang: str | None = None) -> str:
        text = translate(self.code, lang, **self.params)
        suggestion = self.params.get("suggestion")
        if suggestion:
            text += ". " + translate("did_you_mean", lang, suggestion=suggestion)
        return text

    def format(self, lang: str | None = None) -> str:
        """Render ``FILE:LINE key.path: message``; the line and the path are left out when unknown."""
        location = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.path:
            location += f" {self.path}"
        return f"{location}: {self.message(lang)}"


class ProblemList:
    """Collects the problems of one file and finds the line of each key path.

    ``lines`` maps key paths to 1-based line numbers. A path not in it takes the line of its
    longest known prefix, so a missing key points at the block it is missing from.
    A problem whose path is inside a secret-valued key shows its input as ``***``.
    """

    def __init__(self, file: str, lines: Mapping[KeyPath, int] | None = None) -> None:
        self.file = file
        self.lines: Mapping[KeyPath, int] = lines or {}
        self._entries: list[tuple[KeyPath, Problem]] = []

    @property
    def problems(self) -> list[Problem]:
        return [problem for _, problem in self._entries]

    def line_of(self, path: KeyPath) -> int | None:
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def add(self, path: KeyPath, code: str, *, line: int | None = None, **params: Any) -> None:
        """Record a problem unless the same code is already recorded at this path.

        A literal secret outranks every other problem at its path: staff should see the leak,
        not a type error about the leaked value.
        """
        if "input" in params and any(is_secret_key(part) for part in path):
            params["input"] = HIDDEN

        known_codes = [known.code for known_path, known in self._entries if known_path == path]
        if code in known_codes or "literal_secret" in known_codes:
            return
        if code == "literal_secret":
            self._entries = [(known_path, known) for known_path, known in self._entries if known_path != path]

        problem = Problem(
            file=self.file,
            line=line if line is not None else self.line_of(path),
            path=format_path(path),
            code=code,
            params=params,
        )
        self._entries.append((path, problem))

    def has_problem_within(self, path: KeyPath) -> bool:
        return any(known_path[: len(path)] == path for known_path, _ in self._entries)

    def sorted(self) -> list[Problem]:
        return sorted(self.problems, key=lambda problem: (problem.line or 0, problem.path))
