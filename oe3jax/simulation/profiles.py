"""Hourly profiles of one year (8,760 hours): the shipped Iquitos data and user CSV files.

Every profile is a float64 NumPy array of shape ``(8760,)`` holding the mean power of each hour in
kW, which is also the energy of that hour in kWh (one step = 1 h).

* :func:`builtin_profile` reads a column of the packaged ``data/iquitos_2024.csv`` (2024 in local
  time America/Lima, Feb 29 dropped, hour-beginning timestamps; made by
  ``scripts/make_profiles.py``).
* :func:`load_profile` reads a column of a user CSV: power (kW) or energy (kWh) per interval,
  hourly or 15-minute rows (aggregated to hours), 8,760 hours or a leap year of 8,784 hours whose
  Feb 29 is dropped using a timestamp column.

Bad input raises :class:`ProfileError` (a ``ValueError``) with a one-line message naming the file,
the field, the line where relevant and what is accepted. Only NumPy and the standard library are
used here.
"""
from __future__ import annotations

import calendar
import csv
import datetime as dt
import functools
import importlib.resources
import math
from pathlib import Path

import numpy as np

HOURS_PER_YEAR = 8760
HOURS_PER_LEAP_YEAR = 8784
BUILTIN_FILE = "iquitos_2024.csv"
BUILTIN_NAMES = ("pv_kw", "mall_kw")
UNITS = ("kW", "kWh")
RESOLUTIONS = ("hourly", "15min")
KINDS = ("load", "pv")

_ROWS_PER_HOUR = {"hourly": 1, "15min": 4}
_TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
_TIMESTAMP_ACCEPTED = "ISO local time such as '2024-01-01 00:00' or '2024-01-01T00:00:00'"


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


