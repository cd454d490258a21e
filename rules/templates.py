"""Message templates over the reading, device and rule, e.g. ``"Tinggi {value} cm di {device.name}"``.

Fields: ``value``, ``unit``, ``metric``, ``ts`` (in the agency's zone), ``device.*`` (id, name,
kind, agency, attributes.NAME, location.lat/lon), ``rule.*`` (id, name, severity). A field that
does not exist is left in the text as written, so a typo shows in the alert instead of losing it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any


class _Formatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        parts = field_name.split(".")
        if any(part.startswith("_") for part in parts):
            return "{" + field_name + "}", field_name
        value: Any = kwargs
        for part in parts:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                return "{" + field_name + "}", field_name
        return value, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, float) and not format_spec:
            return f"{value:g}"
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)


_FORMATTER = _Formatter()


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Fill ``template`` from ``fields``; malformed braces leave the template unchanged."""
    try:
        return _FORMATTER.vformat(template, (), dict(fields))
    except (ValueError, IndexError, KeyError):
        return template
