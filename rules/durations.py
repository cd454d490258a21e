"""Durations written in config as ``30s``, ``15m``, ``6h``, ``2d`` or ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([smhd])")
_WHOLE = re.compile(r"^(?:\d+[smhd])+$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``15m`` or ``1h30m``; raise ValueError on anything else."""
    cleaned = text.strip().lower().replace(" ", "")
    if not _WHOLE.match(cleaned):
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d, e.g. 15m or 1h30m")

    seconds = sum(int(number) * _SECONDS[unit] for number, unit in _PART.findall(cleaned))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Format a duration back to the shortest config form, e.g. 5400 s as ``1h30m``."""
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"

    parts = []
    for unit in ("d", "h", "m", "s"):
        count, remaining = divmod(remaining, _SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
