"""The shipped Iquitos profiles against the site figures, and the CSV loader on hand-made files."""
from __future__ import annotations

import csv
import datetime as dt
import importlib.resources
from pathlib import Path

import numpy as np
import pytest

from oe3jax.simulation import profiles as P
from oe3jax.simulation.profiles import HOURS_PER_YEAR, ProfileError, builtin_profile, load_profile

# Site figures (kW, hour-beginning local time).
PV_HOUR_MEANS_KW = {6: 144, 7: 1098, 8: 2138, 9: 2566, 10: 2707, 11: 2760, 12: 2766, 13: 2701, 14: 2595,
                    15: 2039, 16: 1036, 17: 168}
PV_AC_LIMIT_KW = 3201.0
MALL_ANNUAL_KWH = 12_368_653.0
MALL_PEAK_KW = 2763.0


# ----------------------------------------------------------------------------- shipped data
@pytest.fixture(scope="module")
def shipped_rows() -> list[dict[str, str]]:
    """The packaged CSV read with the csv module alone (independent of the loader)."""
    resource = importlib.resources.files("oe3jax.simulation") / "data" / "iquitos_2024.csv"
    with resource.open("r", newline="") as handle:
        return list(csv.DictReader(handle))


def test_shipped_csv_has_one_hourly_year_without_leap_day(shipped_rows):
    assert len(shipped_rows) == 8760
    assert list(shipped_rows[0]) == ["timestamp", "pv_kw", "mall_kw"]
    stamps = [dt.datetime.strptime(r["timestamp"], "%Y-%m-%d %H:%M") for r in shipped_rows]
    assert stamps[0] == dt.datetime(2024, 1, 1, 0, 0) and stamps[-1] == dt.datetime(2024, 12, 31, 23, 0)
    assert not any(s.month == 2 and s.day == 29 for s in stamps)
    assert all(s.hour == i % 24 for i, s in enumerate(stamps))  # row i is hour i % 24 of its day
    pv = np.array([float(r["pv_kw"]) for r in shipped_rows])
    np.testing.assert_array_equal(builtin_profile("pv_kw"), pv)


def test_builtin_profiles_are_finite_float64_years():
    for name in ("pv_kw", "mall_kw"):
        profile = builtin_profile(name)
        assert profile.shape == (HOURS_PER_YEAR,) and profile.dtype == np.float64
        assert np.isfinite(profile).all()
        assert not profile.flags.writeable  # cached: callers cannot corrupt it
    assert builtin_profile("pv_kw") is builtin_profile("pv_kw")


def test_builtin_profile_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"profile name: expected one of 'pv_kw', 'mall_kw', got 'pv'"):
        builtin_profile("pv")


def test_pv_is_physical_and_matches_site_energy():
    pv = builtin_profile("pv_kw").reshape(365, 24)
    assert (pv >= 0.0).all()
    assert pv.max() <= PV_AC_LIMIT_KW
    assert 2800.0 <= pv.max() <= 2900.0  # site peak about 2,850-2,890 kW
    night = list(range(0, 6)) + list(range(18, 24))
    assert (pv[:, night] == 0.0).all()
    assert 8.0e6 <= pv.sum() <= 8.3e6
    assert 900.0 <= pv.mean() <= 960.0


def test_pv_hour_of_day_shape_matches_site():
    means = builtin_profile("pv_kw").reshape(365, 24).mean(axis=0)
    for hour, target in PV_HOUR_MEANS_KW.items():
        if 7 <= hour <= 16:
            assert abs(means[hour] - target) <= 0.10 * target, (hour, means[hour], target)
        else:  # the dawn and dusk hours are small: absolute tolerance
            assert abs(means[hour] - target) <= 80.0, (hour, means[hour], target)


def test_pv_days_differ_with_cloud():
    pv = builtin_profile("pv_kw").reshape(365, 24)
    daily_kwh = pv.sum(axis=1)
    assert daily_kwh.std() / daily_kwh.mean() > 0.08
    assert len(np.unique(daily_kwh)) > 300
    assert daily_kwh.min() < 0.6 * daily_kwh.mean()  # some overcast days
    # Not the same bell every day: the normalised daily shapes differ.
    shapes = pv / daily_kwh[:, None]
    assert shapes[:, 7:17].std(axis=0).mean() > 0.005


