"""The MPC: with the whole episode as horizon and every vehicle known it reproduces each
perfect-foresight optimum; its record of imports is the environment's; what it plans from (its
forecast, the month-to-date peak, the plugged vehicles); it runs under jax.vmap; bad input."""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from oe3jax.control import optimum as O
from oe3jax.control.mpc import MPC, _Record, expected_ev_by_hour
from oe3jax.control.sessions import record_sessions
from oe3jax.control.site import Site
from oe3jax.simulation.env import make_env
from oe3jax.simulation.episode import run_episode

KEY = jax.random.key(7)
HOURS = 48


@functools.lru_cache(maxsize=None)
def _env():
    return make_env("iquitos-38")


@functools.lru_cache(maxsize=None)
def _full_foresight(objective: str):
    env, params = _env()
    sessions, _ = record_sessions(env, params, KEY, HOURS)
    mpc = MPC(env, params, objective, horizon=HOURS, sessions=sessions)
    trace = run_episode(env, params, mpc, KEY, HOURS)
    return mpc, trace


@pytest.mark.parametrize("objective", ["monthly_peaks", "reward"])
def test_full_horizon_with_known_vehicles_reproduces_the_optimum(objective):
    """Re-solved every hour on what is left of the episode, with its record of the peaks so far,
    the MPC must land on the optimum of the whole episode."""
    env, params = _env()
    mpc, trace = _full_foresight(objective)
    best = O.optimum_plan(env, params, KEY, HOURS, objective).optimum.value
    got = O.objective_value(objective, Site.from_env(env, params), trace["t"], trace["flows"]["grid_import"],
                            trace["reward"])
    assert got == pytest.approx(best, abs=O.CHECK_RTOL * abs(best) + O.CHECK_ATOL[objective])
    assert mpc.info["solves"] == HOURS
    # the plan shrinks to the end of the episode, and every vehicle gets its full-power energy
    assert np.sum(trace["flows"]["unmet_kwh"], dtype=np.float64) == pytest.approx(
        np.sum(record_sessions(env, params, KEY, HOURS)[1]["flows"]["unmet_kwh"], dtype=np.float64), abs=1e-2)


def test_record_of_imports_is_the_environments():
    mpc, trace = _full_foresight("monthly_peaks")
    rec = mpc._records[0]
    g = np.asarray(trace["flows"]["grid_import"], np.float64)
    assert rec.k == HOURS - 1
    np.testing.assert_allclose(rec.imports, g[:-1], atol=1e-3)
    assert rec.month_peak_kw == pytest.approx(g[:-1].max(), abs=1e-3)  # 48 h of January: one month


def test_what_the_mpc_plans_from():
    """Forecast function, expected EV load, plugged vehicles and the month-to-date record."""
    env, params = _env()
    calls = []

    def forecast(t, hours):
        calls.append((t, hours))
        return np.full(hours, 100.0), np.full(hours, 50.0)

    expected = np.arange(24.0)
    mpc = MPC(env, params, "monthly_peaks", horizon=5, forecast=forecast, expected_ev_kw=expected)
    n = env.n_sockets
    occupied = np.zeros(n, bool)
    occupied[[0, n - 1]] = True
    need = np.zeros(n)
    need[[0, n - 1]] = [10.0, 3.0]
    hours_left = np.zeros(n, int)
    hours_left[[0, n - 1]] = [2, 9]
    rec = _Record(k=3, month=0, month_peak_kw=1234.0, evening_peak_kw=99.0)
    hz = mpc.horizon_at(t=30, k=4, energy=500.0, occupied=occupied, need=need, hours_left=hours_left,
                        episode_len=7, rec=rec)
    assert calls == [(30, 3)]  # the plan stops at the episode's end: 7 - 4 = 3 hours
    np.testing.assert_allclose(hz.pv_kw, [100.0] * 3)
    np.testing.assert_allclose(hz.mall_kw, [50.0, 50.0 + 7.0, 50.0 + 8.0])  # hours of day 6, 7, 8 after the first
    s = hz.sessions
    np.testing.assert_array_equal(s.socket, [0, n - 1])
    np.testing.assert_array_equal(s.stop, [2, 3])
    np.testing.assert_array_equal(s.departs, [True, False])
    rating = Site.from_env(env, params).ratings_kw
    # socket 0: all it can get in 2 hours; the last socket: 3 kWh, of which none is due in the plan
    np.testing.assert_allclose(s.energy_kwh, [min(10.0, 2 * rating[0]), max(3.0 - rating[-1] * 6, 0.0)])
    assert hz.month_peak0_kw == 1234.0 and hz.evening_peak0_kw == 99.0
    assert hz.energy0_kwh == 500.0
    # in a new month the month-to-date peak starts again from 0
    hz_feb = mpc.horizon_at(t=31 * 24, k=4, energy=500.0, occupied=occupied, need=need, hours_left=hours_left,
                            episode_len=7, rec=rec)
    assert hz_feb.month_peak0_kw == 0.0


def test_expected_ev_profile_is_a_mean_by_hour_of_day():
    env, params = _env()
    prof = expected_ev_by_hour(env, params, KEY, HOURS)
    _, trace = record_sessions(env, params, KEY, HOURS)
    ev = trace["flows"]["ev_kwh"].astype(np.float64)
    assert prof.shape == (24,)
    assert prof[19] == pytest.approx((ev[19] + ev[43]) / 2)
    assert np.all(prof[:9] == 0.0)  # the park is closed at night


def test_runs_under_vmap_with_one_record_per_episode():
    env, params = _env()
    mpc = MPC(env, params, "grid", horizon=3)
    keys = jax.random.split(KEY, 2)
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    actions = jax.vmap(mpc, in_axes=(0, 0, None))(obs, states, params)
    assert actions.shape == (2, 1 + env.n_sockets)
    assert set(mpc._records) == {0, 1}
    # a plugged socket is charged (a free one is not), the battery action is within [-1, 1]
    occ = np.asarray(states.occupied)
    assert np.all(np.asarray(actions)[:, 1:][~occ] == 0.0)
    assert np.all(np.abs(np.asarray(actions)[:, 0]) <= 1.0)


def test_bad_input():
    env, params = _env()
    with pytest.raises(ValueError, match=r"^horizon: expected an integer >= 1 \(hours\), got 0$"):
        MPC(env, params, "grid", horizon=0)
    with pytest.raises(ValueError, match=r"^objective: unknown 'peak'; accepted: grid, cost"):
        MPC(env, params, "peak")
    with pytest.raises(ValueError, match=r"^expected_ev_kw: expected 24 finite values >= 0"):
        MPC(env, params, expected_ev_kw=[1.0] * 23)
    mpc = MPC(env, params, "grid", horizon=4, forecast=lambda t, h: (np.zeros(h + 1), np.zeros(h)))
    n = env.n_sockets
    with pytest.raises(ValueError, match=r"^forecast: expected two arrays of 4 values"):
        mpc.horizon_at(0, 0, 500.0, np.zeros(n, bool), np.zeros(n), np.zeros(n, int), 100)
    with pytest.raises(RuntimeError, match=r"^MPC: step 5 of an episode after step None"):
        mpc.decide(0, 5, 5, 500.0, np.zeros(n, bool), np.zeros(n), np.zeros(n, int), 100)
