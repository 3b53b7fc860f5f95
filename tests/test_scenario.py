"""Scenario fields: exact types and physical ranges, checked once; profiles checked where they are read."""
from __future__ import annotations

import csv
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from oe3jax.simulation.env import make_env
from oe3jax.simulation.scenario import (HOURS_PER_YEAR, Scenario, fingerprint, get_scenario, profile_notes,
                                        scenario_profiles)

# The default operating factor by hand: 0.30 at 09:00, 0.30 + 0.7 (h - 10) / 8 for 10:00-17:00,
# 1 for 18:00-21:00: sum = 0.3 + (8 x 0.3 + 0.0875 x 28) + 4 = 9.15, peak 1.
DEFAULT_FACTOR_SUM = 9.15
INF = math.inf


def test_presets_hold_exact_kinds():
    scn = get_scenario("iquitos-38")
    assert type(scn.capacity_kwh) is float and type(scn.n_moto) is int and type(scn.open_hour) is int
    assert isinstance(scn.tariff_per_kwh, tuple) and len(scn.tariff_per_kwh) == 24
    # an int where a number is meant is stored as the float it stands for: same physics, same hash
    as_int = get_scenario("iquitos-128", capacity_kwh=3000, stay_probs=[0.25, 0.75])
    as_float = get_scenario("iquitos-128", capacity_kwh=np.float32(3000.0), stay_probs=np.array([0.25, 0.75]))
    assert type(as_int.capacity_kwh) is float and as_int.stay_probs == (0.25, 0.75)
    assert fingerprint(as_int) == fingerprint(as_float)


@pytest.mark.parametrize("override, match", [
    # sizes far beyond any site
    ({"daily_moto": 1e10}, r"daily_moto = 10000000000\.0; expected a number in \[0, 240000\] vehicles a day"),
    ({"capacity_kwh": 1e39}, r"capacity_kwh = 1e\+39; expected a number in \(0, 1e\+06\] kWh"),
    ({"moto_kw": 1e39}, r"moto_kw = 1e\+39; expected a number in \(0, 1000\] kW"),
    ({"tariff_per_kwh": [INF] * 24}, r"tariff_per_kwh\[0\] = inf; expected a number in \[0, 1e\+06\] per kWh"),
    ({"operating_factor": [0.0] * 9 + [INF] + [1.0] * 12 + [0.0] * 2},
     r"operating_factor\[9\] = inf; expected a number in \[0, 1\]"),
    ({"n_moto": 20_000}, r"n_moto = 20000; expected an integer in \[0, 10000\]"),
    ({"co2_kg_per_kwh": math.nan}, r"co2_kg_per_kwh = nan; expected a number in \[0, 2\] kg/kWh"),
    # exact types: bool is not a number, a string is not a number, counts and hours are integers
    ({"capacity_kwh": True}, r"capacity_kwh = True; expected a number"),
    ({"n_taxi": True}, r"n_taxi = True; expected an integer"),
    ({"soc_min": "0.2"}, r"soc_min = '0\.2'; expected a number in \[0, 1\]"),
    ({"soc_init": None}, r"soc_init = None; expected a number in \[0, 1\]"),
    ({"round_trip_eff": "0.9"}, r"round_trip_eff = '0\.9'; expected a number in \(0, 1\]"),
    ({"open_hour": 9.5}, r"open_hour = 9\.5; expected an integer in \[0, 23\]"),
    ({"first_weekday": 1.0}, r"first_weekday = 1\.0; expected an integer in \[0, 6\]"),
    ({"stay_probs": [True]}, r"stay_probs\[0\] = True; expected a number in \[0, 1\]"),
    ({"stay_probs": "1"}, r"stay_probs = '1'; expected a list of 1 to 24 items"),
    ({"forecast_offsets": (0, 1.5)}, r"forecast_offsets\[1\] = 1\.5; expected an integer in \[0, 8759\]"),
    ({"reward": 1}, r"reward = 1; expected one of co2_focus, balanced"),
    ({"currency": ""}, r"currency = ''; expected a non-empty string"),
    # relations between fields
    ({"daily_moto": 1e5}, r"daily_moto = 100000\.0; expected at most 91,500 a day with this operating_factor"),
    ({"soc_init": 0.1}, r"soc_init = 0\.1; expected a number in \[soc_min, soc_max\] = \[0\.2, 1\.0\]"),
    ({"need_frac_min": 0.0, "need_frac_max": 0.0}, r"need_frac_max = 0\.0; expected a number in \(0, 1\]"),
    ({"forecast_offsets": (0, 3, 3)}, r"forecast_offsets = \(0, 3, 3\); expected distinct hours"),
    ({"close_hour": 9}, r"close_hour = 9; expected after open_hour = 9"),
    # profile specs
    ({"pv_profile": {"path": "pv.csv", "column": "kw", "sep": ";"}},
     r"pv_profile\.sep: unknown key; accepted: path, column, unit, resolution, timestamp_column"),
    ({"mall_profile": {"path": "m.csv", "column": "kw", "dayfirst": True}},
     r"mall_profile\.dayfirst: True needs a timestamp_column"),
    ({"mall_profile": {"path": "m.csv"}}, r"mall_profile\.column = None; expected the name of the CSV column"),
    ({"pv_profile": ["1"] * HOURS_PER_YEAR}, r"pv_profile = list of shape \(8760,\) and dtype <U1; expected null"),
])
def test_bad_field_is_one_line_naming_field_value_and_range(override, match):
    with pytest.raises(ValueError, match=r"^scenario 'iquitos-128': " + match) as exc:
        get_scenario("iquitos-128", **override)
    assert "\n" not in str(exc.value)