def test_mall_matches_site_totals_and_shape():
    mall = builtin_profile("mall_kw")
    assert abs(mall.sum() - MALL_ANNUAL_KWH) <= 0.01 * MALL_ANNUAL_KWH
    assert abs(mall.max() - MALL_PEAK_KW) <= 0.05 * MALL_PEAK_KW
    assert (mall > 0.0).all()
    means = mall.reshape(365, 24).mean(axis=0)
    assert ((means[0:6] >= 440.0) & (means[0:6] <= 540.0)).all(), means[0:6]
    assert ((means[11:21] >= 2150.0) & (means[11:21] <= 2320.0)).all(), means[11:21]
    assert abs(means[21] - 1990.0) <= 0.03 * 1990.0
    assert abs(means[22] - 1228.0) <= 0.03 * 1228.0


def test_mall_varies_from_day_to_day():
    daily_kwh = builtin_profile("mall_kw").reshape(365, 24).sum(axis=1)
    assert daily_kwh.std() / daily_kwh.mean() > 0.01
    assert len(np.unique(daily_kwh)) > 300


# ----------------------------------------------------------------------------- loader
def write_csv(path: Path, columns: dict[str, list]) -> Path:
    names = list(columns)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*(columns[n] for n in names)):
            writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])
    return path


def hourly_stamps(start: dt.datetime, n: int, minutes: int = 60, fmt: str = "%Y-%m-%d %H:%M") -> list[str]:
    return [(start + dt.timedelta(minutes=minutes * i)).strftime(fmt) for i in range(n)]


def test_round_trip_hourly_kw_and_kwh(tmp_path):
    values = np.random.default_rng(0).uniform(0.0, 3000.0, HOURS_PER_YEAR)
    path = write_csv(tmp_path / "p.csv", {"other": [1] * HOURS_PER_YEAR, "v": list(values)})
    for unit in ("kW", "kWh"):  # over one hour, kW mean power and kWh energy are the same number
        got = load_profile(path, "v", unit=unit)
        assert got.dtype == np.float64 and got.shape == (HOURS_PER_YEAR,)
        np.testing.assert_array_equal(got, values)


def test_round_trip_with_timestamps_in_both_iso_forms(tmp_path):
    values = np.arange(HOURS_PER_YEAR, dtype=float)
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
        stamps = hourly_stamps(dt.datetime(2023, 1, 1), HOURS_PER_YEAR, fmt=fmt)
        path = write_csv(tmp_path / "p.csv", {"ts": stamps, "v": list(values)})
        np.testing.assert_array_equal(load_profile(path, "v", timestamp_column="ts"), values)


def test_fifteen_minute_rows_aggregate_to_hours(tmp_path):
    # Row r holds r. Hour h covers rows 4h..4h+3: their sum is 16h + 6, their mean 4h + 1.5.
    rows = np.arange(4 * HOURS_PER_YEAR, dtype=float)
    path = write_csv(tmp_path / "q.csv", {"v": list(rows)})
    hours = np.arange(HOURS_PER_YEAR, dtype=float)
    np.testing.assert_array_equal(load_profile(path, "v", unit="kWh", resolution="15min"), 16.0 * hours + 6.0)
    np.testing.assert_array_equal(load_profile(path, "v", unit="kW", resolution="15min"), 4.0 * hours + 1.5)


def test_leap_year_drops_feb_29_by_timestamp(tmp_path):
    n = 8784
    values = np.arange(n, dtype=float)
    stamps = hourly_stamps(dt.datetime(2024, 1, 1), n)
    path = write_csv(tmp_path / "leap.csv", {"time": stamps, "v": list(values)})
    got = load_profile(path, "v", timestamp_column="time")
    # Jan (31 days) + Feb 1-28 = 59 days: Feb 29 is hours 1416..1439.
    expected = np.concatenate([np.arange(0, 1416), np.arange(1440, 8784)]).astype(float)
    np.testing.assert_array_equal(got, expected)


def test_leap_year_fifteen_minute_kwh(tmp_path):
    n = 4 * 8784
    stamps = hourly_stamps(dt.datetime(2024, 1, 1), n, minutes=15)
    path = write_csv(tmp_path / "leap15.csv", {"time": stamps, "v": [0.25] * n})
    got = load_profile(path, "v", unit="kWh", resolution="15min", timestamp_column="time")
    np.testing.assert_array_equal(got, np.ones(HOURS_PER_YEAR))


