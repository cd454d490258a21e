"""Secrets come from the environment; config.yaml holds only ``${NAME}`` references."""

from __future__ import annotations

import os
import re

from rules.config import SecretRef

_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


class MissingSecret(LookupError):
    """Raised when a referenced environment variable is not set."""


def resolve_secret(reference: SecretRef) -> str:
    value = os.environ.get(reference.env)
    if not value:
        raise MissingSecret(f"environment variable {reference.env} is not set; export it before starting the hub")
    return value


def resolve_env_references(text: str) -> str:
    """Replace every ``${NAME}`` in ``text`` with the environment variable's value."""

    def substitute(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise MissingSecret(f"environment variable {match.group(1)} is not set; export it before starting the hub")
        return value

    return _REFERENCE.sub(substitute, text)
