"""Hourly profiles of one year (8,760 hours): the shipped Iquitos data and user CSV files.

Every profile is a float64 NumPy array of shape ``(8760,)`` holding the mean power of each hour in
kW, which is also the energy of that hour in kWh (one step = 1 h). Hour ``t`` is hour ``t % 24``
local time (America/Lima, UTC-5, no daylight saving) of day ``t // 24`` of a 365-day year: 2024
with 29 February left out.

* :func:`builtin_profile` gives a packaged profile of one of the :data:`WEATHER_YEARS` (made by
  ``scripts/make_profiles.py``): ``"2024"`` is ``data/iquitos_2024.csv``; the synthetic years
  ``"syn1"`` to ``"syn5"`` (the same site, plant and building under other seeded weather) are
  ``data/weather_years.npz``, uint16 tenths of a kW. :func:`weather_year_summary` gives a year's
  figures.
* :func:`read_profile` reads a column of a user CSV (power in kW or energy in kWh per interval,
  hourly or 15-minute rows aggregated to hours) and returns the hours with notes on every
  assumption it made; :func:`load_profile` returns the hours alone.

  With a timestamp column, rows are placed by date and time: ISO 8601 stamps (a UTC offset is
  converted to the site's UTC-5), day-first or month-first stamps (``dayfirst``) or an explicit
  ``timestamp_format``; 29 February is dropped; a missing hour is an error naming the first one
  (``fill_missing`` copies the same time of the previous day instead, and says so). Without
  timestamps, exactly 8,760 hours of rows are taken as 1 January 00:00 onwards.

Bad input raises :class:`ProfileError` (a ``ValueError``) with a one-line message naming the file,
the field, the line where relevant and what is accepted. Only NumPy and the standard library are
used here.
"""
from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import datetime as dt
import functools
import importlib.resources
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

HOURS_PER_YEAR = 8760
HOURS_PER_LEAP_YEAR = 8784
CALENDAR_YEAR = 2024  # the year the 365-day calendar stands for (1 January a Monday)
SITE_UTC_OFFSET = dt.timedelta(hours=-5)  # America/Lima: UTC-5 all year, no daylight saving
SITE_TZ = dt.timezone(SITE_UTC_OFFSET)
BUILTIN_FILE = "iquitos_2024.csv"
YEARS_FILE = "weather_years.npz"
BUILTIN_NAMES = ("pv_kw", "mall_kw")
#: The packaged weather years: the 2024 profile, then five synthetic years (seeds 1 to 5 of
#: ``scripts/make_profiles.py``). Training and evaluation use disjoint subsets of them.
WEATHER_YEARS = ("2024", "syn1", "syn2", "syn3", "syn4", "syn5")
DEFAULT_YEAR = "2024"
UNITS = ("kW", "kWh")
RESOLUTIONS = ("hourly", "15min")
KINDS = ("load", "pv")
DELIMITERS = (",", ";", "\t", "|")
DECIMALS = (".", ",")
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Largest profile file read: a year of 15-minute rows (35,136) with 64 columns of 100 characters
#: each is 225 MB; a larger file is not a profile and would be read whole into memory.
MAX_PROFILE_BYTES = 256 * 2**20

# Loader options besides path, column and kind, with their defaults (the keys a scenario's
# ``pv_profile`` / ``mall_profile`` mapping accepts besides ``path`` and ``column``).
OPTIONS: dict[str, Any] = {
    "unit": "kW",
    "resolution": "hourly",
    "timestamp_column": None,
    "timestamp_format": None,
    "dayfirst": None,
    "interval_end": False,
    "fill_missing": False,
    "delimiter": None,
    "decimal": ".",
    "encoding": "utf-8",
}