def test_leap_year_without_timestamps_is_refused(tmp_path):
    path = write_csv(tmp_path / "leap.csv", {"v": [1.0] * 8784})
    with pytest.raises(ValueError, match=r"column 'v' has 8784 hourly rows, a leap year: set timestamp_column"):
        load_profile(path, "v")


@pytest.mark.parametrize("unit, resolution, kind, match", [
    ("MW", "hourly", "load", r"unit: expected one of 'kW', 'kWh', got 'MW'"),
    ("kW", "30min", "load", r"resolution: expected one of 'hourly', '15min', got '30min'"),
    ("kW", "hourly", "wind", r"kind: expected one of 'load', 'pv', got 'wind'"),
])
def test_unknown_option_names_field_and_accepted_values(tmp_path, unit, resolution, kind, match):
    path = write_csv(tmp_path / "p.csv", {"v": [1.0] * HOURS_PER_YEAR})
    with pytest.raises(ValueError, match=match):
        load_profile(path, "v", unit=unit, resolution=resolution, kind=kind)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.csv: profile file not found"):
        load_profile(tmp_path / "nope.csv", "v")


def test_unknown_column_lists_available(tmp_path):
    path = write_csv(tmp_path / "p.csv", {"ts": ["x"] * 3, "load_kw": [1.0] * 3})
    with pytest.raises(ValueError, match=r"unknown column 'pv'; available columns: 'ts', 'load_kw'"):
        load_profile(path, "pv")
    with pytest.raises(ValueError, match=r"unknown column 'time'"):
        load_profile(path, "load_kw", timestamp_column="time")


@pytest.mark.parametrize("n, resolution, match", [
    (8759, "hourly", r"column 'v' has 8759 hourly rows \(accepted: 8760 .* or 8784 "),
    (8760, "15min", r"column 'v' has 8760 15min rows \(accepted: 35040 .* or 35136 "),
])
def test_wrong_length_says_count_and_accepted(tmp_path, n, resolution, match):
    path = write_csv(tmp_path / "p.csv", {"v": [1.0] * n})
    with pytest.raises(ValueError, match=match):
        load_profile(path, "v", resolution=resolution)


@pytest.mark.parametrize("cell, match", [
    ("nan", r"column 'v' line 5: 'nan' \(expected a finite number"),
    ("", r"column 'v' line 5: empty cell"),
    ("12,5", r"column 'v' line 5: '12,5' is not a number"),
    ("inf", r"column 'v' line 5: 'inf'"),
])
def test_bad_cell_names_column_and_line(tmp_path, cell, match):
    cells = ["1.0"] * HOURS_PER_YEAR
    cells[3] = cell  # header is line 1, so data row 3 (0-based) is line 5
    path = write_csv(tmp_path / "p.csv", {"other": [0] * HOURS_PER_YEAR, "v": cells})
    with pytest.raises(ValueError, match=match):
        load_profile(path, "v")


def test_negative_pv_rejected_but_negative_load_accepted(tmp_path):
    values = [1.0] * HOURS_PER_YEAR
    values[9] = -0.5
    path = write_csv(tmp_path / "p.csv", {"v": values})
    with pytest.raises(ValueError, match=r"column 'v' line 11: negative PV -0.5"):
        load_profile(path, "v", kind="pv")
    assert load_profile(path, "v", kind="load")[9] == -0.5


def test_unparseable_timestamp_names_line(tmp_path):
    stamps = hourly_stamps(dt.datetime(2023, 1, 1), HOURS_PER_YEAR)
    stamps[1] = "01/01/2023 01:00"
    path = write_csv(tmp_path / "p.csv", {"ts": stamps, "v": [1.0] * HOURS_PER_YEAR})
    with pytest.raises(ValueError, match=r"timestamp column 'ts' line 3: cannot parse '01/01/2023 01:00'"):
        load_profile(path, "v", timestamp_column="ts")


