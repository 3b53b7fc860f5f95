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
    f = {k: np.asarray(v, np.float64) for k, v in trace["flows"].items()}
    veh = {k: np.asarray(v, np.float64) for k, v in trace["vehicles"].items()}
    init = trace["initial_totals"]
    hours = int(f["grid_import"].shape[0])
    hod = np.asarray(trace["t"]) % 24
    tariff = np.asarray(scenario.tariff_per_kwh, np.float64)[hod]
    evening = (hod >= EVENING_PEAK_HOURS[0]) & (hod < EVENING_PEAK_HOURS[1])

    # energy asked for by the vehicles admitted during the episode (need on arrival)
    occ = np.asarray(trace["occupied"], bool)
    left = np.asarray(trace["hours_left"])
    need = np.asarray(trace["need_kwh"], np.float64)
    new = session_starts(occ, left)
    demand = float(need[new].sum())
    # vehicles admitted by the last step (for the hour after the episode) are not in the trace
    # and did not charge: they are left out. Still plugged at the end: the vehicles of the last
    # step that did not depart after it.
    staying = occ[-1] & (left[-1] > 1)
    plugged_end = float(np.asarray(trace["final"]["need_kwh"], np.float64)[staying].sum())

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
        "ev_demand_kwh": demand,
        "ev_plugged_at_end_kwh": plugged_end,
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
        "monthly_peaks_sum_kw": float(billing_peaks(trace["t"], f["grid_import"]).sum()),
        **{f"monthly_peak_{name.lower()}_kw": float(peak)
           for name, peak in zip(MONTH_NAMES, monthly_peaks(trace["t"], f["grid_import"]))},
        "grid_limit_violation_kwh": f["grid_limit_violation"].sum(),
        "limit_ev_cut_kwh": f["limit_ev_cut"].sum(),
        "limit_bess_cut_kwh": f["limit_bess_cut"].sum(),
        "bess_charge_kwh": charge,
        "bess_discharge_kwh": discharge,
        "grid_to_bess_kwh": f["grid_to_bess"].sum(),
        "bess_throughput_kwh": charge + discharge,
        "bess_equivalent_full_cycles": (charge + discharge) / (2.0 * scenario.capacity_kwh),
        "soc_final_frac": float(trace["final"]["energy_kwh"]) / scenario.capacity_kwh,
        "return": float(np.asarray(trace["reward"], np.float64).sum()),
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