_ROWS_PER_HOUR = {"hourly": 1, "15min": 4}
_MONTH_START = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)  # day of year of each 1st, 365 days
_STAMP = re.compile(
    r"(?P<a>\d{1,4})(?P<sep>[-/.])(?P<b>\d{1,2})(?P=sep)(?P<c>\d{1,4})"
    r"(?:[ T]+|,\s*)(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<frac>\d+))?)?"
    r"\s*(?P<tz>Z|UTC|[+-]\d{2}(?::?\d{2})?)?"
)
_STAMP_ACCEPTED = ("ISO 8601 such as '2024-01-01 00:00' or '2024-01-01T00:00:00-05:00', "
                   "D/M/YYYY H:MM with dayfirst: true, M/D/YYYY H:MM with dayfirst: false, "
                   "or any layout given as timestamp_format")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Profile:
    """One year of hours read from a file, and what the loader assumed to place them."""

    kw: np.ndarray  # float64 (8760,), mean power of each hour in kW
    notes: tuple[str, ...]  # one short sentence per assumption, for the run's log and config


# ----------------------------------------------------------------------------- options
def _choice(field: str, value: Any, accepted: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in accepted:
        raise ProfileError(f"{field}: expected one of {', '.join(repr(a) for a in accepted)}, got {value!r}")


def check_options(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The loader options (keys of :data:`OPTIONS`) with defaults filled in, checked.

    ``prefix`` goes before the key in messages (``"pv_profile."``). Raises :class:`ProfileError`
    naming the key, the value and what is accepted; a key that would be ignored is rejected.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ProfileError(f"{prefix}{unknown[0]}: unknown option; accepted: {', '.join(OPTIONS)}")
    opts = {**OPTIONS, **options}
    _choice(prefix + "unit", opts["unit"], UNITS)
    _choice(prefix + "resolution", opts["resolution"], RESOLUTIONS)
    for key in ("timestamp_column", "timestamp_format"):
        value = opts[key]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ProfileError(f"{prefix}{key}: expected a non-empty string or null, got {value!r}")
    if opts["timestamp_format"] is not None and "%" not in opts["timestamp_format"]:
        raise ProfileError(f"{prefix}timestamp_format: expected a strptime layout such as '%d/%m/%Y %H:%M', "
                           f"got {opts['timestamp_format']!r}")
    if opts["dayfirst"] is not None and not isinstance(opts["dayfirst"], bool):
        raise ProfileError(f"{prefix}dayfirst: expected true, false or null, got {opts['dayfirst']!r}")
    for key in ("interval_end", "fill_missing"):
        if not isinstance(opts[key], bool):
            raise ProfileError(f"{prefix}{key}: expected true or false, got {opts[key]!r}")
    if opts["timestamp_column"] is None:
        for key in ("timestamp_format", "dayfirst", "interval_end", "fill_missing"):
            if opts[key] not in (None, False):
                raise ProfileError(f"{prefix}{key}: {opts[key]!r} needs a timestamp_column to apply to")
    if opts["timestamp_format"] is not None and opts["dayfirst"] is not None:
        raise ProfileError(f"{prefix}dayfirst: {opts['dayfirst']!r} has no effect with a timestamp_format "
                           f"(which fixes the order); leave it null")
    if opts["delimiter"] is not None:
        _choice(prefix + "delimiter", opts["delimiter"], DELIMITERS)
    _choice(prefix + "decimal", opts["decimal"], DECIMALS)
    if opts["delimiter"] == opts["decimal"]:
        raise ProfileError(f"{prefix}decimal: {opts['decimal']!r} is also the delimiter; choose another delimiter")
    encoding = opts["encoding"]
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ProfileError(f"{prefix}encoding: expected a Python codec name such as 'utf-8' or 'cp1252', "
                           f"got {encoding!r}") from None
    return opts


# ----------------------------------------------------------------------------- reading the file
def _decode(path: Path, raw: bytes, encoding: str) -> str:
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ProfileError(
            f"{path}: not {encoding} text: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}); "
            f"save the file as UTF-8 or set encoding to the file's codec (for example 'cp1252')"
        ) from None


def _detect_delimiter(path: Path, text: str, decimal: str) -> str:
    sample = "\n".join(text.splitlines()[:20])
    header = sample.split("\n", 1)[0]
    if not any(d in header for d in DELIMITERS):
        return ";" if decimal == "," else ","  # a single column
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        raise ProfileError(f"{path}: cannot detect the column delimiter; set delimiter to one of "
                           f"{', '.join(repr(d) for d in DELIMITERS)}") from None


def _read_columns(path: Path, names: list[str], opts: dict[str, Any],
                  notes: list[str]) -> tuple[dict[str, list[str]], list[int]]:
    """Cells of the named columns and the file line of each data row (blank lines skipped)."""
    if path.is_dir():
        raise ProfileError(f"{path} is a directory, not a CSV file")
    if not path.is_file():
        where = "" if path.is_absolute() else f" (a relative path, looked up from the current directory {Path.cwd()})"
        raise ProfileError(f"{path}: profile file not found{where}" if not path.exists()
                           else f"{path} is not a regular file (expected a CSV file)")
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path} is {size / 2**20:,.0f} MiB, larger than {MAX_PROFILE_BYTES // 2**20} MiB; "
                               "a profile is one year of hourly or 15-minute rows")
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    text = _decode(path, raw, opts["encoding"])
    delimiter = opts["delimiter"]
    if delimiter is None:
        delimiter = _detect_delimiter(path, text, opts["decimal"])
        if delimiter != "," and len(text.splitlines()[0].split(delimiter)) > 1:
            notes.append(f"delimiter {delimiter!r} detected")
    if delimiter == opts["decimal"]:
        raise ProfileError(f"{path}: decimal {opts['decimal']!r} is also the column delimiter; set delimiter")
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        return _columns_of(path, reader, names, delimiter)
    except csv.Error as exc:  # a cell over the csv module's field size limit, ...
        raise ProfileError(f"{path}: line {reader.line_num}: not a CSV row ({exc})") from None


def _columns_of(path: Path, reader: Any, names: list[str], delimiter: str) -> tuple[dict[str, list[str]], list[int]]:
    header = next(reader, None)
    if header is None:
        raise ProfileError(f"{path}: profile file is empty (expected a header row naming the columns)")
    header = [name.strip() for name in header]
    index: dict[str, int] = {}
    for name in names:
        where = [i + 1 for i, h in enumerate(header) if h == name]
        if not where:
            raise ProfileError(f"{path}: unknown column {name!r}; available columns: "
                               f"{', '.join(repr(h) for h in header)} (delimiter {delimiter!r})")
        if len(where) > 1:
            raise ProfileError(f"{path}: column {name!r} appears {len(where)} times in the header (columns "
                               f"{', '.join(map(str, where))}); rename all but one")
        index[name] = where[0] - 1
    cells: dict[str, list[str]] = {name: [] for name in names}
    lines: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        for name, i in index.items():
            cells[name].append(row[i] if i < len(row) else "")
        lines.append(reader.line_num)
    return cells, lines


def _parse_values(path: Path, column: str, cells: list[str], lines: list[int], kind: str,
                  decimal: str) -> np.ndarray:
    values = np.empty(len(cells))
    for i, (cell, line) in enumerate(zip(cells, lines)):
        text = cell.strip()
        if not text:
            raise ProfileError(f"{path}: column {column!r} line {line}: empty cell (expected a finite number)")
        try:
            if decimal == "," and "." in text:
                raise ValueError
            value = float(text.replace(",", ".") if decimal == "," else text)
        except ValueError:
            hint = {".": " (set decimal: ',' for decimal commas)" if "," in text else "",
                    ",": " (decimal ',' and no thousands separators)"}[decimal]
            raise ProfileError(
                f"{path}: column {column!r} line {line}: {text!r} is not a number (expected a finite number){hint}"
            ) from None
        if not math.isfinite(value):
            raise ProfileError(f"{path}: column {column!r} line {line}: {text!r} (expected a finite number, not NaN/inf)")
        if abs(value) > FLOAT32_MAX:
            raise ProfileError(f"{path}: column {column!r} line {line}: {text!r} overflows float32 "
                               f"(expected |value| <= {FLOAT32_MAX:.4g})")
        if kind == "pv" and value < 0.0:
            raise ProfileError(f"{path}: column {column!r} line {line}: negative PV {value:g} (expected >= 0)")
        values[i] = value
    return values


# ----------------------------------------------------------------------------- timestamps
def _stamp_parser(timestamp_format: str | None, dayfirst: bool | None) -> Callable[[str], dt.datetime]:
    """A function from a cell to a datetime (aware when the cell has a UTC offset); raises ValueError."""
    if timestamp_format is not None:
        return lambda text: dt.datetime.strptime(text, timestamp_format)

    def parse(text: str) -> dt.datetime:
        m = _STAMP.fullmatch(text)
        if m is None:
            raise ValueError(f"expected {_STAMP_ACCEPTED}")
        a, b, c = m["a"], m["b"], m["c"]
        if len(a) == 4 and len(c) <= 2:
            year, month, day = int(a), int(b), int(c)
        elif len(c) == 4 and len(a) <= 2:
            if dayfirst is None:
                raise ValueError("day and month order is ambiguous: set dayfirst: true (D/M/YYYY) "
                                 "or false (M/D/YYYY)")
            year = int(c)
            day, month = (int(a), int(b)) if dayfirst else (int(b), int(a))
        else:
            raise ValueError(f"expected {_STAMP_ACCEPTED}")
        hour, minute = int(m["H"]), int(m["M"])
        second = int(m["S"] or 0)
        micro = int((m["frac"] or "0")[:6].ljust(6, "0"))
        tz = None
        if m["tz"] in ("Z", "UTC"):
            tz = dt.timezone.utc
        elif m["tz"]:
            sign = -1 if m["tz"][0] == "-" else 1
            digits = m["tz"][1:].replace(":", "")
            tz = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0)))
        if hour == 24 and minute == second == micro == 0:  # 24:00 = the next day's midnight
            return dt.datetime(year, month, day, tzinfo=tz) + dt.timedelta(days=1)
        return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)

    return parse