def test_timestamps_out_of_order_or_gapped_are_refused(tmp_path):
    stamps = hourly_stamps(dt.datetime(2023, 1, 1), HOURS_PER_YEAR)
    stamps[100], stamps[101] = stamps[101], stamps[100]
    path = write_csv(tmp_path / "p.csv", {"ts": stamps, "v": [1.0] * HOURS_PER_YEAR})
    with pytest.raises(ValueError, match=r"timestamp column 'ts' line 103: 2023-01-05 04:00 does not come after "
                                         r"2023-01-05 05:00 \(line 102\)"):
        load_profile(path, "v", timestamp_column="ts")
    # A year that left out Jul 4 instead of Feb 29: the first missing hour is named.
    start = dt.datetime(2024, 1, 1)
    all_hours = [start + dt.timedelta(hours=i) for i in range(8784)]
    kept = [s.strftime("%Y-%m-%d %H:%M") for s in all_hours if (s.month, s.day) != (7, 4)]
    path = write_csv(tmp_path / "g.csv", {"ts": kept, "v": [1.0] * len(kept)})
    with pytest.raises(ValueError, match=r"24 of 8760 hours of 2024 lack a row, the first 2024-07-04 00:00 local"):
        load_profile(path, "v", timestamp_column="ts")


def test_fifteen_minute_data_from_quarter_past_suggest_interval_end(tmp_path):
    stamps = hourly_stamps(dt.datetime(2023, 1, 1, 0, 15), 4 * HOURS_PER_YEAR, minutes=15)
    path = write_csv(tmp_path / "p.csv", {"ts": stamps, "v": [1.0] * len(stamps)})
    with pytest.raises(ValueError, match=r"1 of 35040 quarter-hours of 2023 lack a row, the first 2023-01-01 00:00 "
                                         r"local .*set interval_end: true"):
        load_profile(path, "v", resolution="15min", timestamp_column="ts")
    # the same file read as interval ends: every quarter has its value, the hours sum them
    got = load_profile(path, "v", unit="kWh", resolution="15min", timestamp_column="ts", interval_end=True)
    np.testing.assert_array_equal(got, np.full(HOURS_PER_YEAR, 4.0))


def test_stamps_off_the_interval_grid_are_refused(tmp_path):
    stamps = hourly_stamps(dt.datetime(2023, 1, 1), HOURS_PER_YEAR)
    stamps[5] = "2023-01-01 05:30"
    path = write_csv(tmp_path / "p.csv", {"ts": stamps, "v": [1.0] * HOURS_PER_YEAR})
    with pytest.raises(ValueError, match=r"line 7: 2023-01-01 05:30:00 is not on a hourly boundary .*resolution: 15min"):
        load_profile(path, "v", timestamp_column="ts")


# ----------------------------------------------------------------------------- real meter files
def leap_hours() -> list[dt.datetime]:
    """Every local hour of 2024, 29 February included (8,784)."""
    return [dt.datetime(2024, 1, 1) + dt.timedelta(hours=i) for i in range(8784)]


# Hour index on the 365-day calendar, by hand: Jan (31) + Feb (28) = 59 days before 1 March.
MARCH_1 = 59 * 24
# Row of 1 March 00:00 in a file of every hour of 2024: Jan (31) + Feb (29) = 60 days.
MARCH_1_LEAP_ROW = 60 * 24


def test_offset_aware_site_stamps_are_placed_by_date(tmp_path):
    stamps = [s.strftime("%Y-%m-%d %H:%M:%S-05:00") for s in leap_hours()]
    path = write_csv(tmp_path / "p.csv", {"time": stamps, "v": [float(i) for i in range(8784)]})
    profile = P.read_profile(path, "v", timestamp_column="time")
    assert profile.kw[MARCH_1] == MARCH_1_LEAP_ROW
    assert profile.kw[MARCH_1 - 1] == 59 * 24 - 1  # 28 February 23:00 is row 1415
    assert profile.kw[-1] == 8783
    assert profile.notes == ("29 February dropped (24 hourly rows)",)


