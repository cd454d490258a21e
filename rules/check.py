"""The ``check`` command: list every problem in a config file, or confirm that it is valid."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from rules.config import SecretRef
from rules.i18n import DEFAULT_LANGUAGE, translate
from rules.loader import load_config


def run_check(config_path: str | Path, lang: str | None = None, out: TextIO | None = None) -> int:
    """Print the problems of the config at ``config_path`` and return 1, or a summary and return 0.

    Each problem takes one line, ``FILE:LINE key.path: message``, in line order, and a last
    line counts them. A valid config whose ``${NAME}`` secrets are not set in the environment
    still returns 0, with one warning line per missing variable. Messages are in ``lang``
    (``id`` or ``en``), else in the config's ``simpul.language``, else in Indonesian. Output
    goes to ``out``, standard output by default.
    """
    stream = out if out is not None else sys.stdout
    loaded = load_config(config_path)
    language = lang or loaded.config.simpul.language or DEFAULT_LANGUAGE
    file = str(config_path)

    if loaded.problems:
        for problem in sorted(loaded.problems, key=lambda problem: (problem.line or 0, problem.path)):
            print(problem.format(language), file=stream)
        print(translate("check.failed", language, file=file, count=len(loaded.problems)), file=stream)
        return 1

    config = loaded.config
    summary = translate(
        "check.ok",
        language,
        file=file,
        agencies=len(config.agencies),
        devices=len(config.devices),
        rules=len(config.rules),
    )
    print(summary, file=stream)
    for path, reference in secret_references(config):
        if not os.environ.get(reference.env):
            print(translate("check.secret_unset", language, file=file, path=path, name=reference.env), file=stream)
    return 0


def secret_references(value: Any, path: str = "") -> Iterator[tuple[str, SecretRef]]:
    """Yield every ``${NAME}`` reference in the config with its key path, such as ``sources[0].auth.token``."""
    if isinstance(value, SecretRef):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secret_references(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from secret_references(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from secret_references(item, f"{path}.{key}" if path else str(key))