def _choice(field: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ProfileError(f"{field}: expected one of {', '.join(repr(a) for a in accepted)}, got {value!r}")


def _parse_timestamp(text: str) -> dt.datetime | None:
    text = text.strip()
    for fmt in _TIMESTAMP_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def _read_columns(path: Path, names: list[str]) -> tuple[dict[str, list[str]], list[int]]:
    """Cells of the named columns and the file line of each data row (blank lines skipped)."""
    if not path.is_file():
        raise ProfileError(f"{path}: profile file not found")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ProfileError(f"{path}: profile file is empty (expected a header row naming the columns)")
        header = [name.strip() for name in header]
        for name in names:
            if name not in header:
                raise ProfileError(f"{path}: unknown column {name!r}; available columns: "
                                   f"{', '.join(repr(h) for h in header)}")
        index = {name: header.index(name) for name in names}
        cells: dict[str, list[str]] = {name: [] for name in names}
        lines: list[int] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            for name, i in index.items():
                cells[name].append(row[i] if i < len(row) else "")
            lines.append(reader.line_num)
    return cells, lines


def _parse_values(path: Path, column: str, cells: list[str], lines: list[int], kind: str) -> np.ndarray:
    values = np.empty(len(cells))
    for i, (cell, line) in enumerate(zip(cells, lines)):
        text = cell.strip()
        if not text:
            raise ProfileError(f"{path}: column {column!r} line {line}: empty cell (expected a finite number)")
        try:
            value = float(text)
        except ValueError:
            raise ProfileError(
                f"{path}: column {column!r} line {line}: {text!r} is not a number (expected a finite number)"
            ) from None
        if not math.isfinite(value):
            raise ProfileError(f"{path}: column {column!r} line {line}: {text!r} (expected a finite number, not NaN/inf)")
        if kind == "pv" and value < 0.0:
            raise ProfileError(f"{path}: column {column!r} line {line}: negative PV {value:g} (expected >= 0)")
        values[i] = value
    return values


def _parse_timestamps(path: Path, column: str, cells: list[str], lines: list[int],
                      resolution: str) -> list[dt.datetime]:
    """Parse every timestamp and check they step evenly by ``resolution``.

    The one gap accepted is a leap year's Feb 29 already left out (Feb 28 -> Mar 1).
    """
    stamps: list[dt.datetime] = []
    for cell, line in zip(cells, lines):
        stamp = _parse_timestamp(cell)
        if stamp is None:
            raise ProfileError(f"{path}: timestamp column {column!r} line {line}: cannot parse {cell.strip()!r} "
                               f"(expected {_TIMESTAMP_ACCEPTED})")
        stamps.append(stamp)
    step = dt.timedelta(hours=1) if resolution == "hourly" else dt.timedelta(minutes=15)
    for i in range(1, len(stamps)):
        gap = stamps[i] - stamps[i - 1]
        leap_day_dropped = (gap == step + dt.timedelta(days=1) and (stamps[i].month, stamps[i].day) == (3, 1)
                            and calendar.isleap(stamps[i].year))
        if gap != step and not leap_day_dropped:
            raise ProfileError(
                f"{path}: timestamp column {column!r} line {lines[i]}: {stamps[i].isoformat(' ')} follows "
                f"{stamps[i - 1].isoformat(' ')} (expected consecutive {resolution} steps of {step})")
    if resolution == "15min" and stamps and stamps[0].minute != 0:
        raise ProfileError(f"{path}: timestamp column {column!r} line {lines[0]}: 15-minute data must start "
                           f"at the beginning of an hour (got {stamps[0].isoformat(' ')})")
    return stamps


def load_profile(path: str | Path, column: str, unit: str = "kW", resolution: str = "hourly",
                 kind: str = "load", timestamp_column: str | None = None) -> np.ndarray:
    """Read one year of a profile from a CSV file with a header row.

    Args:
        path: the CSV file.
        column: the column holding the values.
        unit: ``"kW"`` (mean power over each interval) or ``"kWh"`` (energy in each interval).
        resolution: ``"hourly"`` or ``"15min"``; 15-minute rows are aggregated to hours, four rows
            an hour (kWh summed, kW averaged).
        kind: ``"load"`` or ``"pv"``; PV additionally rejects negative values.
        timestamp_column: optional column of local timestamps (``2024-01-01 00:00``,
            ``2024-01-01T00:00:00``). When given every timestamp is parsed and must step evenly
            by the resolution. It is required for a leap year: 8,784 hours whose 24 hours of
            Feb 29 are dropped.

    Returns:
        float64 array of shape ``(8760,)``: mean power of each hour in kW (= kWh in that hour).

    Raises:
        ProfileError: a one-line message naming the file, the field, the line where relevant
            and what is accepted.
    """
    _choice("unit", unit, UNITS)
    _choice("resolution", resolution, RESOLUTIONS)
    _choice("kind", kind, KINDS)
    path = Path(path)
    names = [column] if timestamp_column is None else [column, timestamp_column]
    cells, lines = _read_columns(path, names)

    rows_per_hour = _ROWS_PER_HOUR[resolution]
    n_rows = len(lines)
    year_rows, leap_rows = HOURS_PER_YEAR * rows_per_hour, HOURS_PER_LEAP_YEAR * rows_per_hour
    if n_rows not in (year_rows, leap_rows):
        raise ProfileError(f"{path}: column {column!r} has {n_rows} {resolution} rows (accepted: {year_rows} "
                           f"for a year, or {leap_rows} for a leap year with a timestamp column)")
    if n_rows == leap_rows and timestamp_column is None:
        raise ProfileError(f"{path}: column {column!r} has {n_rows} {resolution} rows, a leap year: set "
                           f"timestamp_column so that Feb 29 can be dropped (or give {year_rows} rows)")

    values = _parse_values(path, column, cells[column], lines, kind)
    if timestamp_column is not None:
        stamps = _parse_timestamps(path, timestamp_column, cells[timestamp_column], lines, resolution)
        if n_rows == leap_rows:
            keep = np.array([not (s.month == 2 and s.day == 29) for s in stamps])
            if n_rows - keep.sum() != 24 * rows_per_hour:
                raise ProfileError(f"{path}: timestamp column {timestamp_column!r}: {n_rows} rows need a full "
                                   f"Feb 29 to drop, found {n_rows - keep.sum()} of its {24 * rows_per_hour} rows")
            values = values[keep]

    hourly = values.reshape(HOURS_PER_YEAR, rows_per_hour)
    if rows_per_hour == 1:
        return hourly[:, 0].astype(np.float64)
    # Energy per 15 min sums to the hour's energy (= its mean kW); power per 15 min averages.
    return (hourly.sum(axis=1) if unit == "kWh" else hourly.mean(axis=1)).astype(np.float64)


@functools.lru_cache(maxsize=None)
def _builtin_table() -> dict[str, np.ndarray]:
    resource = importlib.resources.files("oe3jax.simulation") / "data" / BUILTIN_FILE
    with importlib.resources.as_file(resource) as path:
        table = {}
        for name in BUILTIN_NAMES:
            array = load_profile(path, name, kind="pv" if name.startswith("pv") else "load",
                                 timestamp_column="timestamp")
            array.setflags(write=False)
            table[name] = array
    return table


def builtin_profile(name: str) -> np.ndarray:
    """The shipped Iquitos 2024 profile ``"pv_kw"`` (PV AC power) or ``"mall_kw"`` (mall load).

    Returns a read-only, cached float64 array of shape ``(8760,)`` in kW (hourly mean power);
    copy it before modifying.
    """
    _choice("profile name", name, BUILTIN_NAMES)
    return _builtin_table()[name]