def test_utc_stamps_are_converted_to_site_time(tmp_path):
    # A year of UTC hours: local time (UTC-5) runs from 2023-12-31 19:00 to 2024-12-31 18:00.
    utc = [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in leap_hours()]
    path = write_csv(tmp_path / "utc.csv", {"time": utc, "v": [float(i) for i in range(8784)]})
    with pytest.raises(ValueError, match=r"5 of 8760 hours of 2024 lack a row, the first 2024-12-31 19:00 local"):
        load_profile(path, "v", timestamp_column="time")
    profile = P.read_profile(path, "v", timestamp_column="time", fill_missing=True)
    # 1 March 00:00 local is 05:00 UTC, row 60 * 24 + 5 of the file
    assert profile.kw[MARCH_1] == MARCH_1_LEAP_ROW + 5
    assert profile.kw[0] == 5  # 1 January 00:00 local = 05:00 UTC
    np.testing.assert_array_equal(profile.kw[-5:], profile.kw[-29:-24])  # 31 December 19-23 h: 30 December's
    assert profile.notes == (
        "stamps at UTC offset +00:00 converted to local time UTC-05:00",
        "5 rows outside 2024 dropped (the first at line 2, 2023-12-31 19:00 local)",
        "29 February dropped (24 hourly rows)",
        "5 missing hours filled with the same time of the previous day (the first 2024-12-31 19:00 local)",
    )


def meter_file(path: Path, rows: list[tuple[str, str]], header: str = "FECHAHORA;kWh", sep: str = ";") -> Path:
    path.write_text(header + "\n" + "".join(f"{a}{sep}{b}\n" for a, b in rows), encoding="utf-8")
    return path


def test_semicolon_dayfirst_quarter_hour_meter_file(tmp_path):
    # A 15-minute meter export of 2024: stamps at the end of each quarter, day first, without
    # zero-padding ("1/01/2024 0:15"), decimal commas; quarter q of the year holds q + 0.5 kWh.
    ends = [dt.datetime(2024, 1, 1) + dt.timedelta(minutes=15 * (q + 1)) for q in range(4 * 8784)]
    rows = [(f"{e.day}/{e.month:02d}/{e.year} {e.hour}:{e.minute:02d}", f"{q},5") for q, e in enumerate(ends)]
    path = meter_file(tmp_path / "meter.csv", rows)
    with pytest.raises(ValueError, match=r"line 2: cannot parse '1/01/2024 0:15' \(day and month order is "
                                         r"ambiguous: set dayfirst: true"):
        load_profile(path, "kWh", resolution="15min", timestamp_column="FECHAHORA", decimal=",")
    profile = P.read_profile(path, "kWh", unit="kWh", resolution="15min", timestamp_column="FECHAHORA",
                             dayfirst=True, interval_end=True, decimal=",")
    # Hour H of the file (leap-year count) sums quarters 4H..4H+3: 16 H + 6 + 4 * 0.5 = 16 H + 8 kWh.
    assert profile.kw[0] == 8.0
    assert profile.kw[MARCH_1] == 16 * MARCH_1_LEAP_ROW + 8
    assert profile.kw[-1] == 16 * 8783 + 8
    assert profile.notes == (
        "delimiter ';' detected",
        "stamps without UTC offset taken as local time UTC-05:00",
        "stamps taken as the end of each interval (the first, '1/01/2024 0:15', covers 2024-01-01 00:00 onwards)",
        "29 February dropped (96 15min rows)",
    )


def test_month_first_and_explicit_formats(tmp_path):
    hours = [dt.datetime(2023, 1, 1) + dt.timedelta(hours=i) for i in range(HOURS_PER_YEAR)]
    values = [float(i) for i in range(HOURS_PER_YEAR)]
    us = meter_file(tmp_path / "us.csv", [(f"{h.month}/{h.day}/{h.year} {h.hour}:00", f"{v}")
                                          for h, v in zip(hours, values)], "time,kw", ",")
    profile = P.read_profile(us, "kw", timestamp_column="time", dayfirst=False)
    assert profile.kw[MARCH_1] == MARCH_1 and profile.kw[-1] == HOURS_PER_YEAR - 1
    assert profile.notes[-1].startswith("stamps of 2023 placed on the 365-day calendar by month, day and time "
                                        "(1 January 2023 is weekday 6")
    dotted = meter_file(tmp_path / "dot.csv", [(h.strftime("%d.%m.%Y %Hh"), f"{v}") for h, v in zip(hours, values)],
                        "time|kw", "|")
    got = load_profile(dotted, "kw", timestamp_column="time", timestamp_format="%d.%m.%Y %Hh")
    np.testing.assert_array_equal(got, values)
    # hour-ending stamps that write midnight as 24:00 of the day before
    ending = meter_file(tmp_path / "end.csv", [(f"{h.day}/{h.month}/{h.year} {h.hour + 1}:00", f"{v}")
                                               for h, v in zip(hours, values)], "time\tkw", "\t")
    got = load_profile(ending, "kw", timestamp_column="time", dayfirst=True, interval_end=True)
    np.testing.assert_array_equal(got, values)


