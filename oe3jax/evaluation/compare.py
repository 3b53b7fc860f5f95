"""Policies side by side: KPI tables, trained policies beside the baselines on the same arrivals, and
statistics over many evaluation conditions.

- :func:`compare` / :func:`evaluate_with_baselines`: one episode, every column on the same key.
- :func:`evaluate_conditions`: every training seed of every agent and every baseline of
  :data:`BASELINES` over ``weather years x arrival seeds``; :func:`statistics_report` turns the
  per-condition values into means, 95 % intervals and shares of the optimum's gain
  (:mod:`oe3jax.evaluation.statistics`), :func:`statistics_markdown` into tables.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from oe3jax.control.registry import CONTROLLERS, make_controller
from oe3jax.evaluation import statistics
from oe3jax.evaluation.kpis import batch_kpis, episode_kpis
from oe3jax.simulation.env import EVENING_PEAK_LABEL, make_env
from oe3jax.simulation.profiles import HOURS_PER_YEAR


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
    ("monthly_peaks_sum_kw", "sum of monthly peak imports (kW)", ",.0f"),
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
    Returns ``{name: kpis, ..., "uncontrolled", "rule", "greedy", "table": md}`` and, with
    ``optimal``, the perfect-foresight optima of what the reward bills: ``optimum_grid`` (import,
    hence CO2; an LP of about 10 s a year) and, when the reward has a demand charge,
    ``optimum_monthly_peaks``. Every column uses ``jax.random.key(seed)``: the same vehicles arrive.
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
    # the year unless told otherwise, not the length of the policy's training episodes
    steps = HOURS_PER_YEAR if hours is None else int(hours)
    results: dict[str, Any] = {
        name: episode_kpis(env, params, lambda obs, state, p, pol=pol: pol(obs), key, steps)
        for name, pol in policies.items()
    }
    names = ["uncontrolled", "rule", "greedy"]
    if optimal:
        names.append("optimum_grid")
        if env.scenario.reward_weights.get("demand", 0.0) > 0:
            names.append("optimum_monthly_peaks")
    for name in names:
        results[name] = episode_kpis(env, params, make_controller(name, env, params, key, steps), key, steps)
    results["table"] = compare({k: v for k, v in results.items() if isinstance(v, Mapping)})
    return results


# ----------------------------------------------------------------------------- statistics over conditions
@dataclasses.dataclass(frozen=True)
class Baseline:
    """A non-learned controller evaluated beside the agents, on the same conditions.

    ``make(env, params, key, hours) -> act`` builds the controller of one condition (the rules
    ignore ``key`` and ``hours``; a perfect-foresight plan needs them). ``per_condition``: built and
    run condition by condition (a plan of that episode) instead of in one vmapped batch.
    ``oracle``: it sees the future, so it bounds what is achievable and is never the baseline an
    agent is judged against. ``optimises``: the KPIs it minimises exactly, whose optimum it is
    for the shares. ``costly``: a solver per condition, skipped when no optimum is wanted.
    """

    name: str
    describe: str
    make: Callable[[Any, Any, jax.Array, int], Any]
    per_condition: bool = False
    oracle: bool = False
    optimises: tuple[str, ...] = ()
    costly: bool = False


def registered(name: str, **fields: Any) -> Baseline:
    """The controller ``name`` of :data:`oe3jax.control.registry.CONTROLLERS` as a :class:`Baseline`."""
    def make(env: Any, params: Any, key: jax.Array, hours: int) -> Any:
        return make_controller(name, env, params, key, hours)

    return Baseline(name, CONTROLLERS[name], make, **fields)


def _optimum(name: str, *kpis: str) -> Baseline:
    return registered(name, per_condition=True, oracle=True, optimises=kpis, costly=True)


#: The baselines every statistics evaluation runs, in table order: one line per controller. The
#: optima are the perfect-foresight schedules of each condition's episode (a solver run each,
#: about 6-10 s for a year), each the optimum of the KPIs it lists.
BASELINES: tuple[Baseline, ...] = (
    registered("uncontrolled"),
    registered("rule"),
    registered("greedy"),
    registered("ratchet"),
    _optimum("optimum_grid", "grid_import_kwh", "co2_kg"),
    _optimum("optimum_cost", "cost"),
    _optimum("optimum_monthly_peaks", "monthly_peaks_sum_kw"),
)

#: KPIs where lower is better, with shares of the optimum's gain and the strongest baseline named.
SHARE_KPIS: tuple[str, ...] = ("co2_kg", "cost", "monthly_peaks_sum_kw", "peak_import_kw")
#: KPIs reported beside them (mean and interval only): what an agent might trade for its gain.
CONTEXT_KPIS: tuple[str, ...] = (
    "grid_import_kwh", "ev_unmet_kwh", "ev_delivered_kwh", "vehicles_served_frac", "vehicles_arrived",
    "self_sufficiency_frac", "peak_import_evening_kw", "bess_equivalent_full_cycles", "return",
)
_LABELS: dict[str, tuple[str, str]] = {
    **{key: (label, how) for key, label, how in _TABLE_ROWS},
    "vehicles_served_frac": ("vehicles fully served", "pct"),
}


@dataclasses.dataclass
class ConditionResults:
    """Every policy's KPIs on every condition: ``values[name][kpi]`` is ``runs x conditions``.

    ``conditions[c]`` is ``{"year": name or None, "arrival_seed": int}`` (years outer, seeds inner);
    ``kinds[name]`` is ``"agent"`` or ``"baseline"``; ``seconds[name]`` the wall time it took.
    """

    scenario: str
    hours: int
    conditions: list[dict[str, Any]]
    values: dict[str, dict[str, np.ndarray]]
    kinds: dict[str, str]
    seconds: dict[str, float]
    baselines: dict[str, Baseline]
    optimises: dict[str, tuple[str, ...]]


def evaluate_conditions(
    agents: Mapping[str, Sequence[Any]],
    make_year_env: Callable[[str | None], tuple[Any, Any]],
    arrival_seeds: Sequence[int],
    years: Sequence[str | None] = (None,),
    hours: int | None = None,
    *,
    optimal: bool = True,
    baseline_list: Sequence[Baseline] = BASELINES,
    progress: Callable[[str], None] | None = None,
) -> ConditionResults:
    """Every agent's policies and every baseline over the conditions ``years x arrival_seeds``.

    ``agents`` maps a name to its trained policies (one :class:`~oe3jax.learning.policy.Policy`
    per training seed, all of one run: same network, so their parameters stack). ``make_year_env(year)``
    builds the environment of one weather year (``None``: the scenario's own profile); every year's
    environment must have the same shapes. Condition ``(year, seed)`` runs from hour 0 for ``hours``
    (default the year) with the arrivals of ``jax.random.key(seed)``: every policy sees the same
    vehicles. Agents run all their seeds and conditions in one jitted, vmapped program; the rules
    one program each; the per-condition baselines (the LP) one condition at a time. ``optimal=False``
    skips the costly baselines.
    """
    say = progress or (lambda text: None)
    seeds = [int(s) for s in arrival_seeds]
    if not seeds:
        raise ValueError("arrival_seeds: expected at least one seed")
    envs = [make_year_env(year) for year in years]
    env, params0 = envs[0]
    hours = int(params0.max_steps_in_episode) if hours is None else int(hours)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[p for _, p in envs])
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    conditions = [{"year": year, "arrival_seed": s} for year in years for s in seeds]
    n_cond = len(conditions)

    def flat(table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # runs x years x seeds -> runs x conditions
        return {k: np.asarray(v).reshape(v.shape[0], n_cond) for k, v in table.items()}

    values: dict[str, dict[str, np.ndarray]] = {}
    kinds: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, policies in agents.items():
        if not policies:
            raise ValueError(f"agents[{name!r}]: expected at least one policy")
        apply = policies[0].apply
        pp = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *[p.params for p in policies])
        tic = time.perf_counter()
        values[name] = flat(batch_kpis(env, stacked, lambda p, obs, state, ep, f=apply: f(p, obs), keys, hours, pp))
        seconds[name] = time.perf_counter() - tic
        kinds[name] = "agent"
        say(f"{name}: {len(policies)} seeds x {n_cond} conditions in {seconds[name]:.1f} s")
    chosen = [b for b in baseline_list if optimal or not b.costly]
    batched = [b for b in chosen if not b.per_condition]
    if batched:  # every rule in one program: the controller's index is the "run" axis
        acts = tuple(b.make(env, params0, keys[0], hours) for b in batched)

        def switch(index: jax.Array, obs: jax.Array, state: Any, ep: Any) -> jax.Array:
            return jax.lax.switch(index, acts, obs, state, ep)

        tic = time.perf_counter()
        table = flat(batch_kpis(env, stacked, switch, keys, hours, jnp.arange(len(acts))))
        took = time.perf_counter() - tic
        for i, b in enumerate(batched):
            values[b.name] = {k: v[i : i + 1] for k, v in table.items()}
            seconds[b.name] = took / len(batched)
        say(f"{', '.join(b.name for b in batched)}: {n_cond} conditions in {took:.1f} s")
    for b in chosen:
        if not b.per_condition:
            continue
        tic = time.perf_counter()
        rows: list[dict[str, float]] = []
        for (env_y, params_y) in envs:
            for s in seeds:
                key = jax.random.key(s)
                rows.append(episode_kpis(env_y, params_y, b.make(env_y, params_y, key, hours), key, hours))
        values[b.name] = {k: np.array([[r[k] for r in rows]], np.float64)
                          for k, v in rows[0].items() if isinstance(v, (int, float))}
        seconds[b.name] = time.perf_counter() - tic
        say(f"{b.name}: {n_cond} conditions in {seconds[b.name]:.1f} s")
    kinds.update({b.name: "baseline" for b in chosen})
    values = {**{n: values[n] for n in agents}, **{b.name: values[b.name] for b in chosen}}
    return ConditionResults(
        scenario=env.scenario.name, hours=hours, conditions=conditions, values=values, kinds=kinds,
        seconds=seconds, baselines={b.name: b for b in chosen},
        optimises={b.name: tuple(b.optimises) for b in chosen},
    )


def statistics_report(
    results: ConditionResults,
    names: Sequence[str] | None = None,
    *,
    reps: int = statistics.BOOTSTRAP_REPS,
    seed: int = statistics.BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Mean and 95 % interval of every KPI per policy, and each policy's shares, as a JSON-ready dict.

    ``names`` restricts the agents reported (default all; the baselines are always reported).
    Per KPI of :data:`SHARE_KPIS` it names the strongest baseline (the lowest mean among the
    baselines that do not see the future) and the baseline that is its optimum (if any ran), and
    gives each policy's ``share_of_gain`` (``(uncontrolled - x) / (uncontrolled - optimum)``),
    ``gap_closed`` from the rule and from the strongest baseline (``(b - x) / (b - optimum)``) and
    its ``difference`` to the strongest baseline (``x - strongest``, paired by condition).
    """
    agents = [n for n, kind in results.kinds.items() if kind == "agent" and (names is None or n in names)]
    base = [n for n, kind in results.kinds.items() if kind == "baseline"]
    shown = agents + base
    kpis_out: dict[str, Any] = {}
    for kpi in (*SHARE_KPIS, *CONTEXT_KPIS):
        entry: dict[str, Any] = {"policies": {n: statistics.interval(results.values[n][kpi], reps, seed) for n in shown}}
        if kpi in SHARE_KPIS:
            real = {n: float(results.values[n][kpi].mean()) for n in base if not results.baselines[n].oracle}
            best = statistics.strongest(real) if real else None
            optimum = next((n for n in base if kpi in results.optimises[n]), None)
            entry.update(strongest_baseline=best, optimum=optimum)
            refs = {"share_of_gain": "uncontrolled", "gap_closed_rule": "rule", "gap_closed_strongest": best}
            for n in shown:
                x = results.values[n][kpi]
                pol = entry["policies"][n]
                for field, ref in refs.items():
                    if ref is None or ref not in results.values:
                        pol[field] = {"defined": False, "reason": f"no {ref or 'strongest'} baseline was run"}
                    elif optimum is None:
                        pol[field] = {"defined": False, "reason": "no baseline run here minimises this KPI"}
                    else:
                        pol[field] = statistics.shares(x, results.values[ref][kpi][0],
                                                       results.values[optimum][kpi][0], reps, seed)
                if best is not None:
                    pol["difference"] = statistics.interval(x - results.values[best][kpi][0][None, :], reps, seed)
        kpis_out[kpi] = entry
    return {
        "scenario": results.scenario,
        "hours": results.hours,
        "conditions": results.conditions,
        "agents": agents,
        "baselines": {n: {"describe": results.baselines[n].describe, "oracle": results.baselines[n].oracle,
                          "optimises": list(results.optimises[n])} for n in base},
        "bootstrap": {"method": "percentile bootstrap, stratified: conditions resampled, then runs within each",
                      "confidence": statistics.CONFIDENCE, "reps": reps, "seed": seed,
                      "share_rel_tol": statistics.REL_TOL},
        "kpis": kpis_out,
        "values": {n: {k: np.asarray(v).tolist() for k, v in results.values[n].items()} for n in shown},
        "seconds": {n: results.seconds[n] for n in shown},
    }


def _ci_text(stat: Mapping[str, Any], how: str) -> str:
    lo, hi = stat["ci"]
    return f"{_fmt(stat['mean'], how)} [{_fmt(lo, how)}, {_fmt(hi, how)}]"


def _share_text(share: Mapping[str, Any] | None) -> str:
    if not share:
        return ""
    if not share.get("defined"):
        return "undefined"
    lo, hi = share["ci"]
    text = f"{100 * share['mean']:,.1f} % [{100 * lo:,.1f}, {100 * hi:,.1f}]"
    if share.get("undefined_conditions"):
        text += f" ({share['undefined_conditions']} conditions undefined)"
    return text


def statistics_markdown(report: Mapping[str, Any]) -> str:
    """Markdown tables of a :func:`statistics_report`: one per share KPI, then the context KPIs."""
    lines: list[str] = []
    names = [*report["agents"], *report["baselines"]]
    for kpi in SHARE_KPIS:
        entry = report["kpis"][kpi]
        label, how = _LABELS.get(kpi, (kpi, ",.3f"))
        best, optimum = entry.get("strongest_baseline"), entry.get("optimum")
        lines.append(f"### {label}, lower is better\n")
        lines.append(f"Strongest baseline: **{best or '-'}**; optimum: **{optimum or 'none'}**"
                     + ("" if optimum else " (no baseline run minimises this KPI: shares undefined)") + ".\n")
        rule_column = best != "rule" and "rule" in report["baselines"]
        lines.append(f"| policy | mean [95 % CI] | IQM | n (runs x conditions) | difference to {best or '-'} "
                     f"| share of the optimum's gain | gap closed, {best or '-'} to optimum |"
                     + (" gap closed, rule to optimum |" if rule_column else ""))
        lines.append("|---|" + "---:|" * (7 if rule_column else 6))
        for n in names:
            pol = entry["policies"][n]
            diff = pol.get("difference")
            diff_text = "" if diff is None or n == best else _ci_text(diff, how)
            lines.append(
                f"| {n} | {_ci_text(pol, how)} | {_fmt(pol['iqm'], how)} | {pol['n_runs']} x {pol['n_conditions']} "
                f"| {diff_text} | {_share_text(pol.get('share_of_gain'))} "
                f"| {_share_text(pol.get('gap_closed_strongest'))} |"
                + (f" {_share_text(pol.get('gap_closed_rule'))} |" if rule_column else "")
            )
        lines.append("")
    lines.append("### Other KPIs: mean [95 % CI]\n")
    lines.append("| KPI | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for kpi in CONTEXT_KPIS:
        label, how = _LABELS.get(kpi, (kpi, ",.3f"))
        cells = [_ci_text(report["kpis"][kpi]["policies"][n], how) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
