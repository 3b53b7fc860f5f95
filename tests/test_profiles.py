"""The shipped Iquitos profiles against the site figures, and the CSV loader on hand-made files."""
from __future__ import annotations

import csv
import datetime as dt
import importlib.resources
from pathlib import Path

import numpy as np
import pytest

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
    with pytest.raises(ValueError, match=r"timestamp column 'ts' line 102: .*\(expected consecutive hourly steps"):
        load_profile(path, "v", timestamp_column="ts")
    # A year that left out Jul 4 instead of Feb 29 is not consecutive either.
    start = dt.datetime(2024, 1, 1)
    all_hours = [start + dt.timedelta(hours=i) for i in range(8784)]
    kept = [s.strftime("%Y-%m-%d %H:%M") for s in all_hours if (s.month, s.day) != (7, 4)]
    path = write_csv(tmp_path / "g.csv", {"ts": kept, "v": [1.0] * len(kept)})
    with pytest.raises(ValueError, match=r"2024-07-05 00:00:00 follows 2024-07-03 23:00:00"):
        load_profile(path, "v", timestamp_column="ts")


def test_fifteen_minute_data_must_start_on_the_hour(tmp_path):
    stamps = hourly_stamps(dt.datetime(2023, 1, 1, 0, 15), 4 * HOURS_PER_YEAR, minutes=15)
    path = write_csv(tmp_path / "p.csv", {"ts": stamps, "v": [1.0] * len(stamps)})
    with pytest.raises(ValueError, match=r"timestamp column 'ts' line 2: 15-minute data must start"):
        load_profile(path, "v", resolution="15min", timestamp_column="ts")


def test_errors_are_profile_errors_and_value_errors(tmp_path):
    with pytest.raises(ProfileError):
        load_profile(tmp_path / "missing.csv", "v")
    assert issubclass(ProfileError, ValueError)