def test_leap_year_without_its_last_day_is_caught_by_date(tmp_path):
    # 8,760 rows from 1 January 2024 run to 30 December and include 29 February.
    hours = leap_hours()[:HOURS_PER_YEAR]
    values = [float(i) for i in range(HOURS_PER_YEAR)]
    path = write_csv(tmp_path / "p.csv", {"time": [h.strftime("%Y-%m-%d %H:%M") for h in hours], "v": values})
    with pytest.raises(ValueError, match=r"24 of 8760 hours of 2024 lack a row, the first 2024-12-31 00:00 local"):
        load_profile(path, "v", timestamp_column="time")
    # without timestamps the rows are taken in order, and the assumption is stated
    profile = P.read_profile(path, "v")
    np.testing.assert_array_equal(profile.kw, values)
    assert profile.notes == ("no timestamps: row 0 taken as 2024-01-01 00:00 local, 365 days (no 29 February)",)


def test_fill_missing_copies_the_previous_day(tmp_path):
    hours = [dt.datetime(2023, 1, 1) + dt.timedelta(hours=i) for i in range(HOURS_PER_YEAR)]
    kept = [(h, float(i)) for i, h in enumerate(hours) if (h.month, h.day) != (7, 4)]
    path = write_csv(tmp_path / "p.csv", {"time": [h.strftime("%Y-%m-%d %H:%M") for h, _ in kept],
                                          "v": [v for _, v in kept]})
    profile = P.read_profile(path, "v", timestamp_column="time", fill_missing=True)
    july_4 = (31 + 28 + 31 + 30 + 31 + 30 + 3) * 24  # day 184
    np.testing.assert_array_equal(profile.kw[july_4:july_4 + 24], np.arange(july_4 - 24, july_4))
    np.testing.assert_array_equal(profile.kw[july_4 + 24:], np.arange(july_4 + 24, HOURS_PER_YEAR))
    assert "24 missing hours filled with the same time of the previous day (the first 2023-07-04 00:00 local)" \
        in profile.notes


def test_mixed_offsets_and_two_years_are_refused(tmp_path):
    stamps = hourly_stamps(dt.datetime(2023, 1, 1), HOURS_PER_YEAR)
    stamps[10] += "+00:00"
    path = write_csv(tmp_path / "p.csv", {"ts": stamps, "v": [1.0] * HOURS_PER_YEAR})
    with pytest.raises(ValueError, match=r"line 12 has a UTC offset but line 2 has none"):
        load_profile(path, "v", timestamp_column="ts")
    # July-December 2023 is 184 days (4,416 rows, lines 2-4417); the other 4,344 rows are of 2024
    stamps = hourly_stamps(dt.datetime(2023, 7, 1), HOURS_PER_YEAR)
    path = write_csv(tmp_path / "q.csv", {"ts": stamps, "v": [1.0] * HOURS_PER_YEAR})
    with pytest.raises(ValueError, match=r"4344 rows lie outside 2023 \(the first at line 4418, 2024-01-01 00:00"):
        load_profile(path, "v", timestamp_column="ts")


