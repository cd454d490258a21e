"""Dotted field paths into parsed JSON, shared by the sources that map JSON payloads to readings.

A path such as ``data.level`` walks object keys. A part made of digits indexes a list, so
``stations.0.level`` is the level of the first station.
"""

from __future__ import annotations

import json
from typing import Any


def field_value(document: Any, path: str) -> Any:
    """Return the value at a dotted field path of parsed JSON, or None where the path is missing."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def timestamp_value(value: Any) -> str | float | None:
    """Return a JSON timestamp as ISO text or epoch seconds; other JSON types become text, which the hub rejects."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return json.dumps(value)
