"""The NumPy reference: hand-worked hours, conservation laws, input checks, and the
cross-check against the JAX environment (same actions, same arrival draws, every flow agrees).

The hand-worked cases use a tiny park: 2 moto sockets (2 kW, 4.6 kWh) and 1 mototaxi socket
(3 kW, 7.4 kWh), a 100 kWh / 50 kW battery with one-way efficiency 0.9 (round trip 0.81), a
constant 10 kW mall, PV only where a test puts it, a peak threshold of 15 kW and the time-of-use
tariff (0.45 at 18:00-22:59, 0.28 otherwise). The largest possible import is then
10 + 7 + 50 = 67 kW.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from oe3jax.simulation.reference import EPISODE_NAMES, FLOW_NAMES, ReferenceEnv, arrival_means
from oe3jax.simulation.scenario import HOURS_PER_YEAR, REWARD_PRESETS, get_scenario

ETA = 0.9
GRID_REF = 67.0
TOU = tuple(0.45 if 18 <= h <= 22 else 0.28 for h in range(24))
W = REWARD_PRESETS["balanced"]


def tiny_scenario(pv_at: dict[int, float] | None = None, **overrides):
    pv = np.zeros(HOURS_PER_YEAR)
    for t, v in (pv_at or {}).items():
        pv[t] = v
    fields = dict(
        n_moto=2, n_taxi=1, moto_kw=2.0, taxi_kw=3.0, capacity_kwh=100.0, power_kw=50.0,
        soc_min=0.2, soc_max=1.0, soc_init=0.5, round_trip_eff=0.81, pv_ac_kw=50.0, pv_dc_kwp=60.0,
        peak_threshold_kw=15.0, tariff_per_kwh=TOU, reward="balanced",
        pv_profile=pv, mall_profile=np.full(HOURS_PER_YEAR, 10.0),
    )
    fields.update(overrides)
    return get_scenario("iquitos-128", **fields).replace(name="tiny")


def no_arrivals(n: int = 3) -> dict:
    return {"count_moto": 0, "count_taxi": 0, "u_need": np.zeros(n), "u_stay": np.zeros(n)}


def tiny_env(t: int, energy_kwh: float = 50.0, sockets: dict[int, tuple[float, int]] | None = None,
             pv_at: dict[int, float] | None = None, **overrides) -> ReferenceEnv:
    """The tiny park at hour t with a hand-set state: sockets maps index -> (need_kwh, hours_left)."""
    env = ReferenceEnv(tiny_scenario(pv_at, **overrides), seed=0)
    env.reset(start_hour=t, arrivals=no_arrivals(env.n_sockets))
    env.energy_kwh = energy_kwh
    for i, (need, hours) in (sockets or {}).items():
        env.occupied[i] = True
        env.need_kwh[i] = need
        env.hours_left[i] = hours
    return env


def check_balance(f: dict) -> None:
    assert f["pv_used"] + f["grid_import"] + f["bess_discharge"] == pytest.approx(
        f["mall_kwh"] + f["ev_kwh"] + f["bess_charge"], abs=1e-9)
    assert f["pv_used"] + f["pv_curtailed"] == pytest.approx(f["pv_kwh"], abs=1e-9)


# --------------------------------------------------------------------------- hand-worked hours
def test_pv_surplus_charges_battery_and_vehicles_depart_and_arrive():
    env = tiny_env(12, 50.0, {0: (1.5, 2), 1: (3.0, 1), 2: (5.0, 3)}, pv_at={12: 40.0})
    arrivals = {"count_moto": 1, "count_taxi": 1, "u_need": np.array([0.5, 0.9, 0.1]),
                "u_stay": np.array([0.6, 0.1, 0.2])}
    obs, reward, terminated, truncated, info = env.step([0.5, 1.0, 0.25, 1.0], arrivals)
    f = info["flows"]
    # sockets: min(2, 1.5) + min(0.25 * 2, 3) + min(3, 5) = 1.5 + 0.5 + 3
    assert f["ev_kwh"] == pytest.approx(5.0)
    # load 15 all from PV; surplus 25; battery asks 25, room (100 - 50) / 0.9 -> charges 25 from PV
    assert f["pv_to_load"] == pytest.approx(15.0)
    assert f["bess_charge"] == pytest.approx(25.0) and f["pv_to_bess"] == pytest.approx(25.0)
    assert f["grid_to_bess"] == pytest.approx(0.0) and f["grid_import"] == pytest.approx(0.0)
    assert f["pv_used"] == pytest.approx(40.0) and f["pv_curtailed"] == pytest.approx(0.0)
    assert env.energy_kwh == pytest.approx(50.0 + ETA * 25.0)
    # socket 1 leaves with 3 - 0.5 = 2.5 kWh unmet; socket 0 (need 0) stays one more hour
    assert f["unmet_kwh"] == pytest.approx(2.5)
    v = info["vehicles"]
    assert (v["departed"], v["served"]) == (1, 0)
    # the moto takes freed socket 1 with slot 0's uniforms; the taxi finds socket 2 busy
    assert (v["arrived"], v["admitted"], v["rejected"]) == (2, 1, 1)
    assert env.occupied.tolist() == [True, True, True]
    assert env.need_kwh == pytest.approx([0.0, 4.6 * (0.36 + 0.54 * 0.5), 2.0])
    assert env.hours_left.tolist() == [1, 3, 2]  # u_stay 0.6 -> 3 h (cumulative 0.15, 0.55, 0.85)
    assert (env.t, env.k, terminated, truncated) == (13, 1, False, False)
    terms = info["terms"]
    expected = {"co2": 0.0, "cost": 0.0, "solar": 40.0 / 50.0, "ev": 2.5 / 7.0, "peak": 0.0, "demand": 0.0,
                "grid_limit": 0.0}
    assert terms == pytest.approx(expected)
    assert reward == pytest.approx(sum(W[k] * expected[k] for k in W))
    assert obs[6 + 2 * 6] == pytest.approx(0.725)  # SOC, the first feature after the forecasts
    check_balance(f)


def test_discharge_capped_by_net_load():
    env = tiny_env(19, 50.0, pv_at={19: 5.0})
    _, reward, _, _, info = env.step([-1.0, 0.0, 0.0, 0.0], no_arrivals())
    f = info["flows"]
    # asks 50; SOC allows (50 - 20) * 0.9 = 27; the load PV leaves is 10 - 5 = 5
    assert f["bess_discharge"] == pytest.approx(5.0)
    assert f["grid_import"] == pytest.approx(0.0) and f["pv_used"] == pytest.approx(5.0)
    assert env.energy_kwh == pytest.approx(50.0 - 5.0 / ETA)
    assert info["terms"]["solar"] == pytest.approx(0.1)
    check_balance(f)


def test_discharge_capped_by_soc_window_with_evening_tariff():
    env = tiny_env(19, 25.0)
    _, reward, _, _, info = env.step([-0.5, 0.0, 0.0, 0.0], no_arrivals())
    f = info["flows"]
    # asks 25; SOC allows (25 - 20) * 0.9 = 4.5; load 10
    assert f["bess_discharge"] == pytest.approx(4.5)
    assert env.energy_kwh == pytest.approx(20.0)
    assert f["grid_import"] == pytest.approx(5.5)
    t = info["terms"]
    assert t["co2"] == pytest.approx(-5.5 / GRID_REF)
    assert t["cost"] == pytest.approx(-5.5 * 0.45 / (GRID_REF * 0.45))
    assert t["peak"] == 0.0 and t["solar"] == 0.0 and t["ev"] == 0.0
    assert reward == pytest.approx(W["co2"] * -5.5 / GRID_REF + W["cost"] * -5.5 / GRID_REF)
    check_balance(f)


def test_full_battery_takes_nothing_and_surplus_is_curtailed():
    env = tiny_env(12, 100.0, pv_at={12: 40.0})
    _, _, _, _, info = env.step([1.0, 0.0, 0.0, 0.0], no_arrivals())
    f = info["flows"]
    assert f["bess_charge"] == 0.0 and env.energy_kwh == 100.0
    assert f["pv_curtailed"] == pytest.approx(30.0) and f["pv_used"] == pytest.approx(10.0)
    assert info["terms"]["solar"] == pytest.approx((10.0 - 30.0) / 50.0)
    check_balance(f)


def test_nearly_full_battery_charges_up_to_soc_max():
    env = tiny_env(12, 95.0, pv_at={12: 40.0})
    _, _, _, _, info = env.step([1.0, 0.0, 0.0, 0.0], no_arrivals())
    f = info["flows"]
    assert f["bess_charge"] == pytest.approx(5.0 / ETA)
    assert f["pv_to_bess"] == pytest.approx(5.0 / ETA)
    assert f["pv_curtailed"] == pytest.approx(30.0 - 5.0 / ETA)
    assert env.energy_kwh == pytest.approx(100.0)
    check_balance(f)


def test_grid_charges_battery_at_night_and_peak_term():
    env = tiny_env(3, 50.0)
    _, _, _, _, info = env.step([0.5, 0.0, 0.0, 0.0], no_arrivals())
    f = info["flows"]
    assert f["bess_charge"] == pytest.approx(25.0) and f["grid_to_bess"] == pytest.approx(25.0)
    assert f["pv_to_bess"] == 0.0
    assert f["grid_import"] == pytest.approx(35.0)
    assert env.energy_kwh == pytest.approx(72.5)
    t = info["terms"]
    assert t["peak"] == pytest.approx(-(35.0 - 15.0) / (GRID_REF - 15.0))
    assert t["cost"] == pytest.approx(-35.0 * 0.28 / (GRID_REF * 0.45))
    check_balance(f)


def test_nan_counts_as_zero_and_actions_are_clipped():
    env = tiny_env(12, 50.0, {0: (10.0, 3), 1: (10.0, 3), 2: (10.0, 3)})
    _, _, _, _, info = env.step([np.nan, 5.0, np.nan, 0.5], no_arrivals())
    f = info["flows"]
    # socket 0 at its 2 kW rating (5 clipped to 1); socket 1 NaN -> 0; taxi 0.5 * 3 kW
    assert f["ev_kwh"] == pytest.approx(3.5)
    assert env.need_kwh == pytest.approx([8.0, 10.0, 8.5])
    assert f["bess_charge"] == 0.0 and f["bess_discharge"] == 0.0 and env.energy_kwh == 50.0
    assert f["grid_import"] == pytest.approx(13.5)
    check_balance(f)


def test_departures_unmet_energy_and_served_tolerance():
    env = tiny_env(12, 50.0, {0: (1.0, 1), 1: (2.0005, 1), 2: (3.5, 1)})
    _, _, _, _, info = env.step([0.0, 1.0, 1.0, 1.0], no_arrivals())
    # all three leave: 0 left (served), 0.0005 <= 1e-3 left (served), 0.5 left (not served)
    assert info["flows"]["ev_kwh"] == pytest.approx(1.0 + 2.0 + 3.0)
    assert info["flows"]["unmet_kwh"] == pytest.approx(0.5005)
    assert (info["vehicles"]["departed"], info["vehicles"]["served"]) == (3, 2)
    assert not env.occupied.any() and (env.need_kwh == 0).all() and (env.hours_left == 0).all()
    assert info["terms"]["ev"] == pytest.approx((6.0 - 0.5005) / 7.0)


def test_admission_fills_first_free_sockets_and_rejects_the_rest():
    env = tiny_env(12, 50.0, {0: (1.0, 1)})  # socket 0 leaves this hour, socket 1 and taxi free
    arrivals = {"count_moto": 3, "count_taxi": 2, "u_need": np.array([0.0, 0.25, 0.75]),
                "u_stay": np.array([0.1, 0.99, 0.5])}
    _, _, _, _, info = env.step([0.0, 0.0, 0.0, 0.0], arrivals)
    v = info["vehicles"]
    assert (v["arrived"], v["admitted"], v["rejected"]) == (5, 3, 2)
    assert (v["departed"], v["served"]) == (1, 0)
    assert env.occupied.tolist() == [True, True, True]
    # moto k=0 -> socket 0 (slot 0), k=1 -> socket 1 (slot 1); taxi k=0 -> socket 2 (slot n_moto + 0)
    assert env.need_kwh == pytest.approx([4.6 * 0.36, 4.6 * (0.36 + 0.54 * 0.25), 7.4 * (0.36 + 0.54 * 0.75)])
    assert env.hours_left.tolist() == [1, 4, 2]
    assert info["totals"]["vehicles_rejected"] == 2 and info["totals"]["unmet_kwh"] == pytest.approx(1.0)


@pytest.mark.parametrize("t, expected_stay", [(20, 1), (18, 3), (12, 4)])
def test_stay_is_clipped_at_closing(t, expected_stay):
    # arrivals at t + 1; u_stay 0.99 asks for 4 h; closing at 22:00
    env = tiny_env(t, 50.0)
    arrivals = {"count_moto": 1, "count_taxi": 0, "u_need": np.full(3, 0.5), "u_stay": np.full(3, 0.99)}
    env.step([0.0, 0.0, 0.0, 0.0], arrivals)
    assert env.hours_left.tolist() == [expected_stay, 0, 0]


def test_arrivals_when_closed_are_rejected_as_bad_input():
    env = tiny_env(22, 50.0)
    with pytest.raises(ValueError, match="closed"):
        env.step([0.0] * 4, {"count_moto": 1, "count_taxi": 0, "u_need": np.zeros(3), "u_stay": np.zeros(3)})


def test_reset_shows_first_hour_vehicles_and_calendar():
    env = ReferenceEnv(tiny_scenario(), seed=0)
    t0 = 31 * 24 + 9  # 1 February 2024, 09:00, a Thursday
    arrivals = {"count_moto": 1, "count_taxi": 1, "u_need": np.array([0.5, 0.0, 0.25]),
                "u_stay": np.array([0.2, 0.0, 0.9])}
    obs = env.reset(start_hour=t0, arrivals=arrivals)
    assert (env.t, env.k, env.energy_kwh) == (t0, 0, 50.0)
    assert env.occupied.tolist() == [True, False, True]
    assert env.hours_left.tolist() == [2, 0, 4]
    n_fc = 6
    assert env.n_global == 6 + 2 * n_fc + 5 + 2 and obs.shape == (env.n_global + 4 * 3,)
    assert obs[:6] == pytest.approx([math.sin(2 * math.pi * 9 / 24), math.cos(2 * math.pi * 9 / 24),
                                     math.sin(2 * math.pi * 3 / 7), math.cos(2 * math.pi * 3 / 7),
                                     math.sin(2 * math.pi * 31 / 365), math.cos(2 * math.pi * 31 / 365)])
    g = obs[6 + 2 * n_fc:env.n_global]
    need_total = 4.6 * 0.63 + 7.4 * (0.36 + 0.54 * 0.25)
    # ... then the month-to-date peak (0 at an episode's start) and 9 of February's 28 x 24 hours gone
    assert g == pytest.approx([0.5, 0.5, 1.0, need_total / ((2 * 4.6 + 7.4) * 0.9), 0.28 / 0.45, 0.0, 9 / (28 * 24)])
    sockets = obs[env.n_global:].reshape(3, 4)
    assert sockets == pytest.approx(np.array([
        [1.0, 0.63, 2 / 4, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.36 + 0.54 * 0.25, 4 / 4, 1.0]]))
    assert env.episode["vehicles_arrived"] == 2 and env.episode["vehicles_admitted"] == 2


def test_forecast_features_wrap_around_the_year():
    pv_at = {8759: 25.0, 0: 50.0, 2: 10.0}
    env = ReferenceEnv(tiny_scenario(pv_at, forecast_offsets=(0, 1, 3)), seed=0)
    obs = env.reset(start_hour=8759, arrivals=no_arrivals())
    assert obs[6:9] == pytest.approx([0.5, 1.0, 0.2])  # pv at 8759, 0, 2 over pv_ac_kw 50
    assert obs[9:12] == pytest.approx([1.0, 1.0, 1.0])  # constant mall over its maximum
    env.step([0.0] * 4, no_arrivals())
    assert env.t == 0 and env.k == 1


# --------------------------------------------------------------------------- laws and totals
def test_arrival_means_follow_the_operating_factor():
    moto, taxi = arrival_means(get_scenario("iquitos-38", pv_profile=np.zeros(HOURS_PER_YEAR),
                                            mall_profile=np.full(HOURS_PER_YEAR, 1000.0)))
    # sum of the factor: 0.30 (09h) + sum_{h=10..17} (0.30 + 0.70 (h - 10) / 8) + 4 x 1.00 = 9.15
    assert moto.sum() == pytest.approx(270.0) and taxi.sum() == pytest.approx(39.0)
    assert moto[18] == pytest.approx(270.0 / 9.15, rel=1e-5) and moto[9] == pytest.approx(0.3 * 270 / 9.15, rel=1e-5)
    assert moto[:9].sum() == 0 and moto[22:].sum() == 0


def test_random_run_conserves_energy_and_respects_limits():
    rng = np.random.default_rng(3)
    pv = np.clip(rng.normal(20.0, 15.0, HOURS_PER_YEAR), 0.0, None)
    env = ReferenceEnv(tiny_scenario(daily_moto=40.0, daily_taxi=10.0, pv_profile=pv), seed=1,
                       episode_hours=24 * 14)
    env.reset()
    totals = dict.fromkeys(("ev", "unmet", "grid", "charge", "discharge"), 0.0)
    need_in = float(env.need_kwh.sum())
    e0 = env.energy_kwh
    truncated, steps = False, 0
    while not truncated:
        a = rng.uniform(-1.3, 1.3, env.n_actions)
        a[rng.random(env.n_actions) < 0.05] = np.nan
        need_before = float(env.need_kwh.sum())
        _, reward, terminated, truncated, info = env.step(a)
        f, steps = info["flows"], steps + 1
        check_balance(f)
        assert all(f[name] >= -1e-12 for name in FLOW_NAMES), f
        assert f["bess_charge"] * f["bess_discharge"] == 0.0
        assert f["bess_charge"] <= 50.0 + 1e-12 and f["bess_discharge"] <= 50.0 + 1e-12
        assert 20.0 - 1e-9 <= env.energy_kwh <= 100.0 + 1e-9
        assert all(-1.0 <= x <= 1.0 for x in info["terms"].values()) and -1.0 <= reward <= 1.0
        assert not terminated and (env.need_kwh >= 0).all()
        assert ((env.hours_left >= 1) == env.occupied).all() and (env.hours_left <= 4).all()
        # the park's energy: need before - delivered - unmet + admitted need = need after
        admitted_need = float(env.need_kwh.sum()) - (need_before - f["ev_kwh"] - f["unmet_kwh"])
        assert admitted_need >= -1e-9
        totals["ev"] += f["ev_kwh"]
        totals["unmet"] += f["unmet_kwh"]
        totals["charge"] += f["bess_charge"]
        totals["discharge"] += f["bess_discharge"]
        need_in += max(admitted_need, 0.0)
    assert steps == 24 * 14 and env.k == steps
    # battery: E_end = E_0 + eta * charge - discharge / eta (clip is a no-op)
    assert env.energy_kwh == pytest.approx(e0 + ETA * totals["charge"] - totals["discharge"] / ETA, abs=1e-8)
    # vehicles: all the need brought in is delivered, unmet, or still parked
    assert need_in == pytest.approx(totals["ev"] + totals["unmet"] + env.need_kwh.sum(), abs=1e-8)
    ep = env.episode
    assert set(ep) == set(EPISODE_NAMES)
    assert ep["ev_kwh"] == pytest.approx(totals["ev"]) and ep["unmet_kwh"] == pytest.approx(totals["unmet"])
    assert ep["vehicles_arrived"] == ep["vehicles_admitted"] + ep["vehicles_rejected"]
    assert ep["vehicles_admitted"] == ep["vehicles_departed"] + env.occupied.sum()
    assert ep["vehicles_arrived"] > 100


def test_seeded_runs_repeat_and_truncate():
    def run(seed: int) -> list[float]:
        env = ReferenceEnv(tiny_scenario(daily_moto=40.0), seed=seed, episode_hours=30)
        env.reset()
        out = []
        for k in range(30):
            _, r, term, trunc, _ = env.step(np.ones(4))
            assert not term and trunc == (k == 29)
            out.append(r)
        return out

    assert run(5) == run(5) and run(5) != run(6)


@pytest.mark.parametrize("action, error", [
    (np.zeros(5), ValueError),                      # another park's size
    (np.zeros(3), ValueError),
    (np.zeros((1, 4)), ValueError),                 # a batch of one is not one action
    (np.zeros((2, 2)), ValueError),
    (0.5, ValueError),
    (np.zeros(4, np.complex128), TypeError),       # the imaginary part would be dropped
    (np.array(["0.5"] * 4), TypeError),            # strings would be parsed as numbers
    (np.array([None] * 4), TypeError),
    ([0.0, [1.0, 2.0], 0.0, 0.0], TypeError),      # ragged
])
def test_malformed_action_names_action_shape_and_scenario(action, error):
    env = ReferenceEnv(tiny_scenario(), seed=0)
    env.reset(start_hour=0, arrivals=no_arrivals())
    with pytest.raises(error, match=r"^action: .*\(4,\).*'tiny'") as exc:
        env.step(action, no_arrivals())
    assert "\n" not in str(exc.value)
    assert (env.t, env.k) == (0, 0)  # nothing happened


def test_int_and_bool_actions_step_like_floats():
    """Charging one moto socket at full rate at noon, written as floats, ints or bools."""
    rewards = []
    for action in ([0.0, 1.0, 0.0, 0.0], np.array([0, 1, 0, 0], np.int64), np.array([0, 1, 0, 0], np.uint8),
                   np.array([False, True, False, False]), np.array([0, 1, 0, 0], np.float32)):
        env = tiny_env(12, 50.0, {0: (3.0, 2)})
        _, reward, _, _, info = env.step(action, no_arrivals())
        assert info["flows"]["ev_kwh"] == pytest.approx(2.0)  # the 2 kW rating for one hour
        rewards.append(reward)
    assert len(set(rewards)) == 1


def test_bad_inputs_name_the_field():
    env = ReferenceEnv(tiny_scenario(), seed=0)
    with pytest.raises(ValueError, match="u_need"):
        env.step(np.zeros(4), {"count_moto": 0, "count_taxi": 0, "u_need": np.zeros(2), "u_stay": np.zeros(3)})
    with pytest.raises(ValueError, match="count_taxi"):
        env.step(np.zeros(4), {"count_moto": 0, "count_taxi": -1, "u_need": np.zeros(3), "u_stay": np.zeros(3)})
    with pytest.raises(ValueError, match="start_hour"):
        env.reset(start_hour=8760)
    with pytest.raises(ValueError, match="episode_hours"):
        ReferenceEnv(tiny_scenario(), episode_hours=0)
    with pytest.raises(ValueError, match="peak_threshold_kw"):
        ReferenceEnv(tiny_scenario(peak_threshold_kw=67.0))


# --------------------------------------------------------------------------- cross-check with JAX
WEEK = 168
TERM_ATOL = 1e-6  # reward terms are order 1


def _close(jax_value, ref_value, atol: float, rtol: float = 1e-5) -> bool:
    return abs(float(jax_value) - float(ref_value)) <= rtol * abs(float(ref_value)) + atol


@pytest.fixture(scope="module")
def jax_week():
    """A jitted week of the JAX env per preset: (env, params, rollout(key, actions))."""
    import jax

    from oe3jax.simulation.env import make_env

    cache = {}

    def get(name: str, overrides: tuple = ()):
        if (name, overrides) not in cache:
            env, params = make_env(name, episode_hours=WEEK, random_start=True, **dict(overrides))

            @jax.jit
            def rollout(key, actions):
                k_reset, k_run = jax.random.split(key)
                start, first_arrivals = env.initial_conditions(k_reset, params)
                year = env.initial_year(k_reset, params)
                obs0, state0 = env.reset(k_reset, params)

                def one_hour(state, inputs):
                    k, a = inputs
                    obs, nxt, reward, terminated, truncated, info = env.step(k, state, a, params)
                    out = {"reward": reward, "terminated": terminated, "truncated": truncated,
                           "flows": info["flows"], "terms": info["terms"], "vehicles": info["vehicles"],
                           "arrivals": info["arrivals"], "totals": info["totals"],
                           "obs": info["final_observation"], "t": nxt.t, "k": nxt.k, "year": nxt.year,
                           "month_peak_kw": nxt.month_peak_kw,
                           "energy_kwh": nxt.energy_kwh, "occupied": nxt.occupied,
                           "need_kwh": nxt.need_kwh, "hours_left": nxt.hours_left}
                    return nxt, out

                _, outs = jax.lax.scan(one_hour, state0, (jax.random.split(k_run, actions.shape[0]), actions))
                return start, year, first_arrivals, obs0, state0, outs

            cache[(name, overrides)] = (env, params, rollout)
        return cache[(name, overrides)]

    return get


# The new features at once: the peak preset, three weather years drawn per episode, noisy
# forecasts and a grid-connection limit low enough to cut the battery's grid charging, then EV
# charging, and to leave violations (evening mall loads are 2,200 kW and more).
FEATURES = {
    "iquitos-128": (("reward", "peak"), ("weather_years", ("syn2", "2024", "syn5")), ("pv_forecast_noise_frac", 0.3),
                    ("mall_forecast_noise_frac", 0.05), ("grid_limit_kw", 2000.0), ("grid_limit_penalty", 2.0)),
    "iquitos-38": (("reward", "peak"), ("weather_years", ("syn1", "syn3")), ("pv_forecast_noise_frac", 0.5),
                   ("mall_forecast_noise_frac", 0.2), ("grid_limit_kw", 2200.0)),
}
CASES = [("iquitos-128", ()), ("iquitos-38", ()), ("iquitos-128", FEATURES["iquitos-128"]),
         ("iquitos-38", FEATURES["iquitos-38"])]


@pytest.mark.parametrize("name, overrides", CASES, ids=["128", "38", "128-features", "38-features"])
def test_reference_matches_jax_env_over_a_week(jax_week, name, overrides):
    import jax

    env, params, rollout = jax_week(name, overrides)
    n_act = env.num_actions
    years = set()
    for seed in (0, 1, 2):
        rng = np.random.default_rng(100 + seed)
        actions = rng.uniform(-1.2, 1.2, (WEEK, n_act)).astype(np.float32)
        actions[rng.random(actions.shape) < 0.02] = np.nan
        start, year, first_arrivals, obs0, state0, outs = jax.device_get(rollout(jax.random.PRNGKey(seed), actions))

        ref = ReferenceEnv(env.scenario, episode_hours=WEEK)
        # absolute floor for flows near 0 (differences of kWh-thousands): 4 float32 ulps at the
        # scale of the largest possible import; measured worst case about 1.2 ulps
        e_atol = 4.0 * float(np.spacing(np.float32(ref.grid_ref_kw)))
        obs = ref.reset(start_hour=int(start), arrivals=first_arrivals, year=int(year))
        years.add(int(year))
        np.testing.assert_allclose(np.asarray(obs0), obs, rtol=1e-5, atol=1e-5)
        assert ref.occupied.tolist() == np.asarray(state0.occupied).tolist()
        checked = dict.fromkeys(FLOW_NAMES, 0.0)
        for k in range(WEEK):
            at = lambda tree: jax.tree.map(lambda x: np.asarray(x)[k], tree)  # noqa: E731
            arr = at(outs["arrivals"])
            obs, reward, terminated, truncated, info = ref.step(actions[k], arr)
            where = f"{name} seed {seed} step {k} (hour {ref.t - 1})"
            for flow in FLOW_NAMES:
                j = outs["flows"][flow][k]
                assert _close(j, info["flows"][flow], e_atol), f"{where}: {flow} jax {j} ref {info['flows'][flow]}"
                checked[flow] = max(checked[flow], abs(info["flows"][flow]))
            for term, value in info["terms"].items():
                assert _close(outs["terms"][term][k], value, atol=TERM_ATOL), f"{where}: term {term}"
            assert _close(outs["reward"][k], reward, atol=TERM_ATOL), f"{where}: reward"
            for v, count in info["vehicles"].items():
                assert float(outs["vehicles"][v][k]) == count, f"{where}: vehicles {v}"
            assert bool(outs["terminated"][k]) is terminated is False
            assert bool(outs["truncated"][k]) == truncated == (k == WEEK - 1), where
            np.testing.assert_allclose(outs["obs"][k], obs, rtol=1e-5, atol=1e-5, err_msg=where)
            if k < WEEK - 1:  # after the last step gymnax has already reset the JAX state
                assert (int(outs["t"][k]), int(outs["k"][k]), int(outs["year"][k])) == (ref.t, ref.k, ref.year), where
                assert _close(outs["month_peak_kw"][k], ref.month_peak_kw, e_atol), f"{where}: month peak"
                assert _close(outs["energy_kwh"][k], ref.energy_kwh, e_atol), f"{where}: energy"
                assert outs["occupied"][k].tolist() == ref.occupied.tolist(), f"{where}: occupied"
                assert outs["hours_left"][k].tolist() == ref.hours_left.tolist(), f"{where}: hours_left"
                np.testing.assert_allclose(outs["need_kwh"][k], ref.need_kwh, rtol=1e-5, atol=1e-5, err_msg=where)
        for key, value in info["totals"].items():
            j = outs["totals"][key][WEEK - 1]
            assert _close(j, value, atol=WEEK * e_atol), f"{name} seed {seed}: episode {key} jax {j} ref {value}"
        # the week exercised what it claims to check: PV, charging, departures with unmet energy
        exercised = ["pv_kwh", "ev_kwh", "bess_charge", "bess_discharge", "pv_curtailed", "unmet_kwh"]
        if overrides:  # and the grid limit's three stages
            exercised += ["limit_bess_cut", "limit_ev_cut", "grid_limit_violation"]
        for flow in exercised:
            assert checked[flow] > 0, f"{name} seed {seed}: the week never moved {flow}"
    if overrides:
        assert len(years) > 1, f"{name}: the three episodes all drew weather year {years}"
