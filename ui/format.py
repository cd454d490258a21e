"""Numbers, times and durations as staff read them: Indonesian or English, in the agency's zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal

LOCALES = {"id": "id_ID", "en": "en_GB"}
# Indonesia's three zones go by their Indonesian names in both languages.
ZONE_NAMES = {
    "Asia/Jakarta": "WIB",
    "Asia/Pontianak": "WIB",
    "Asia/Makassar": "WITA",
    "Asia/Jayapura": "WIT",
}
DATE_TIME_PATTERN = {"id": "d MMM y HH.mm", "en": "d MMM y HH:mm"}
# Chart axes use d3 time formats, which name months in English only, so the dates are numeric.
# A chart of under an hour shows seconds, so its ticks do not repeat the same minute.
CHART_TIME = {"id": "%d/%m %H.%M", "en": "%d/%m %H:%M"}
CHART_TIME_SHORT = {"id": "%H.%M.%S", "en": "%H:%M:%S"}


def chart_time(lang: str, span: timedelta) -> str:
    """Return the d3 time format for a chart axis that covers ``span``."""
    return CHART_TIME_SHORT[lang] if span < timedelta(hours=1) else CHART_TIME[lang]


def zone_name(zone: str) -> str:
    return ZONE_NAMES.get(zone, zone)


def number(value: float | int | str | None, lang: str, digits: int = 1) -> str:
    """Format ``1234.5`` as ``1.234,5`` in Indonesian and ``1,234.5`` in English; text is returned as it is."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    pattern = "#,##0" if digits == 0 else "#,##0." + "#" * digits
    return format_decimal(value, format=pattern, locale=LOCALES[lang])


def when(moment: datetime | None, zone: str, lang: str) -> str:
    """Format a time in ``zone`` with the zone's name, e.g. ``4 Des 2026 22.40 WIB``."""
    if moment is None:
        return "–"
    local = moment.astimezone(ZoneInfo(zone))
    return f"{format_datetime(local, DATE_TIME_PATTERN[lang], locale=LOCALES[lang])} {zone_name(zone)}"


def ago(moment: datetime | None, now: datetime, lang: str) -> str:
    """Describe how long before ``now`` the ``moment`` was, e.g. ``5 menit yang lalu``."""
    if moment is None:
        return "–"
    return format_timedelta(moment - now, add_direction=True, locale=LOCALES[lang])


def duration(span: timedelta, lang: str) -> str:
    return format_timedelta(span, locale=LOCALES[lang], threshold=1.5)
