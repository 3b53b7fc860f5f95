"""Whole-episode rollouts and the yearly KPIs.

>>> env, params = make_env("iquitos-128")
>>> kpis = evaluate(env, params, uncontrolled, jax.random.key(0))      # the full year
>>> print(compare({"uncontrolled": kpis, "rule": evaluate(env, params, rule, key)}))

:func:`rollout` runs one episode in a single jitted ``lax.scan`` (policy and environment step
inside) and brings the hourly flows back to the host; :func:`kpis` sums them in float64. A policy is
any jittable ``act(obs, state, params) -> action``; a trained ``Policy`` (``policy(obs)``) goes
through :func:`evaluate_policy`.

Key schedule: ``reset`` uses ``split(key)[0]``, step ``k`` uses ``split(split(key)[1], hours)[k]``.
The vehicle arrivals depend on these keys only, never on the actions, so two policies evaluated
with the same key see exactly the same vehicles.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from oe3jax.env import EVENING_HOURS as EVENING_PEAK_HOURS  # 18:00-21:59, the evening peak-import KPI

Act = Callable[[jax.Array, Any, Any], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A fixed schedule of actions, ``actions[k]`` at step ``k`` of the episode (shape ``(steps, 1 + n)``).

    Callable like any policy; :func:`rollout` passes the table as an argument of one compiled
    program per (environment, length), so replaying many schedules compiles once.
    """

    actions: np.ndarray

    def __call__(self, obs: jax.Array, state: Any, params: Any) -> jax.Array:
        table = jnp.asarray(self.actions, jnp.float32)
        return table[jnp.minimum(state.k, table.shape[0] - 1)]


def _compiled_rollout(env: Any, act: Act | None, hours: int) -> Callable[..., Any]:
    """The cached program of :func:`_build_rollout`, shared by environments of equal scenarios."""
    try:  # an environment is fixed by its type and scenario (its arrays are in params)
        return _build_rollout(_EnvKey(type(env), env.scenario, env), act, hours)
    except TypeError:  # a scenario holding an unhashable profile spec: cache per object
        return _build_rollout(_EnvKey(type(env), id(env), env), act, hours)


@dataclasses.dataclass(frozen=True)
class _EnvKey:
    kind: type
    key: Any
    env: Any = dataclasses.field(compare=False, hash=False)


@functools.lru_cache(maxsize=32)
def _build_rollout(env_key: _EnvKey, act: Act | None, hours: int) -> Callable[..., Any]:
    """One jitted episode of ``hours`` steps; ``act=None`` plays the ``table`` argument instead."""
    env = env_key.env

    def run(params: Any, key: jax.Array, table: jax.Array | None) -> tuple[Any, Any, Any]:
        key_reset, key_steps = jax.random.split(key)
        obs, state = env.reset(key_reset, params)

        def body(carry, step_key):
            obs, state = carry
            action = table[state.k] if act is None else act(obs, state, params)
            obs2, state2, reward, _, info = env.step_env(step_key, state, action, params)
            out = {
                "t": state.t, "energy_kwh": state.energy_kwh, "occupied": state.occupied,
                "need_kwh": state.need_kwh, "hours_left": state.hours_left,
                "action": jnp.asarray(action, jnp.float32), "reward": reward,
                "flows": info["flows"], "vehicles": info["vehicles"],
            }
            return (obs2, state2), out

        (_, last), trace = jax.lax.scan(body, (obs, state), jax.random.split(key_steps, hours))
        final = {"energy_kwh": last.energy_kwh, "need_kwh": last.need_kwh}
        return state.totals, trace, (final, last.totals)

    return jax.jit(run)


def rollout(env: Any, params: Any, act: Act, key: jax.Array, hours: int | None = None) -> dict[str, Any]:
    """Run one episode of ``hours`` steps (default: the params' episode length) under ``act``.

    Returns numpy arrays, one row per step: ``flows`` (the hour's energy flows, kWh), ``vehicles``
    (arrival/departure counts), ``reward``, ``action``, and the state *before* each step's action
    (``t``, ``energy_kwh``, ``occupied``, ``need_kwh``, ``hours_left``); plus ``initial_totals``
    (the episode totals right after reset: the first hour's arrivals), ``final`` (battery energy
    and per-socket need after the last step) and ``episode`` (the environment's own running
    totals after the last step, float32).

    The compiled program is cached per (env, act, hours): reuse the same ``act`` object to avoid
    recompiling; every :class:`Schedule` of a given length shares one program.
    """
    if hours is None:
        hours = int(params.max_steps_in_episode)
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
        raise ValueError(f"hours: expected an integer >= 1, got {hours!r}")
    # the episode is exactly `hours` long: no truncation inside the rollout
    params = params.replace(max_steps_in_episode=jnp.asarray(hours, jnp.int32))
    if isinstance(act, Schedule):
        table = jnp.asarray(act.actions, jnp.float32)
        if table.ndim != 2 or table.shape[0] < hours:
            raise ValueError(f"Schedule.actions: expected shape (>= {hours}, n_actions), got {table.shape}")
        run = _compiled_rollout(env, None, hours)
        initial_totals, trace, (final, episode) = run(params, key, table[:hours])
    else:
        run = _compiled_rollout(env, act, hours)
        initial_totals, trace, (final, episode) = run(params, key, None)
    out = jax.tree.map(np.asarray, trace)
    out["initial_totals"] = {k: float(v) for k, v in initial_totals.items()}
    out["final"] = jax.tree.map(np.asarray, final)
    out["episode"] = {k: float(v) for k, v in episode.items()}
    return out


