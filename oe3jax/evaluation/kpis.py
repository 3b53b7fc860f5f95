"""The yearly KPIs of an episode.

>>> env, params = make_env("iquitos-128")
>>> k = episode_kpis(env, params, uncontrolled, jax.random.key(0))      # the full year

:func:`oe3jax.simulation.episode.run_episode` runs one episode in a single jitted ``lax.scan``
and brings the hourly flows back to the host; :func:`kpis` sums them in float64. A policy is
any jittable ``act(obs, state, params) -> action``; a trained ``Policy`` (``policy(obs)``) goes
through :func:`policy_kpis`. Policies evaluated with the same key see the same vehicles.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from oe3jax.simulation.calendar import MONTH_NAMES, billing_peaks, monthly_peaks
from oe3jax.simulation.env import EVENING_PEAK_HOURS
from oe3jax.simulation.episode import Act, run_episode, session_starts


def kpis(trace: Mapping[str, Any], scenario: Any) -> dict[str, float]:
    """The KPIs of an episode from a :func:`~oe3jax.simulation.episode.run_episode` trace (sums in float64).

    Definitions: self-sufficiency ``1 - grid import / (mall + EV)``; PV self-consumption
    ``PV used / PV generated``; BESS throughput ``charge + discharge`` (AC side) and equivalent full
    cycles ``throughput / (2 * capacity_kwh)``; EV demand is the energy the admitted vehicles asked
    for on arrival, so ``delivered + unmet + still plugged at the end = demand``; a vehicle is
    served when it leaves wanting at most ``served_tol_kwh``. Vehicles counted are those arriving
    in the episode's hours (the reset's draw and every step's draw but the last, which is for the
    hour after the episode); the environment's own totals also count that last draw.

    Demand: ``monthly_peak_<Mon>_kw`` is the highest hourly import of each calendar month in the
    episode (0 for a month it does not reach); ``monthly_peaks_sum_kw`` is the sum of the peaks of
    its billing periods (``calendar.billing_peaks``: a period restarts at the episode's start and
    at each month's first hour), what a demand charge on monthly peaks bills. For a year from
    1 January the two agree: the sum is that of the twelve monthly peaks.
    """
    # energy asked for by the vehicles admitted during the episode (need on arrival)
    occ = np.asarray(trace["occupied"], bool)
    left = np.asarray(trace["hours_left"])
    need = np.asarray(trace["need_kwh"], np.float64)
    new = session_starts(occ, left)
    # vehicles admitted by the last step (for the hour after the episode) are not in the trace
    # and did not charge: they are left out. Still plugged at the end: the vehicles of the last
    # step that did not depart after it.
    staying = occ[-1] & (left[-1] > 1)
    return episode_summary_kpis(
        trace["flows"], trace["vehicles"], trace["t"], trace["reward"], scenario,
        initial_totals=trace["initial_totals"],
        final_energy_kwh=float(trace["final"]["energy_kwh"]),
        ev_demand_kwh=float(need[new].sum()),
        ev_plugged_at_end_kwh=float(np.asarray(trace["final"]["need_kwh"], np.float64)[staying].sum()),
    )


def episode_summary_kpis(
    flows: Mapping[str, Any],
    vehicles: Mapping[str, Any],
    t: Any,
    reward: Any,
    scenario: Any,
    *,
    initial_totals: Mapping[str, float],
    final_energy_kwh: float,
    ev_demand_kwh: float,
    ev_plugged_at_end_kwh: float,
) -> dict[str, float]:
    """The KPIs of :func:`kpis` from the per-step flows alone, with the EV demand already summed.

    ``flows`` and ``vehicles`` map names to one value per step (the step's ``info``), ``t`` is the
    hour of the year of each step, ``reward`` the step rewards; the two EV totals and the battery
    energy after the last step come from the socket states (see :func:`kpis`).
    """
    f = {k: np.asarray(v, np.float64) for k, v in flows.items()}
    veh = {k: np.asarray(v, np.float64) for k, v in vehicles.items()}
    init = initial_totals
    hours = int(f["grid_import"].shape[0])
    t = np.asarray(t)
    hod = t % 24
    tariff = np.asarray(scenario.tariff_per_kwh, np.float64)[hod]
    evening = (hod >= EVENING_PEAK_HOURS[0]) & (hod < EVENING_PEAK_HOURS[1])

    grid = f["grid_import"].sum()
    mall = f["mall_kwh"].sum()
    ev = f["ev_kwh"].sum()
    pv = f["pv_kwh"].sum()
    pv_used = f["pv_used"].sum()
    charge = f["bess_charge"].sum()
    discharge = f["bess_discharge"].sum()
    days = hours / 24.0
    departed = veh["departed"].sum()
    served = veh["served"].sum()
    out = {
        "hours": hours,
        "days": days,
        "grid_import_kwh": grid,
        "co2_kg": grid * scenario.co2_kg_per_kwh,
        "cost": float((f["grid_import"] * tariff).sum()),
        "pv_kwh": pv,
        "pv_used_kwh": pv_used,
        "pv_curtailed_kwh": f["pv_curtailed"].sum(),
        "pv_self_consumption_frac": pv_used / pv if pv > 0 else 0.0,
        "mall_kwh": mall,
        "total_load_kwh": mall + ev,
        "self_sufficiency_frac": 1.0 - grid / (mall + ev) if mall + ev > 0 else 0.0,
        "ev_delivered_kwh": ev,
        "ev_unmet_kwh": f["unmet_kwh"].sum(),
        "ev_demand_kwh": float(ev_demand_kwh),
        "ev_plugged_at_end_kwh": float(ev_plugged_at_end_kwh),
        "ev_delivered_kwh_per_day": ev / days,
        "vehicles_arrived": init["vehicles_arrived"] + veh["arrived"][:-1].sum(),
        "vehicles_admitted": init["vehicles_admitted"] + veh["admitted"][:-1].sum(),
        "vehicles_rejected": init["vehicles_rejected"] + veh["rejected"][:-1].sum(),
        "vehicles_departed": departed,
        "vehicles_served": served,
        "vehicles_served_frac": served / departed if departed > 0 else 0.0,
        "vehicles_arrived_per_day": 0.0,
        "peak_import_kw": float(f["grid_import"].max()),
        "peak_import_evening_kw": float(f["grid_import"][evening].max()) if evening.any() else 0.0,
        "monthly_peaks_sum_kw": float(billing_peaks(t, f["grid_import"]).sum()),
        **{f"monthly_peak_{name.lower()}_kw": float(peak)
           for name, peak in zip(MONTH_NAMES, monthly_peaks(t, f["grid_import"]))},
        "grid_limit_violation_kwh": f["grid_limit_violation"].sum(),
        "limit_ev_cut_kwh": f["limit_ev_cut"].sum(),
        "limit_bess_cut_kwh": f["limit_bess_cut"].sum(),
        "bess_charge_kwh": charge,
        "bess_discharge_kwh": discharge,
        "grid_to_bess_kwh": f["grid_to_bess"].sum(),
        "bess_throughput_kwh": charge + discharge,
        "bess_equivalent_full_cycles": (charge + discharge) / (2.0 * scenario.capacity_kwh),
        "soc_final_frac": float(final_energy_kwh) / scenario.capacity_kwh,
        "return": float(np.asarray(reward, np.float64).sum()),
    }
    out["vehicles_arrived_per_day"] = out["vehicles_arrived"] / days
    return {k: float(v) if not isinstance(v, int) else v for k, v in out.items()}


def episode_kpis(env: Any, params: Any, act: Act, key: jax.Array, hours: int | None = None) -> dict[str, float]:
    """The KPIs of one episode (the full year by default) of ``act`` from ``key``."""
    trace = run_episode(env, params, act, key, hours)
    out = kpis(trace, env.scenario)
    out["scenario"] = env.scenario.name
    out["weather_year"] = env.scenario.weather_years[int(trace["year"][0])]
    return out


def policy_kpis(
    policy: Any,
    scenario: Any = None,
    *,
    key: jax.Array | None = None,
    seed: int = 0,
    hours: int | None = None,
) -> dict[str, float]:
    """The KPIs of a trained ``Policy`` (``policy(obs) -> action``) over one episode.

    ``scenario`` (a name or Scenario) defaults to the one the policy was trained on; the full year
    is evaluated from ``key`` (default ``jax.random.key(seed)``), whatever the training episodes were.
    """
    from oe3jax.simulation.env import make_env

    env, params = make_env(scenario if scenario is not None else policy.scenario)
    key = jax.random.key(seed) if key is None else key
    return episode_kpis(env, params, lambda obs, state, p: policy(obs), key, hours)


# ----------------------------------------------------------------------------- many episodes at once
#: Largest device memory (bytes) the per-step outputs of one batch of episodes may take; more
#: episodes run in several batches of the same shape (one compiled program).
BATCH_BYTES = 512 * 2**20


def _episode_summary(env: Any, act: Any, hours: int) -> Any:
    """``one(policy_params, env_params, key) -> per-step flows and EV totals`` of one episode.

    The same key schedule as :func:`~oe3jax.simulation.episode.run_episode`, so the vehicles are
    those every other evaluation with that key sees; the per-socket states are reduced inside the
    scan (new sessions' need per step, the need still plugged at the end).
    """
    import jax.numpy as jnp

    def one(pp: Any, params: Any, key: jax.Array) -> dict[str, Any]:
        params = params.replace(max_steps_in_episode=jnp.asarray(hours, jnp.int32))
        key_reset, key_steps = jax.random.split(key)
        obs, state = env.reset(key_reset, params)
        n = state.occupied.shape[-1]

        def body(carry, step_key):
            obs, state, prev_occ, prev_left = carry
            new = state.occupied & (~prev_occ | (prev_left == 1))  # as session_starts
            action = act(pp, obs, state, params)
            obs2, state2, reward, _, info = env.step_env(step_key, state, action, params)
            out = {"t": state.t, "reward": reward, "flows": info["flows"], "vehicles": info["vehicles"],
                   "demand_kwh": jnp.sum(jnp.where(new, state.need_kwh, 0.0))}
            return (obs2, state2, state.occupied, state.hours_left), out

        carry0 = (obs, state, jnp.zeros(n, bool), jnp.zeros(n, state.hours_left.dtype))
        (_, last, last_occ, last_left), trace = jax.lax.scan(body, carry0, jax.random.split(key_steps, hours))
        staying = last_occ & (last_left > 1)
        trace["plugged_end_kwh"] = jnp.sum(jnp.where(staying, last.need_kwh, 0.0))
        trace["final_energy_kwh"] = last.energy_kwh
        trace["initial_totals"] = {k: state.totals[k] for k in ("vehicles_arrived", "vehicles_admitted",
                                                               "vehicles_rejected")}
        return trace

    return one


def batch_kpis(
    env: Any,
    env_params: Any,
    act: Any,
    keys: jax.Array,
    hours: int,
    policy_params: Any = None,
    *,
    batch_bytes: int = BATCH_BYTES,
) -> dict[str, np.ndarray]:
    """The KPIs of ``runs x years x keys`` episodes, each from hour 0, in one jitted, vmapped program.

    ``env_params`` are stacked on a leading axis (one entry per weather year, ``Y``), ``keys`` is
    an array of ``S`` typed PRNG keys (one per arrival seed) and ``policy_params`` a pytree stacked
    on a leading axis of ``R`` runs (or ``None``: one run, ``act`` ignores its first argument).
    ``act(policy_params, obs, state, env_params) -> action``. Returns ``{kpi: float64[R, Y, S]}``
    with the keys of :func:`kpis`; episode ``(r, y, s)`` sees the vehicles of ``keys[s]`` under
    year ``y``, exactly as ``episode_kpis(env, params_y, ..., keys[s], hours)`` would.

    The keys run in batches whose per-step outputs fit ``batch_bytes`` (the last padded to the same
    shape, so one program serves them all).
    """
    import jax.numpy as jnp

    n_years = int(jax.tree.leaves(env_params)[0].shape[0])
    n_keys = int(keys.shape[0])
    if policy_params is None:
        runs, pp, pp_axis = 1, jnp.zeros((1,)), 0
    else:
        runs, pp, pp_axis = int(jax.tree.leaves(policy_params)[0].shape[0]), policy_params, 0
    one = _episode_summary(env, act, hours)
    over_keys = jax.vmap(one, in_axes=(None, None, 0))
    over_years = jax.vmap(over_keys, in_axes=(None, 0, None))
    over_runs = jax.vmap(over_years, in_axes=(pp_axis, None, None))
    program = jax.jit(over_runs)

    per_episode = hours * 4 * 24  # about 20 float32 values per step
    chunk = int(max(1, min(n_keys, batch_bytes // max(1, per_episode * runs * n_years))))
    results: list[Any] = []
    for start in range(0, n_keys, chunk):
        idx = np.arange(start, start + chunk)
        idx = np.where(idx < n_keys, idx, n_keys - 1)  # pad the last batch with its last key
        out = jax.tree.map(np.asarray, program(pp, env_params, keys[idx]))
        results.append(jax.tree.map(lambda x: x[:, :, : min(chunk, n_keys - start)], out))
    trace = jax.tree.map(lambda *xs: np.concatenate(xs, axis=2), *results) if len(results) > 1 else results[0]

    names: list[str] | None = None
    table: dict[str, np.ndarray] = {}
    for r in range(runs):
        for y in range(n_years):
            for s in range(n_keys):
                one_trace = jax.tree.map(lambda x: x[r, y, s], trace)
                k = episode_summary_kpis(
                    one_trace["flows"], one_trace["vehicles"], one_trace["t"], one_trace["reward"], env.scenario,
                    initial_totals={k: float(v) for k, v in one_trace["initial_totals"].items()},
                    final_energy_kwh=float(one_trace["final_energy_kwh"]),
                    ev_demand_kwh=float(np.asarray(one_trace["demand_kwh"], np.float64).sum()),
                    ev_plugged_at_end_kwh=float(one_trace["plugged_end_kwh"]),
                )
                if names is None:
                    names = list(k)
                    table = {name: np.zeros((runs, n_years, n_keys)) for name in names}
                for name in names:
                    table[name][r, y, s] = k[name]
    return table
