"""Objectives: the demand term (monthly peaks), the peak preset, the grid-connection limit.

Expected values are worked by hand (the tiny park of ``test_reference``: mall 10 kW, battery
100 kWh / 50 kW with one-way efficiency 0.9, largest possible import 67 kW) or come from
``calendar.monthly_peaks`` of the imports, never from the environment's own totals; each hand
case runs in both the NumPy reference and the JAX environment.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_reference import ETA, GRID_REF, check_balance, no_arrivals, tiny_env, tiny_scenario

from oe3jax.simulation.calendar import MONTH_START_HOURS, billing_peaks, monthly_peaks
from oe3jax.simulation.env import make_env, make_params
from oe3jax.simulation.reference import FLOW_NAMES, ReferenceEnv
from oe3jax.simulation.scenario import HOURS_PER_YEAR, REWARD_PRESETS, REWARD_TERMS, get_scenario

OLD_TERMS = ("co2", "cost", "solar", "ev", "peak")
# the site documents' presets (DOMAIN.md): co2, cost, solar, ev, peak
OLD_PRESETS = {
    "co2_focus": (0.50, 0.15, 0.20, 0.10, 0.05),
    "balanced": (0.35, 0.25, 0.20, 0.15, 0.05),
    "cost_focus": (0.20, 0.45, 0.15, 0.15, 0.05),
    "ev_focus": (0.25, 0.20, 0.15, 0.35, 0.05),
    "solar_focus": (0.25, 0.15, 0.40, 0.15, 0.05),
}
N_GLOBAL = 6 + 2 * 6 + 5 + 2  # calendar, 6 forecasts of PV and mall, park, month-to-date peak and fraction
MONTH_PEAK, MONTH_FRAC = N_GLOBAL - 2, N_GLOBAL - 1  # the last two global features (before the sockets)


@functools.lru_cache(maxsize=1)
def _tiny_env():
    """One JAX env of the tiny park and its jitted step: every case differs only in its params."""
    env, _ = make_env(tiny_scenario())
    return env, jax.jit(env.step_env)


def jax_tiny(t: int, energy_kwh: float = 50.0, sockets: dict | None = None, pv_at: dict | None = None,
             month_peak_kw: float = 0.0, **overrides):
    """The tiny park in the JAX env at hour t with a hand-set state (sockets: index -> (need, hours)).

    Returns the env, its params, the state and the jitted ``step_env``.
    """
    env, step = _tiny_env()
    params = make_params(tiny_scenario(pv_at, **overrides))
    _, state = env.reset(jax.random.key(0), params)
    occupied, need, hours = np.zeros(3, bool), np.zeros(3, np.float32), np.zeros(3, np.int32)
    for i, (n, h) in (sockets or {}).items():
        occupied[i], need[i], hours[i] = True, n, h
    state = state.replace(t=jnp.int32(t), energy_kwh=jnp.float32(energy_kwh), occupied=jnp.asarray(occupied),
                          need_kwh=jnp.asarray(need), hours_left=jnp.asarray(hours),
                          month_peak_kw=jnp.float32(month_peak_kw))
    return env, params, state, step


# --------------------------------------------------------------------------- presets
def test_existing_presets_keep_their_weights_and_ignore_demand():
    assert REWARD_TERMS == OLD_TERMS + ("demand",)
    for name, weights in OLD_PRESETS.items():
        assert tuple(REWARD_PRESETS[name][k] for k in OLD_TERMS) == weights
        assert REWARD_PRESETS[name]["demand"] == 0.0
    for name, weights in REWARD_PRESETS.items():
        assert set(weights) == set(REWARD_TERMS) and abs(sum(weights.values()) - 1.0) < 1e-12, name
        assert all(w >= 0 for w in weights.values()), name


def test_peak_preset_bills_demand_and_keeps_co2_and_ev():
    w = REWARD_PRESETS["peak"]
    assert w["demand"] > 0 and w["co2"] > 0 and w["ev"] > 0
    # A kWh of EV energy that would leave unmet is worth more than the most it can add to a month's
    # peak (its CO2 included): delivering it gains 2 / 272 kW-scale units, it costs at most
    # (w_co2 + w_demand) / 4,235 (iquitos-128: EV installed 272 kW, largest import 4,235 kW).
    assert 2 * w["ev"] / 272.0 > 4 * (w["co2"] + w["demand"]) / 4235.0
    # A kW off one month's peak is worth at least 10 kWh of grid import (a demand charge bills far
    # more, about 100 kWh a kW in a commercial tariff), yet 1 % of the evening rule's CO2 (61 MWh)
    # is worth over half the whole rule-to-optimum peak gain (4,607 kW): a reserve that wastes PV
    # costs more than it earns
    assert w["demand"] >= 10 * w["co2"]
    assert w["co2"] * 61_000 > 0.5 * w["demand"] * 4607


@pytest.mark.parametrize("preset", list(OLD_PRESETS))
def test_reference_reward_of_existing_presets_is_the_five_term_sum_exactly(preset):
    rng = np.random.default_rng(7)
    env = ReferenceEnv(tiny_scenario(reward=preset, daily_moto=40.0), seed=3, start_hour=9 * 24)
    env.reset()
    for _ in range(72):
        _, reward, _, _, info = env.step(rng.uniform(-1.2, 1.2, 4))
        weights = OLD_PRESETS[preset]
        assert reward == float(sum(w * info["terms"][k] for w, k in zip(weights, OLD_TERMS)))


def test_jax_reward_of_existing_presets_is_the_five_term_sum():
    env, _ = make_env("iquitos-38")
    step = jax.jit(env.step_env)
    for preset, weights in OLD_PRESETS.items():
        params = make_params(get_scenario("iquitos-38", reward=preset))
        _, state = env.reset(jax.random.key(1), params)
        state = state.replace(t=jnp.int32(19))
        action = jnp.full(env.num_actions, 0.7).at[0].set(0.9)  # evening grid charging: an import over 2,500 kW
        _, _, reward, _, info = step(jax.random.key(2), state, action, params)
        terms = {k: np.float32(v) for k, v in info["terms"].items()}
        assert terms["demand"] < 0 and terms["peak"] < 0
        expected = sum(np.float32(w) * terms[k] for w, k in zip(weights, OLD_TERMS))
        assert float(reward) == pytest.approx(float(expected), rel=2e-7, abs=1e-7), preset


# --------------------------------------------------------------------------- the demand term
# Hours 740-745 run from 31 January 20:00 to 1 February 01:00; battery actions make the imports
# 30, 10, 40, 0 (January), then 10, 20 (February): the month-to-date peak restarts at 1 February.
MONTH_CROSSING = [  # (battery action, grid import, rise of the month-to-date peak)
    (0.4, 30.0, 30.0), (0.0, 10.0, 0.0), (0.6, 40.0, 10.0), (-1.0, 0.0, 0.0), (0.0, 10.0, 10.0), (0.2, 20.0, 10.0)]


def test_month_to_date_peak_restarts_at_a_month_boundary_by_hand():
    ref = tiny_env(740, 50.0, reward="peak")
    env, params, state, step = jax_tiny(740, reward="peak")
    assert ref.n_global == env.obs_layout.n_global == N_GLOBAL
    grids, hours = [], []
    for k, (battery, grid, rise) in enumerate(MONTH_CROSSING):
        hours.append(740 + k)
        action = np.array([battery, 0.0, 0.0, 0.0])
        obs, _, _, _, info = ref.step(action, no_arrivals())
        obs_j, state, _, _, info_j = step(jax.random.key(k), state, jnp.asarray(action, jnp.float32), params)
        for flows, terms, o, peak in ((info["flows"], info["terms"], obs, ref.month_peak_kw),
                                      (info_j["flows"], info_j["terms"], np.asarray(obs_j), float(state.month_peak_kw))):
            assert float(flows["grid_import"]) == pytest.approx(grid, abs=1e-4)
            assert float(terms["demand"]) == pytest.approx(-rise / GRID_REF, abs=1e-7)
            # after the step: January's peak so far, 0 as February begins (after step 3), then February's
            expected_peak = {0: 30.0, 1: 30.0, 2: 40.0, 3: 0.0, 4: 10.0, 5: 20.0}[k]
            assert peak == pytest.approx(expected_peak, abs=1e-4)
            assert o[MONTH_PEAK] == pytest.approx(expected_peak / GRID_REF, abs=1e-6)
            t_next = 741 + k  # the month's elapsed fraction: January has 744 hours, February 672
            frac = t_next / 744 if t_next < 744 else (t_next - 744) / 672
            assert o[MONTH_FRAC] == pytest.approx(frac, abs=1e-6)
        grids.append(grid)
    # January's part adds to its peak 40, February's to its peak 20 (so far)
    assert ref.episode["monthly_peaks_sum_kw"] == pytest.approx(60.0)
    assert float(state.totals["monthly_peaks_sum_kw"]) == pytest.approx(60.0, abs=1e-4)
    assert monthly_peaks(np.array(hours), np.array(grids))[:2].tolist() == [40.0, 20.0]
    assert billing_peaks(np.array(hours), np.array(grids)).tolist() == [40.0, 20.0]
    assert ref.energy_kwh == pytest.approx(50.0 + ETA * (20 + 30) - 10 / ETA + ETA * 10)


def test_episode_start_restarts_the_month_to_date_peak():
    ref = tiny_env(745, 50.0, reward="peak")  # 1 February 01:00: the episode's first hour
    assert ref.month_peak_kw == 0.0
    _, _, _, _, info = ref.step(np.array([0.0, 0, 0, 0]), no_arrivals())
    assert info["terms"]["demand"] == pytest.approx(-10.0 / GRID_REF)  # the whole first import


def test_demand_terms_add_to_the_monthly_peaks_over_a_year_reference():
    rng = np.random.default_rng(11)
    env = ReferenceEnv(tiny_scenario(reward="peak", daily_moto=30.0), seed=2)
    env.reset(start_hour=0)
    demand, grid = [], []
    for _ in range(HOURS_PER_YEAR):
        _, reward, _, _, info = env.step(rng.uniform(-1.0, 1.0, 4))
        demand.append(info["terms"]["demand"])
        grid.append(info["flows"]["grid_import"])
        assert -1.0 <= reward <= 1.0 and all(-1.0 <= v <= 1.0 for v in info["terms"].values())
    peaks = monthly_peaks(np.arange(HOURS_PER_YEAR), np.array(grid))
    assert (peaks > 0).all()
    assert -sum(demand) * GRID_REF == pytest.approx(peaks.sum(), rel=1e-12)
    assert env.episode["monthly_peaks_sum_kw"] == pytest.approx(peaks.sum(), rel=1e-12)


def test_demand_terms_add_to_the_monthly_peaks_over_a_year_jax():
    """iquitos-128 with the peak preset, a year from 15 January (13 billing periods)."""
    env, params = make_env("iquitos-128", reward="peak", start_hour=14 * 24)
    n = 2

    @jax.jit
    def run(key):
        _, state = jax.vmap(env.reset, (0, None))(jax.random.split(key, n), params)

        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (n, env.num_actions), minval=-1.0, maxval=1.0)
            _, nxt, r, _, info = jax.vmap(env.step_env, (0, 0, 0, None))(jax.random.split(ks, n), state, a, params)
            return nxt, (state.t, info["terms"], info["flows"]["grid_import"], r)

        return jax.lax.scan(body, state, jax.random.split(key, HOURS_PER_YEAR))

    last, (t, terms, grid, reward) = jax.device_get(run(jax.random.key(5)))
    g_ref = float(params.grid_ref_kw)
    for i in range(n):
        periods = billing_peaks(t[:, i], grid[:, i].astype(np.float64))
        assert periods.size == 13
        total = -terms["demand"][:, i].astype(np.float64).sum() * g_ref
        assert total == pytest.approx(periods.sum(), rel=1e-5)
        assert float(last.totals["monthly_peaks_sum_kw"][i]) == pytest.approx(periods.sum(), rel=1e-5)
        # January's two halves are two bills: more than the twelve calendar-month peaks
        assert periods.sum() > monthly_peaks(t[:, i], grid[:, i]).sum()
    for v in terms.values():
        assert np.abs(v).max() <= 1.0
    assert np.abs(reward).max() <= 1.0


# --------------------------------------------------------------------------- the grid limit
# (hour, battery energy, sockets {i: (need, hours left)}, PV {hour: kW}, action, limit, expected)
LIMIT_CASES = {
    "battery grid charging is cut first": (
        3, 50.0, {}, {}, [0.5, 0, 0, 0], 30.0,
        dict(bess_charge=20.0, grid_to_bess=20.0, grid_import=30.0, limit_bess_cut=5.0, limit_ev_cut=0.0,
             grid_limit_violation=0.0, energy=50.0 + ETA * 20.0, need=[0.0, 0.0, 0.0])),
    "then EV charging, all sockets by the same fraction": (
        12, 50.0, {0: (3.0, 2), 1: (3.0, 2), 2: (5.0, 2)}, {}, [0.2, 1, 1, 1], 13.0,
        # ev 2 + 2 + 3 = 7, charge 10: import 27; the 10 kWh of grid charging go, then 4 of the 7 EV kWh
        dict(bess_charge=0.0, grid_import=13.0, ev_kwh=3.0, limit_bess_cut=10.0, limit_ev_cut=4.0,
             grid_limit_violation=0.0, energy=50.0, need=[3.0 - 6 / 7, 3.0 - 6 / 7, 5.0 - 9 / 7])),
    "what the mall needs beyond the limit is a violation": (
        12, 50.0, {0: (3.0, 2)}, {}, [0.0, 1, 0, 0], 8.0,
        dict(ev_kwh=0.0, grid_import=10.0, limit_ev_cut=2.0, limit_bess_cut=0.0, grid_limit_violation=2.0,
             energy=50.0, need=[3.0, 0.0, 0.0])),
    "PV charging is never cut": (
        12, 50.0, {}, {12: 20.0}, [0.5, 0, 0, 0], 5.0,
        # PV 20 serves the mall's 10, the battery takes the other 10 and 15 from the grid: 5 stay
        dict(pv_to_bess=10.0, grid_to_bess=5.0, bess_charge=15.0, grid_import=5.0, limit_bess_cut=10.0,
             grid_limit_violation=0.0, energy=50.0 + ETA * 15.0, need=[0.0, 0.0, 0.0])),
    "a discharge below the limit cuts nothing": (
        19, 50.0, {2: (5.0, 2)}, {}, [-0.2, 0, 0, 1], 5.0,
        dict(bess_discharge=10.0, ev_kwh=3.0, grid_import=3.0, limit_ev_cut=0.0, limit_bess_cut=0.0,
             grid_limit_violation=0.0, energy=50.0 - 10.0 / ETA, need=[0.0, 0.0, 2.0])),
}


@pytest.mark.parametrize("case", list(LIMIT_CASES))
def test_grid_limit_by_hand(case):
    t, energy, sockets, pv_at, action, limit, expected = LIMIT_CASES[case]
    penalty = 3.0
    ref = tiny_env(t, energy, sockets, pv_at, grid_limit_kw=limit, grid_limit_penalty=penalty)
    _, reward, _, _, info = ref.step(np.array(action, float), no_arrivals())
    env, params, state, step = jax_tiny(t, energy, sockets, pv_at, grid_limit_kw=limit, grid_limit_penalty=penalty)
    _, state2, reward_j, _, info_j = step(
        jax.random.key(0), state, jnp.asarray(action, jnp.float32), params)
    check_balance(info["flows"])
    w = REWARD_PRESETS["balanced"]
    for flows, terms, r, e, need in ((info["flows"], info["terms"], reward, ref.energy_kwh, ref.need_kwh),
                                     (info_j["flows"], info_j["terms"], float(reward_j), float(state2.energy_kwh),
                                      np.asarray(state2.need_kwh))):
        for name, value in expected.items():
            if name in FLOW_NAMES:
                assert float(flows[name]) == pytest.approx(value, abs=2e-5), name
        assert e == pytest.approx(expected["energy"], abs=2e-5)
        held = sorted(sockets)  # the others were free: the JAX env's random arrivals may fill them
        np.testing.assert_allclose(need[held], np.asarray(expected["need"])[held], atol=2e-5)
        violation = expected["grid_limit_violation"]
        assert float(terms["grid_limit"]) == pytest.approx(-violation / GRID_REF, abs=1e-7)
        assert r == pytest.approx(sum(w[k] * float(terms[k]) for k in w) - penalty * violation / GRID_REF, abs=1e-6)


def test_no_limit_is_the_default_and_a_limit_must_be_positive():
    assert get_scenario("iquitos-128").grid_limit_kw is None
    for bad, match in ((0.0, r"grid_limit_kw = 0\.0; expected null \(none\) or a number in \(0, 1e\+06\] kW"),
                       (-5, r"grid_limit_kw = -5; expected null"), ("2000", r"grid_limit_kw = '2000'; expected null")):
        with pytest.raises(ValueError, match=r"^scenario 'iquitos-128': " + match) as exc:
            get_scenario("iquitos-128", grid_limit_kw=bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match=r"grid_limit_penalty = -1\.0; expected a number in \[0, 100\]"):
        get_scenario("iquitos-128", grid_limit_penalty=-1.0)
    assert get_scenario("iquitos-128", grid_limit_kw=2500).grid_limit_kw == 2500.0


# --------------------------------------------------------------------------- KPIs
def test_kpis_monthly_peaks_from_the_trace_match_the_env_totals():
    from oe3jax.evaluation.kpis import episode_kpis
    from oe3jax.simulation.calendar import MONTH_NAMES
    from oe3jax.simulation.episode import run_episode

    env, params = make_env(tiny_scenario(daily_moto=30.0, reward="peak"))

    def act(obs, state, params):  # charge from the grid at night, discharge in the evening
        h = state.t % 24
        battery = jnp.where(h < 6, 0.6, jnp.where(h >= 18, -1.0, 0.0))
        return jnp.concatenate([battery[None], jnp.ones(3)]).astype(jnp.float32)

    key = jax.random.key(3)
    k = episode_kpis(env, params, act, key)
    trace = run_episode(env, params, act, key)
    grid = trace["flows"]["grid_import"].astype(np.float64)
    by_hand = [grid[MONTH_START_HOURS[m]:MONTH_START_HOURS[m + 1]].max() for m in range(12)]
    assert [k[f"monthly_peak_{m.lower()}_kw"] for m in MONTH_NAMES] == pytest.approx(by_hand, abs=1e-9)
    assert k["monthly_peaks_sum_kw"] == pytest.approx(sum(by_hand), abs=1e-9)
    # the environment's own running total, accumulated hour by hour in float32
    assert trace["totals"]["monthly_peaks_sum_kw"] == pytest.approx(sum(by_hand), rel=1e-5)
    assert k["grid_limit_violation_kwh"] == 0.0 and k["weather_year"] == "2024"
