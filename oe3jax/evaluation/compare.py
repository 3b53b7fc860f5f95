"""Policies side by side: KPI tables, and trained policies beside the baselines on the same arrivals."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from oe3jax.control import baselines
from oe3jax.evaluation.kpis import episode_kpis, kpis
from oe3jax.simulation.env import EVENING_PEAK_LABEL, make_env


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
    ("peak_import_evening_kw", f"peak import {EVENING_PEAK_LABEL} (kW)", ",.0f"),
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
    Every column runs in the environment the first policy was trained for (its scenario, overrides
    and reward weights), over the year from 1 January whatever the training episodes were; pass
    ``scenario`` (a name or Scenario) to judge the policies on another scenario of the same size.
    Returns ``{name: kpis, ..., "uncontrolled": kpis, "rule": kpis, "optimal": kpis, "table": md}``
    (``optimal`` is the perfect-foresight linear program, about 10 s for a year; skip it with
    ``optimal=False``). Every column uses ``jax.random.key(seed)``: the same vehicles arrive.
    """
    if not isinstance(policies, Mapping):
        policies = {"policy": policies}
    first = next(iter(policies.values()))
    if scenario is None and getattr(first, "env", None) is not None:
        env = first.env
        params = first.env_params.replace(random_start=jnp.asarray(False), start_hour=jnp.asarray(0, jnp.int32))
    else:
        env, params = make_env(scenario if scenario is not None else first.scenario)
    key = jax.random.key(seed)
    results: dict[str, Any] = {
        name: episode_kpis(env, params, lambda obs, state, p, pol=pol: pol(obs), key, hours)
        for name, pol in policies.items()
    }
    if optimal:
        # the LP records the vehicles with an uncontrolled run: its trace is that column too
        act, _, unc_trace = baselines.optimal_policy(env, params, key, hours)
        results["uncontrolled"] = {**kpis(unc_trace, env.scenario), "scenario": env.scenario.name}
    else:
        results["uncontrolled"] = episode_kpis(env, params, baselines.uncontrolled, key, hours)
    results["rule"] = episode_kpis(env, params, baselines.make_rule_based(env.scenario), key, hours)
    if optimal:
        results["optimal"] = episode_kpis(env, params, act, key, hours)
    results["table"] = compare({k: v for k, v in results.items() if isinstance(v, Mapping)})
    return results