def kpis(trace: Mapping[str, Any], scenario: Any) -> dict[str, float]:
    """The KPIs of an episode from a :func:`rollout` trace (sums in float64).

    Definitions: self-sufficiency ``1 - grid import / (mall + EV)``; PV self-consumption
    ``PV used / PV generated``; BESS throughput ``charge + discharge`` (AC side) and equivalent full
    cycles ``throughput / (2 * capacity_kwh)``; EV demand is the energy the admitted vehicles asked
    for on arrival, so ``delivered + unmet + still plugged at the end = demand``; a vehicle is
    served when it leaves wanting at most ``served_tol_kwh``. Vehicles counted are those arriving
    in the episode's hours (the reset's draw and every step's draw but the last, which is for the
    hour after the episode); the environment's own totals also count that last draw.
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
    prev_occ = np.vstack([np.zeros((1, occ.shape[1]), bool), occ[:-1]])
    prev_left = np.vstack([np.zeros((1, occ.shape[1]), left.dtype), left[:-1]])
    new = occ & (~prev_occ | (prev_left == 1))
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


def evaluate(env: Any, params: Any, act: Act, key: jax.Array, hours: int | None = None) -> dict[str, float]:
    """The KPIs of one episode (the full year by default) of ``act`` from ``key``."""
    trace = rollout(env, params, act, key, hours)
    out = kpis(trace, env.scenario)
    out["scenario"] = env.scenario.name
    return out


def evaluate_policy(
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
    from oe3jax.env import make_env

    env, params = make_env(scenario if scenario is not None else policy.scenario)
    key = jax.random.key(seed) if key is None else key
    return evaluate(env, params, lambda obs, state, p: policy(obs), key, hours)


# ----------------------------------------------------------------------------- tables
_TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    # (kpi key, label, format)
    ("grid_import_kwh", "grid import (MWh)", "mwh"),
    ("co2_kg", "CO2 (t)", "t"),
    ("cost", "cost", ",.0f"),
    ("pv_kwh", "PV generated (MWh)", "mwh"),
    ("pv_used_kwh", "PV self-consumed (MWh)", "mwh"),
    ("pv_curtailed_kwh", "PV curtailed (MWh)", "mwh"),
    ("self_sufficiency_frac", "self-sufficiency", "pct"),
    ("ev_delivered_kwh", "EV delivered (MWh)", "mwh"),
    ("ev_unmet_kwh", "EV unmet (MWh)", "mwh"),
    ("vehicles_arrived", "vehicles arrived", ",.0f"),
    ("vehicles_served", "vehicles fully served", ",.0f"),
    ("vehicles_rejected", "vehicles rejected", ",.0f"),
    ("peak_import_kw", "peak import (kW)", ",.0f"),
    ("peak_import_evening_kw", "peak import 18-22 h (kW)", ",.0f"),
    ("bess_throughput_kwh", "BESS throughput (MWh)", "mwh"),
    ("bess_equivalent_full_cycles", "BESS equivalent full cycles", ".1f"),
    ("return", "total reward", ",.1f"),
)


def _fmt(value: Any, how: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if how == "mwh":
        return f"{value / 1000.0:,.1f}"
    if how == "t":
        return f"{value / 1000.0:,.1f}"
    if how == "pct":
        return f"{100.0 * value:.1f} %"
    return format(value, how)


def compare(results: Mapping[str, Mapping[str, Any]], rows: Sequence[tuple[str, str, str]] = _TABLE_ROWS) -> str:
    """A markdown table of several policies' KPIs side by side (one column per policy)."""
    names = list(results)
    lines = ["| KPI | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label, how in rows:
        cells = [_fmt(results[n].get(key), how) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_with_baselines(
    policies: Any,
    scenario: Any = None,
    *,
    seed: int = 0,
    hours: int | None = None,
    optimal: bool = True,
) -> dict[str, Any]:
    """Trained policies' KPIs beside the baselines', on the same year of arrivals.

    ``policies`` is one ``Policy`` or a mapping ``name -> Policy`` (e.g. one per training seed).
    Returns ``{name: kpis, ..., "uncontrolled": kpis, "rule": kpis, "optimal": kpis, "table": md}``
    (``optimal`` is the perfect-foresight linear program, about 10 s for a year; skip it with
    ``optimal=False``). Every column uses ``jax.random.key(seed)``: the same vehicles arrive.
    """
    from oe3jax import baselines
    from oe3jax.env import make_env

    if not isinstance(policies, Mapping):
        policies = {"policy": policies}
    first = next(iter(policies.values()))
    env, params = make_env(scenario if scenario is not None else first.scenario)
    key = jax.random.key(seed)
    results: dict[str, Any] = {
        name: evaluate(env, params, lambda obs, state, p, pol=pol: pol(obs), key, hours)
        for name, pol in policies.items()
    }
    if optimal:
        # the LP records the vehicles with an uncontrolled run: its trace is that column too
        act, _, unc_trace = baselines.optimal_policy(env, params, key, hours)
        results["uncontrolled"] = {**kpis(unc_trace, env.scenario), "scenario": env.scenario.name}
    else:
        results["uncontrolled"] = evaluate(env, params, baselines.uncontrolled, key, hours)
    results["rule"] = evaluate(env, params, baselines.make_rule_based(env.scenario), key, hours)
    if optimal:
        results["optimal"] = evaluate(env, params, act, key, hours)
    results["table"] = compare({k: v for k, v in results.items() if isinstance(v, Mapping)})
    return results