def test_non_utf8_file_names_the_file_and_byte(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("hora,energía\n".encode("cp1252") + b"".join(b"0,1.5\n" for _ in range(HOURS_PER_YEAR)))
    # "hora,energ" is 10 bytes: the cp1252 i-acute (0xed) is at offset 10 of line 1
    with pytest.raises(ValueError, match=r"latin\.csv: not utf-8 text: byte 0xed at offset 10 \(line 1\)"):
        load_profile(path, "energía")
    np.testing.assert_array_equal(load_profile(path, "energía", encoding="cp1252"), np.full(HOURS_PER_YEAR, 1.5))


def test_duplicated_column_name_is_an_error(tmp_path):
    path = meter_file(tmp_path / "dup.csv", [("1", "2")] * HOURS_PER_YEAR, "v,v", ",")
    with pytest.raises(ValueError, match=r"column 'v' appears 2 times in the header \(columns 1, 2\)"):
        load_profile(path, "v")


def test_value_beyond_float32_is_refused(tmp_path):
    values = [1.0] * HOURS_PER_YEAR
    values[7] = 1e39  # finite in float64, inf in float32
    path = write_csv(tmp_path / "p.csv", {"v": values})
    with pytest.raises(ValueError, match=r"line 9: '1e\+39' overflows float32"):
        load_profile(path, "v", kind="pv")


def test_delimiter_detected_or_given(tmp_path):
    rows = [(str(i), f"{i}.5") for i in range(HOURS_PER_YEAR)]
    for sep, name in ((";", "semi"), ("\t", "tab"), ("|", "pipe")):
        path = meter_file(tmp_path / f"{name}.csv", rows, f"n{sep}v", sep)
        np.testing.assert_array_equal(load_profile(path, "v"), np.arange(HOURS_PER_YEAR) + 0.5)
        assert load_profile(path, "n", delimiter=sep)[3] == 3.0
    with pytest.raises(ValueError, match=r"unknown column 'v'; available columns: 'n;v' \(delimiter ','\)"):
        load_profile(tmp_path / "semi.csv", "v", delimiter=",")
    # one column of decimal commas: no delimiter to detect, the commas are decimals
    path = meter_file(tmp_path / "one.csv", [("2,5", "")] * HOURS_PER_YEAR, "kw", "")
    profile = P.read_profile(path, "kw", decimal=",")
    np.testing.assert_array_equal(profile.kw, np.full(HOURS_PER_YEAR, 2.5))
    assert profile.notes == ("no timestamps: row 0 taken as 2024-01-01 00:00 local, 365 days (no 29 February)",)


@pytest.mark.parametrize("options, match", [
    ({"dayfirst": True}, r"^dayfirst: True needs a timestamp_column"),
    ({"fill_missing": "yes", "timestamp_column": "t"}, r"^fill_missing: expected true or false, got 'yes'"),
    ({"delimiter": " "}, r"^delimiter: expected one of ',', ';', '\\t', '\|', got ' '"),
    ({"delimiter": ",", "decimal": ","}, r"^decimal: ',' is also the delimiter"),
    ({"encoding": "klingon"}, r"^encoding: expected a Python codec name"),
    ({"timestamp_column": "t", "timestamp_format": "%d/%m/%Y", "dayfirst": True}, r"^dayfirst: True has no effect"),
    ({"timestamp_column": "t", "timestamp_format": "dd/mm/yyyy"}, r"^timestamp_format: expected a strptime layout"),
])
def test_bad_options_name_the_option(tmp_path, options, match):
    path = write_csv(tmp_path / "p.csv", {"v": [1.0] * HOURS_PER_YEAR})
    with pytest.raises(ValueError, match=match):
        load_profile(path, "v", **options)


def test_errors_are_profile_errors_and_value_errors(tmp_path):
    with pytest.raises(ProfileError):
        load_profile(tmp_path / "missing.csv", "v")
    assert issubclass(ProfileError, ValueError)


def test_a_path_that_is_no_profile_file(tmp_path):
    with pytest.raises(ProfileError, match=rf"^{tmp_path} is a directory, not a CSV file$"):
        load_profile(tmp_path, "v")
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:  # sparse: nothing is written or read
        fh.truncate(P.MAX_PROFILE_BYTES + 1)
    with pytest.raises(ProfileError, match=r"big\.csv is 256 MiB, larger than 256 MiB; a profile is one year"):
        load_profile(big, "v")


def test_a_cell_beyond_the_csv_field_limit_names_the_line(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("v\n1\n" + "2" * 200_000 + "\n" + "1\n" * (HOURS_PER_YEAR - 2))
    with pytest.raises(ProfileError, match=r"p\.csv: line 3: not a CSV row \(field larger than field limit"):
        load_profile(path, "v")


def test_a_relative_path_not_found_names_the_directory_it_was_looked_up_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProfileError, match=rf"^pv\.csv: profile file not found \(a relative path, looked up from the "
                                           rf"current directory {tmp_path}\)$"):
        load_profile("pv.csv", "v")
