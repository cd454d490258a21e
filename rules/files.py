"""Read CSV and JSONL exports into readings, laid out as a ``FileSource`` in config describes.

The reader splits rows into readings and judges nothing. A missing marker becomes
``value=None``, text that is not a number stays text, a timestamp that does not parse stays
text, and a device name that is not in the map passes through. The pipeline then rejects each
of these with a reason, so no row is dropped without being counted.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from rules.config import FileSource
from rules.readings import RawReading

logger = logging.getLogger(__name__)

BYTE_ORDER_MARK = "\ufeff"
THOUSANDS_GROUPED = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d*)?$")

Cell = Any
"""One field of a row: text from a CSV file, or any JSON value (or None) from a JSONL file."""


@dataclass(frozen=True, slots=True)
class _Field:
    """One reading per row: the row position of its value, its metric, and its device in a wide file."""

    index: int
    metric: str
    scale: float
    device: str | None


@dataclass(frozen=True, slots=True)
class _Layout:
    """Row positions of everything a source reads, resolved once per file."""

    timestamp: tuple[int, ...]
    device: int | None
    fields: tuple[_Field, ...]


def read_file_source(path: str | Path, source: FileSource, default_zone: str) -> Iterator[RawReading]:
    """Yield the readings of one exported file, in file order.

    A long file gives one reading per metric column of each row, and a wide file one reading
    per configured device column. Naive timestamps are read in ``source.timestamp.timezone``,
    or in ``default_zone`` when the source sets none. ``RawReading.id`` stays None, so the
    pipeline identifies a reading by device, metric and ``ts``. Bytes that are invalid in the
    declared encoding become U+FFFD, so the cells they touch are rejected by the pipeline
    instead of stopping the replay.

    Raises ValueError when a CSV header lacks a column that the source names.
    """
    read_timestamp = _timestamp_reader(source, default_zone)
    read_value = _value_reader(source)
    device_ids = _device_ids(source)
    open_rows = _open_csv if source.format == "csv" else _open_jsonl

    with open(path, encoding=source.encoding, errors="replace", newline="") as handle:
        _skip_byte_order_mark(handle)
        for _ in range(source.skip_rows):
            handle.readline()

        layout, rows = open_rows(handle, source, str(path))
        for row in rows:
            ts = read_timestamp(row, layout.timestamp)
            device = None if layout.device is None else device_ids(row[layout.device])
            for field in layout.fields:
                yield RawReading(
                    device=field.device if device is None else device,
                    metric=field.metric,
                    value=read_value(row[field.index], field.scale),
                    ts=ts,
                )


def _skip_byte_order_mark(handle: IO[str]) -> None:
    # utf-8-sig drops the mark itself, and this also covers a file declared as plain utf-8.
    if handle.read(1) != BYTE_ORDER_MARK:
        handle.seek(0)


# --- rows --------------------------------------------------------------------------------------


def _column_names(source: FileSource) -> tuple[list[str], str | None, list[tuple[str, str, float, str | None]]]:
    """List the timestamp columns, the device column and each (column, metric, scale, device)."""
    stamp = source.timestamp
    timestamp = [name for name in (stamp.column, stamp.date_column, stamp.time_column) if name is not None]
    if source.layout == "long":
        assert source.device is not None  # FileSource requires device for a long file
        fields = [(column.column, column.metric, column.scale, None) for column in source.metrics]
        return timestamp, source.device.column, fields

    fields = [(column.column, column.metric, column.scale, column.device) for column in source.columns]
    return timestamp, None, fields


def _open_csv(handle: IO[str], source: FileSource, path: str) -> tuple[_Layout, Iterator[list[Cell]]]:
    """Read the header into a layout, and return it with an iterator over the data rows.

    Raises ValueError when the header lacks a column that the source names.
    """
    reader = csv.reader(handle, delimiter=source.delimiter)
    header = next(reader, None)
    if header is None:
        return _Layout(timestamp=(), device=None, fields=()), iter(())

    positions: dict[str, int] = {}
    for position, name in enumerate(header):
        positions.setdefault(name.strip(), position)

    def position_of(name: str) -> int:
        if name.strip() not in positions:
            raise ValueError(
                f"{path}: column {name!r} of source {source.id!r} is not in the header, which has "
                f"{', '.join(repr(column) for column in header)}. Fix the column name in the source's config."
            )
        return positions[name.strip()]

    timestamp_names, device_name, field_specs = _column_names(source)
    layout = _Layout(
        timestamp=tuple(position_of(name) for name in timestamp_names),
        device=None if device_name is None else position_of(device_name),
        fields=tuple(
            _Field(position_of(column), metric, scale, device) for column, metric, scale, device in field_specs
        ),
    )
    return layout, _csv_rows(reader, len(header), source.skip_rows, path)


def _csv_rows(reader: Any, width: int, skipped_lines: int, path: str) -> Iterator[list[Cell]]:
    """Yield the non-blank rows, padded with None to the header width.

    A row with too few fields yields None for the absent ones. A row with too many fields is read
    by position, so shifted values reach the pipeline and are rejected there if they are invalid.
    """
    uneven_rows = 0
    first_uneven_line = 0
    for row in reader:
        if not row:
            continue

        if len(row) != width:
            uneven_rows += 1
            first_uneven_line = first_uneven_line or reader.line_num + skipped_lines
        if len(row) < width:
            row = row + [None] * (width - len(row))
        yield row

    if uneven_rows:
        logger.warning(
            "%s: %d rows have a field count other than the header's %d (first at line %d). "
            "Their fields were read by position",
            path,
            uneven_rows,
            width,
            first_uneven_line,
        )


def _open_jsonl(handle: IO[str], source: FileSource, path: str) -> tuple[_Layout, Iterator[list[Cell]]]:
    """Return the layout and an iterator over the objects, each as the list of values of the named keys."""
    timestamp_names, device_name, field_specs = _column_names(source)
    keys = [*timestamp_names, *([device_name] if device_name is not None else [])]
    keys += [column for column, _, _, _ in field_specs]
    positions = {key: keys.index(key) for key in keys}

    layout = _Layout(
        timestamp=tuple(positions[name] for name in timestamp_names),
        device=None if device_name is None else positions[device_name],
        fields=tuple(_Field(positions[column], metric, scale, device) for column, metric, scale, device in field_specs),
    )
    return layout, _jsonl_rows(handle, keys, source.skip_rows, path)


def _jsonl_rows(handle: IO[str], keys: list[str], skipped_lines: int, path: str) -> Iterator[list[Cell]]:
    """Yield each non-blank line's values of ``keys``, with None for an absent key.

    A line that is not a JSON object yields None for every key, so its readings are rejected
    (missing value, invalid timestamp) and still counted.
    """
    invalid_lines = 0
    first_invalid_line = 0
    for line_number, line in enumerate(handle, start=skipped_lines + 1):
        if not line.strip():
            continue

        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            invalid_lines += 1
            first_invalid_line = first_invalid_line or line_number
            record = {}
        yield [record.get(key) for key in keys]

    if invalid_lines:
        logger.warning(
            "%s: %d lines are not JSON objects (first at line %d), so their readings have no values",
            path,
            invalid_lines,
            first_invalid_line,
        )


# --- timestamps, devices and values ------------------------------------------------------------


def _timestamp_reader(source: FileSource, default_zone: str) -> Callable[[Any, tuple[int, ...]], Any]:
    """Build the function that turns a row's timestamp fields into an aware datetime.

    Text that does not parse is returned as written, so the pipeline rejects it as an invalid
    timestamp. A date and a time column are joined with one space before parsing, so ``format``
    describes the joined text. A JSON number is passed through for the pipeline to read as
    epoch seconds.
    """
    stamp_format = source.timestamp.format
    zone = ZoneInfo(source.timestamp.timezone or default_zone)

    # Rows of one export batch share a timestamp, and strptime is slow, so parsed text is cached.
    @lru_cache(maxsize=8192)
    def parse(text: str) -> datetime | str:
        cleaned = text.strip()
        try:
            if stamp_format == "iso":
                moment = datetime.fromisoformat(cleaned)
            else:
                moment = datetime.strptime(cleaned, stamp_format)
        except ValueError:
            return text
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)

    def read(row: Any, positions: tuple[int, ...]) -> Any:
        if len(positions) == 2:
            date, time = row[positions[0]], row[positions[1]]
            if date is None or time is None:
                return date if time is None else time
            return parse(f"{str(date).strip()} {str(time).strip()}")

        cell = row[positions[0]]
        return parse(cell) if isinstance(cell, str) else cell

    return read


def _device_ids(source: FileSource) -> Callable[[Cell], str]:
    """Build the function that maps a long file's device cell to a device id.

    A name that is not in the map passes through, so the pipeline rejects it as an unknown device.
    """
    if source.device is None:
        return str

    strip = source.device.strip
    mapping = {(name.strip() if strip else name): device for name, device in source.device.map.items()}

    def device_id(cell: Cell) -> str:
        name = "" if cell is None else str(cell)
        if strip:
            name = name.strip()
        return mapping.get(name, name)

    return device_id


def _value_reader(source: FileSource) -> Callable[[Cell, float], object]:
    """Build the function that turns one cell into a reading's value.

    Missing markers give None. A number gives a float multiplied by the column's scale. Any other
    text is returned as written. With ``decimal: ","`` a dot between groups of three digits is a
    thousands separator, as in Indonesian number formats: ``1.234,5`` is 1234.5 and ``1.234`` is
    1234. Any other dot is a decimal point (``12.5``), so the scale applies to such values too.
    """
    missing = frozenset(marker.strip() for marker in source.missing)
    decimal_comma = source.decimal == ","

    def read(cell: Cell, scale: float) -> object:
        if cell is None or isinstance(cell, bool):
            return cell
        if isinstance(cell, (int, float)):
            return _scaled(float(cell), repr(cell), scale) if math.isfinite(cell) else cell
        if not isinstance(cell, str):
            return cell

        text = cell.strip()
        if text in missing:
            return None

        if decimal_comma:
            if THOUSANDS_GROUPED.match(text):
                text = text.replace(".", "")
            text = text.replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            return cell

        # float() also accepts "nan", "inf" and "1_000", and none of them is a reading.
        if not math.isfinite(number) or "_" in text:
            return cell
        return _scaled(number, text, scale)

    return read


def _scaled(number: float, text: str, scale: float) -> float:
    if scale == 1:
        return number
    # Decimal keeps 101 * 0.1 at 10.1, where float gives 10.100000000000001 and fails "at most 10.1".
    return float(Decimal(text) * Decimal(repr(scale)))