def _parse_timestamps(path: Path, column: str, cells: list[str], lines: list[int], opts: dict[str, Any],
                      notes: list[str]) -> list[dt.datetime]:
    """Local (UTC-5) naive datetimes of every row's interval start."""
    parse = _stamp_parser(opts["timestamp_format"], opts["dayfirst"])
    where = f"{path}: timestamp column {column!r}"
    stamps: list[dt.datetime] = []
    offsets: set[dt.timedelta] = set()
    naive_line = aware_line = None
    for cell, line in zip(cells, lines):
        text = cell.strip()
        try:
            stamp = parse(text)
        except ValueError as exc:
            fmt = opts["timestamp_format"]
            why = f"expected timestamp_format {fmt!r}" if fmt is not None else str(exc)
            raise ProfileError(f"{where} line {line}: cannot parse {text!r} ({why})") from None
        if stamp.tzinfo is None:
            naive_line = naive_line or line
        else:
            aware_line = aware_line or line
            offsets.add(stamp.utcoffset())
            stamp = stamp.astimezone(SITE_TZ).replace(tzinfo=None)
        stamps.append(stamp)
    if naive_line is not None and aware_line is not None:
        raise ProfileError(f"{where}: line {aware_line} has a UTC offset but line {naive_line} has none "
                           f"(expected all stamps with an offset or all in local time UTC-05:00)")
    if naive_line is not None:
        notes.append("stamps without UTC offset taken as local time UTC-05:00")
    elif offsets - {SITE_UTC_OFFSET}:
        shown = ", ".join(sorted(_offset_text(o) for o in offsets))
        notes.append(f"stamps at UTC offset {shown} converted to local time UTC-05:00")
    if opts["interval_end"]:
        step = dt.timedelta(minutes=60 // _ROWS_PER_HOUR[opts["resolution"]])
        stamps = [s - step for s in stamps]
        notes.append(f"stamps taken as the end of each interval (the first, {cells[0].strip()!r}, "
                     f"covers {stamps[0]:%Y-%m-%d %H:%M} onwards)")
    return stamps


def _offset_text(offset: dt.timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _slot_stamp(year: int, slot: int, rows_per_hour: int) -> dt.datetime:
    """The local stamp of a slot of the 365-day calendar (29 February skipped)."""
    hour, quarter = divmod(slot, rows_per_hour)
    day, hour = divmod(hour, 24)
    month = max(m for m in range(12) if _MONTH_START[m] <= day)
    return dt.datetime(year, month + 1, day - _MONTH_START[month] + 1, hour, quarter * (60 // rows_per_hour))


def _place_by_date(path: Path, column: str, values: np.ndarray, stamps: list[dt.datetime], lines: list[int],
                   opts: dict[str, Any], notes: list[str]) -> np.ndarray:
    """The rows' values on the slots of the 365-day calendar (hour or quarter-hour)."""
    resolution = opts["resolution"]
    rows_per_hour = _ROWS_PER_HOUR[resolution]
    minutes = 60 // rows_per_hour
    where = f"{path}: timestamp column {column!r}"
    for i, s in enumerate(stamps):
        if s.minute % minutes or s.second or s.microsecond:
            raise ProfileError(f"{where} line {lines[i]}: {s:%Y-%m-%d %H:%M:%S} is not on a {resolution} boundary "
                               f"(expected {'minute 00' if minutes == 60 else 'minutes 00, 15, 30, 45'}"
                               f"{'; 15-minute data need resolution: 15min' if minutes == 60 else ''})")
        if i and s <= stamps[i - 1]:
            raise ProfileError(f"{where} line {lines[i]}: {s:%Y-%m-%d %H:%M} does not come after "
                               f"{stamps[i - 1]:%Y-%m-%d %H:%M} (line {lines[i - 1]}): stamps must increase, "
                               f"each once (a wrong dayfirst gives this too)")
    year = collections.Counter(s.year for s in stamps).most_common(1)[0][0]
    n_slots = HOURS_PER_YEAR * rows_per_hour
    placed = np.zeros(n_slots)
    filled = np.zeros(n_slots, bool)
    outside: list[int] = []
    leap_rows = 0
    for i, s in enumerate(stamps):
        if s.year != year:
            outside.append(i)
        elif (s.month, s.day) == (2, 29):
            leap_rows += 1
        else:
            slot = ((_MONTH_START[s.month - 1] + s.day - 1) * 24 + s.hour) * rows_per_hour + s.minute // minutes
            placed[slot] = values[i]
            filled[slot] = True
    unit_name = "hour" if rows_per_hour == 1 else "quarter-hour"
    if len(outside) > 24 * rows_per_hour:
        first = outside[0]
        raise ProfileError(f"{where}: {len(outside)} rows lie outside {year} (the first at line {lines[first]}, "
                           f"{stamps[first]:%Y-%m-%d %H:%M} local); expected one calendar year of rows")
    if outside:
        first = outside[0]
        notes.append(f"{len(outside)} row{'s' * (len(outside) > 1)} outside {year} dropped (the first at line "
                     f"{lines[first]}, {stamps[first]:%Y-%m-%d %H:%M} local)")
    if leap_rows:
        notes.append(f"29 February dropped ({leap_rows} {resolution} row{'s' * (leap_rows > 1)})")
    if year != CALENDAR_YEAR:
        weekday = dt.date(year, 1, 1).weekday()
        notes.append(f"stamps of {year} placed on the 365-day calendar by month, day and time (1 January {year} "
                     f"is weekday {weekday}, Monday = 0; the scenario's first_weekday sets the weekdays)")
    missing = np.flatnonzero(~filled)
    if missing.size:
        first = _slot_stamp(year, int(missing[0]), rows_per_hour)
        if not opts["fill_missing"]:
            hint = ""
            if (not opts["interval_end"] and missing[0] == 0
                    and stamps[0] == dt.datetime(year, 1, 1) + dt.timedelta(minutes=minutes)):
                hint = "; if each stamp marks the end of its interval, set interval_end: true"
            raise ProfileError(
                f"{where}: {missing.size} of {n_slots} {unit_name}s of {year} lack a row, the first "
                f"{first:%Y-%m-%d %H:%M} local (expected every {unit_name} but 29 February; set fill_missing: "
                f"true to copy the same time of the previous day){hint}")
        day = 24 * rows_per_hour
        for slot in missing:  # ascending: slot - day, when it exists, has a value by now
            source = slot - day
            if source < 0:  # the first day: the first later day that has this time of day
                later = [s for s in range(slot + day, n_slots, day) if filled[s]]
                if not later:
                    raise ProfileError(f"{where}: no row on any day at {_slot_stamp(year, int(slot), rows_per_hour):%H:%M} "
                                       f"local; nothing to fill from")
                source = later[0]
            placed[slot] = placed[source]
            filled[slot] = True
        notes.append(f"{missing.size} missing {unit_name}{'s' * (missing.size > 1)} filled with the same time of "
                     f"the previous day (the first {first:%Y-%m-%d %H:%M} local)")
    return placed


# ----------------------------------------------------------------------------- the loader
def read_profile(path: str | Path, column: str, unit: str = "kW", resolution: str = "hourly",
                 kind: str = "load", timestamp_column: str | None = None, *,
                 timestamp_format: str | None = None, dayfirst: bool | None = None, interval_end: bool = False,
                 fill_missing: bool = False, delimiter: str | None = None, decimal: str = ".",
                 encoding: str = "utf-8") -> Profile:
    """Read one year of a profile from a CSV file with a header row.

    Args:
        path: the CSV file.
        column: the column holding the values.
        unit: ``"kW"`` (mean power over each interval) or ``"kWh"`` (energy in each interval).
        resolution: ``"hourly"`` or ``"15min"``; 15-minute rows are aggregated to hours, four rows
            an hour (kWh summed, kW averaged).
        kind: ``"load"`` or ``"pv"``; PV additionally rejects negative values.
        timestamp_column: optional column of timestamps of each interval's start. With it rows are
            placed by date: 29 February is dropped, up to one day of rows outside the year is
            dropped (a UTC file's edge), a missing interval is an error. Without it the file must
            hold exactly 8,760 hours of rows, row 0 being 1 January 00:00 local time.
        timestamp_format: a ``strptime`` layout (``%z`` for a UTC offset); by default ISO 8601
            (``2024-01-01 00:00``, ``2024-01-01T00:00:00-05:00``, ``...Z``) or, with ``dayfirst``,
            ``D/M/YYYY H:MM`` (true) or ``M/D/YYYY H:MM`` (false).
        dayfirst: the order of day and month in slashed dates; required for them.
        interval_end: the stamps mark the end of each interval (meter style: ``00:15`` is the first
            quarter-hour of the day, ``24:00`` or the next day's ``00:00`` the last).
        fill_missing: fill intervals that have no row with the same time of the previous day
            (of the next day at the start of the year); recorded in the notes.
        delimiter: ``","``, ``";"``, ``"\\t"`` or ``"|"``; detected from the file by default.
        decimal: ``"."`` or ``","`` (no thousands separators).
        encoding: the file's text encoding (UTF-8 by default, a byte-order mark is skipped).

    Stamps with a UTC offset are converted to the site's local time, UTC-5 all year; stamps
    without one are taken as local time.

    Returns:
        a :class:`Profile`: ``kw``, float64 array of shape ``(8760,)`` holding the mean power of
        each hour in kW (= kWh in that hour), and ``notes``, one short sentence per assumption
        made (delimiter detected, stamps converted or dropped, rows taken in order, ...).

    Raises:
        ProfileError: a one-line message naming the file, the field, the line where relevant
            and what is accepted.
    """
    _choice("kind", kind, KINDS)
    opts = check_options({"unit": unit, "resolution": resolution, "timestamp_column": timestamp_column,
                          "timestamp_format": timestamp_format, "dayfirst": dayfirst, "interval_end": interval_end,
                          "fill_missing": fill_missing, "delimiter": delimiter, "decimal": decimal,
                          "encoding": encoding})
    if not isinstance(column, str) or not column.strip():
        raise ProfileError(f"column: expected a non-empty string, got {column!r}")
    if timestamp_column == column:
        raise ProfileError(f"timestamp_column: {timestamp_column!r} is also the value column")
    path = Path(path)
    notes: list[str] = []
    names = [column] if timestamp_column is None else [column, timestamp_column]
    cells, lines = _read_columns(path, names, opts, notes)

    rows_per_hour = _ROWS_PER_HOUR[resolution]
    n_rows = len(lines)
    if timestamp_column is None:
        year_rows, leap_rows = HOURS_PER_YEAR * rows_per_hour, HOURS_PER_LEAP_YEAR * rows_per_hour
        if n_rows == leap_rows:
            raise ProfileError(f"{path}: column {column!r} has {n_rows} {resolution} rows, a leap year: set "
                               f"timestamp_column so that 29 February can be dropped (or give {year_rows} rows)")
        if n_rows != year_rows:
            raise ProfileError(f"{path}: column {column!r} has {n_rows} {resolution} rows (accepted: {year_rows} "
                               f"for a year, or {leap_rows} for a leap year with a timestamp column)")
        notes.append(f"no timestamps: row 0 taken as {CALENDAR_YEAR}-01-01 00:00 local, 365 days "
                     f"(no 29 February)")
    elif n_rows == 0:
        raise ProfileError(f"{path}: column {column!r} has no data rows")

    values = _parse_values(path, column, cells[column], lines, kind, decimal)
    if timestamp_column is not None:
        stamps = _parse_timestamps(path, timestamp_column, cells[timestamp_column], lines, opts, notes)
        values = _place_by_date(path, timestamp_column, values, stamps, lines, opts, notes)

    hourly = values.reshape(HOURS_PER_YEAR, rows_per_hour)
    if rows_per_hour == 1:
        kw = hourly[:, 0].astype(np.float64)
    else:  # energy per 15 min sums to the hour's energy (= its mean kW); power per 15 min averages
        kw = (hourly.sum(axis=1) if unit == "kWh" else hourly.mean(axis=1)).astype(np.float64)
    return Profile(kw=kw, notes=tuple(notes))


def load_profile(path: str | Path, column: str, unit: str = "kW", resolution: str = "hourly",
                 kind: str = "load", timestamp_column: str | None = None, **options: Any) -> np.ndarray:
    """:func:`read_profile` without the notes: the float64 array of 8,760 hourly kW."""
    return read_profile(path, column, unit, resolution, kind, timestamp_column, **options).kw


def _data_path(name: str) -> Any:
    return importlib.resources.files("oe3jax.simulation") / "data" / name


@functools.lru_cache(maxsize=None)
def _builtin_table(year: str) -> dict[str, np.ndarray]:
    if year == DEFAULT_YEAR:
        with importlib.resources.as_file(_data_path(BUILTIN_FILE)) as path:
            table = {name: load_profile(path, name, kind="pv" if name.startswith("pv") else "load",
                                        timestamp_column="timestamp", delimiter=",") for name in BUILTIN_NAMES}
    else:
        with _data_path(YEARS_FILE).open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            row = data["names"].tolist().index(year)
            # tenths of a kW: n / 10 is the float nearest to the CSV's "x.y" text, as a CSV would give
            table = {name: data[name.replace("_kw", "_dkw")][row].astype(np.float64) / 10.0 for name in BUILTIN_NAMES}
    for array in table.values():
        array.setflags(write=False)
    return table


def builtin_profile(name: str, year: str = DEFAULT_YEAR) -> np.ndarray:
    """A shipped Iquitos profile: ``"pv_kw"`` (PV AC power) or ``"mall_kw"`` (mall load) of a weather year.

    ``year`` is one of :data:`WEATHER_YEARS` (default ``"2024"``). Returns a read-only, cached
    float64 array of shape ``(8760,)`` in kW (hourly mean power); copy it before modifying.
    """
    _choice("profile name", name, BUILTIN_NAMES)
    _choice("weather year", year, WEATHER_YEARS)
    return _builtin_table(year)[name]


def weather_year_summary(year: str) -> dict[str, float]:
    """The figures of a packaged weather year: PV and mall energy (kWh), peaks (kW) and variability.

    ``pv_daily_cv`` is the coefficient of variation of the daily PV energy, ``pv_min_day_kwh`` the
    energy of the darkest day; ``mall_peak_over_mean`` the ratio the meter data fix at 1.957.
    """
    pv, mall = builtin_profile("pv_kw", year), builtin_profile("mall_kw", year)
    daily = pv.reshape(-1, 24).sum(axis=1)
    return {
        "pv_kwh": float(pv.sum()), "pv_peak_kw": float(pv.max()), "pv_daily_cv": float(daily.std() / daily.mean()),
        "pv_min_day_kwh": float(daily.min()), "mall_kwh": float(mall.sum()), "mall_peak_kw": float(mall.max()),
        "mall_peak_over_mean": float(mall.max() / mall.mean()),
    }