def test_a_scenario_cannot_be_made_with_a_bad_field():
    with pytest.raises(ValueError, match=r"^scenario 'x': capacity_kwh = True"):
        Scenario(name="x", capacity_kwh=True)


def test_arrival_bound_keeps_the_poisson_table_near_one_megabyte():
    from oe3jax.simulation.env import _poisson_cdf_table

    limit = 10_000 * DEFAULT_FACTOR_SUM  # the busiest hour's mean at its bound, 10,000
    scn = get_scenario("iquitos-128", daily_moto=limit)  # accepted
    table = _poisson_cdf_table(scn.daily_moto, np.asarray(scn.operating_factor))
    # K covers all but 1e-12 of Poisson(10,000): about 10,000 + 7.03 sqrt(10,000) = 10,703 entries
    assert abs(table.shape[1] - stats.poisson.ppf(1 - 1e-12, 10_000)) <= 2
    assert table.shape[0] * table.shape[1] * 4 <= 1.05e6  # float32 bytes in EnvParams
    # a factor concentrated in one hour tightens the daily bound to the hourly one
    one_hour = [0.0] * 24
    one_hour[18] = 1.0
    with pytest.raises(ValueError, match=r"daily_moto = 10001\.0; expected at most 10,000 a day"):
        get_scenario("iquitos-128", operating_factor=one_hour, daily_moto=10_001.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"start_hour": 1.5}, r"^start_hour = 1\.5; expected an integer in \[0, 8759\]"),
    ({"start_hour": True}, r"^start_hour = True; expected an integer"),
    ({"start_hour": 8760}, r"^start_hour = 8760; expected an integer in \[0, 8759\]"),
    ({"episode_hours": 24.0}, r"^episode_hours = 24\.0; expected an integer in \[1, 87,600\]"),
    ({"episode_hours": 10**9}, r"^episode_hours = 1000000000; expected an integer in \[1, 87,600\]"),
    ({"random_start": "no"}, r"^random_start = 'no'; expected true or false"),
])
def test_make_env_rejects_non_integer_hours(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_env("iquitos-38", **kwargs)


# ----------------------------------------------------------------------------- profile values
@pytest.mark.parametrize("field, values, match", [
    ("pv_profile", {7: 1e39}, r"pv_profile: too large value 1e\+39 at hour 7 \(day 0, 07:00\); expected finite kW "
                              r"in \[0, 2 x pv_dc_kwp = 8324\]"),
    ("pv_profile", {30: INF}, r"pv_profile: infinite value inf at hour 30 \(day 1, 06:00\)"),
    ("pv_profile", {12: 9000.0}, r"pv_profile: too large value 9000\.0 at hour 12"),  # 2 x 4,162 kWp = 8,324
    ("mall_profile", {5: -1.0}, r"mall_profile: negative value -1\.0 at hour 5"),
    ("mall_profile", {5: math.nan}, r"mall_profile: NaN value nan at hour 5"),
    ("mall_profile", {5: 2e6}, r"mall_profile: too large value 2000000\.0 at hour 5 .*expected finite kW in \[0, 1e\+06\]"),
])
def test_profile_values_are_finite_and_physical(field, values, match):
    array = np.full(HOURS_PER_YEAR, 100.0)
    for hour, value in values.items():
        array[hour] = value
    scn = get_scenario("iquitos-128", **{field: array})
    with pytest.raises(ValueError, match=r"^scenario 'iquitos-128': " + match):
        scenario_profiles(scn)


def test_pv_in_watts_is_caught():
    watts = scenario_profiles(get_scenario("iquitos-128"))[0][0] * 1000.0  # the packaged 2024 profile in W
    with pytest.raises(ValueError, match=r"pv_profile: too large value"):
        scenario_profiles(get_scenario("iquitos-128", pv_profile=watts))


def test_all_zero_mall_gives_a_clear_threshold_error_or_finite_observations():
    zero = np.zeros(HOURS_PER_YEAR)
    # iquitos-38: no import can exceed 0 + 281.2 (EV) + 400 (battery) = 681.2 kW, below the 2,500 kW threshold
    with pytest.raises(ValueError, match=r"^scenario 'iquitos-38': peak_threshold_kw = 2500\.0; expected below the "
                                         r"largest possible import 681\.2 kW \(mall peak 0 \+ EV installed 281\.2 "
                                         r"\+ battery 400 kW\)"):
        make_env("iquitos-38", mall_profile=zero)
    env, params = make_env("iquitos-38", mall_profile=zero, peak_threshold_kw=500.0)
    obs, state = jax.jit(env.reset)(jax.random.key(0), params)
    n_ahead = len(env.forecast_offsets)
    assert np.isfinite(np.asarray(obs)).all()
    np.testing.assert_array_equal(np.asarray(obs)[6 + n_ahead:6 + 2 * n_ahead], 0.0)  # the mall features
    action = jnp.ones(env.num_actions)
    obs, state, reward, *_ = env.step(jax.random.key(1), state, action, params)
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(float(reward))


def test_profile_notes_record_what_the_loader_assumed(tmp_path):
    path = tmp_path / "meter.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["kWh"])
        writer.writerows([[2000.0]] * HOURS_PER_YEAR)
    scn = get_scenario("iquitos-128", mall_profile={"path": path, "column": "kWh"})
    assert profile_notes(scn) == [
        f"mall_profile ({path}, column 'kWh'): no timestamps: row 0 taken as 2024-01-01 00:00 local, 365 days "
        f"(no 29 February)"]
    assert profile_notes(get_scenario("iquitos-128")) == []
    np.testing.assert_array_equal(scenario_profiles(scn)[1], np.full((1, HOURS_PER_YEAR), 2000.0))
    # the file is read again when it changes
    path.write_text("kWh\n" + "2100\n" * HOURS_PER_YEAR)
    np.testing.assert_array_equal(scenario_profiles(scn)[1], np.full((1, HOURS_PER_YEAR), 2100.0))


def test_jax_and_numpy_scalars_and_arrays_are_fields_like_python_numbers():
    scn = get_scenario("iquitos-38", capacity_kwh=jnp.float32(1000.0), n_moto=jnp.int32(10),
                       soc_init=np.array(0.5), tariff_per_kwh=jnp.full(24, 0.25))
    assert (scn.capacity_kwh, scn.n_moto, scn.soc_init) == (1000.0, 10, 0.5)
    assert type(scn.capacity_kwh) is float and type(scn.n_moto) is int and type(scn.tariff_per_kwh[0]) is float
    assert get_scenario("iquitos-38", pv_profile=jnp.zeros(HOURS_PER_YEAR)).pv_profile.shape == (HOURS_PER_YEAR,)
    with pytest.raises(ValueError, match=r"^scenario 'iquitos-38': n_moto = 10\.5; expected an integer in \[0, 10000\]$"):
        get_scenario("iquitos-38", n_moto=jnp.float32(10.5))
    with pytest.raises(ValueError, match=r"capacity_kwh = True; expected a number"):
        get_scenario("iquitos-38", capacity_kwh=jnp.bool_(True))
    with pytest.raises(ValueError, match=r"capacity_kwh = JitTracer.*; expected a number in \(0, 1e\+06\] kWh \(a concrete "
                                         r"value, not one traced by jax\.jit"):
        jax.jit(lambda c: get_scenario("iquitos-38", capacity_kwh=c).capacity_kwh)(1000.0)
