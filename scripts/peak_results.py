#!/usr/bin/env python
"""Trained agents beside every baseline on held-out weather years, with confidence intervals.

    python scripts/peak_results.py baselines --reward peak --out results/peak_baselines.json
    python scripts/peak_results.py report RUN_DIR... --baselines results/peak_baselines.json [MORE.json] \\
        --out results/peak --title "..."

``baselines`` runs every controller of :data:`BASELINES` (the rules, the MPCs and the optima) on
the conditions ``--years x --eval-seeds`` (arrival seeds ``--first-eval-seed`` onwards, 1000 by
default as in ``scripts/evaluate.py``) of iquitos-128 under the reward ``--reward``, and keeps
every per-condition KPI in a JSON file: the MPCs take minutes a condition, so they are run once.
``report`` evaluates every training seed's deterministic policy of each run directory on the
same conditions (one vmapped program per run), adds the cached baselines and writes
``OUT.json`` (every per-condition value, the intervals and shares of
:func:`oe3jax.evaluation.compare.statistics_report`) and ``OUT.md`` (the tables, the bar: sum of
monthly peaks below the rule's at >= 99 % of the uncontrolled EV energy and at most 1 % more CO2
than the rule; and the commands). Baselines and agents must have been run on the same
conditions and reward.

``select RUN_DIR --years syn3 --eval-seeds 1 --first-eval-seed 7`` is early stopping on a
validation condition of the training years: it evaluates every kept checkpoint of every training
seed (train with ``--set checkpoint.max_to_keep=...`` large enough to keep them) by its return
under the run's own reward, and writes ``RUN_DIR/selection.json`` with each seed's checkpoint of
the highest return (the later one on a tie). ``report --selected`` then judges each seed's
selected checkpoint instead of the last (``--selected NAME...``: those agents only; a run
directory may be given twice under two names, once judged at its last checkpoint and once at its
selected ones). The validation years must be training years: a held-out
year there would leak into the held-out result, and is refused.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HOURS = 8760
FIRST_EVAL_SEED = 1000


def _baselines() -> tuple[Any, ...]:
    from oe3jax.evaluation.compare import BASELINES, registered

    extra = (
        registered("mpc", per_condition=True, costly=True),
        registered("mpc_ev", per_condition=True, costly=True),
        registered("optimum_reward", per_condition=True, oracle=True, costly=True),
    )
    return tuple(b for b in BASELINES if b.name != "optimum_cost") + extra


def _year_env(year: str, reward: str, overrides: dict[str, Any] | None = None) -> tuple[Any, Any]:
    from oe3jax.simulation.env import make_env

    return make_env("iquitos-128", episode_hours=HOURS, reward=reward, **{**(overrides or {}),
                                                                         "weather_years": (year,)})


def _eval_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """A run's scenario overrides but its weather years (each evaluation sets its own year)."""
    return {k: v for k, v in config.get("scenario_overrides", {}).items() if k != "weather_years"}


def run_baselines(args: argparse.Namespace, command: str) -> int:
    import jax

    from oe3jax.evaluation.compare import evaluate_conditions

    seeds = list(range(args.first_eval_seed, args.first_eval_seed + args.eval_seeds))
    chosen = [b for b in _baselines() if not args.only or b.name in args.only]
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"values": {}, "seconds": {}}
    for key in ("reward", "years", "arrival_seeds"):
        if key in doc and doc[key] != {"reward": args.reward, "years": args.years, "arrival_seeds": seeds}[key]:
            print(f"error: {out} holds other conditions ({key} = {doc[key]})", file=sys.stderr)
            return 2
    envs = {year: _year_env(year, args.reward) for year in args.years}
    for b in chosen:
        if b.name in doc["values"] and not args.redo:
            print(f"  {b.name}: cached")
            continue
        res = evaluate_conditions({}, lambda year: envs[year], seeds, args.years, HOURS, baseline_list=[b],
                                  progress=lambda line: print("  " + line, flush=True))
        doc["values"][b.name] = {k: v.tolist() for k, v in res.values[b.name].items()}
        doc["seconds"][b.name] = res.seconds[b.name]
        doc["describe"] = {**doc.get("describe", {}), b.name: b.describe}
        doc.update(reward=args.reward, years=args.years, arrival_seeds=seeds, scenario="iquitos-128", hours=HOURS,
                   commands=sorted(set(doc.get("commands", [])) | {command}),
                   device=str(jax.devices()[0]), versions={"jax": jax.__version__,
                                                           "python": platform.python_version()})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc) + "\n")
    return 0


SELECTION = "selection.json"


def _selected_steps(run_dir: str, seeds: int) -> list[int]:
    """Each training seed's checkpoint step chosen by ``select`` (``RUN_DIR/selection.json``)."""
    path = Path(run_dir) / SELECTION
    if not path.exists():
        raise SystemExit(f"error: --selected: {path} does not exist; run `python scripts/peak_results.py select "
                         f"{run_dir} ...` first")
    chosen = json.loads(path.read_text())["selected_steps"]
    if len(chosen) != seeds:
        raise SystemExit(f"error: --selected: {path} chose {len(chosen)} seeds, the run has {seeds}")
    return [int(s) for s in chosen]


def _load_agents(run_dirs: list[str], names: list[str] | None,
                 selected: list[str] | None = None) -> tuple[dict[str, list[Any]], dict[str, dict]]:
    """Each run's policies by name; ``selected``: the names (all when empty) judged at the
    checkpoints ``select`` chose, the others at their last."""
    from oe3jax import load_policy

    agents: dict[str, list[Any]] = {}
    info: dict[str, dict] = {}
    for i, run_dir in enumerate(run_dirs):
        first = load_policy(run_dir)
        seeds = int(first.config["seeds"])
        name = names[i] if names else first.algo
        chosen = selected is not None and (not selected or name in selected)
        steps = _selected_steps(run_dir, seeds) if chosen else [first.step] * seeds
        policies = [load_policy(run_dir, step=steps[k], seed=k) if (k, steps[k]) != (0, first.step) else first
                    for k in range(seeds)]
        agents[name] = policies
        status = Path(run_dir) / "timing.json"
        info[name] = {"run_dir": str(run_dir), "algo": first.algo, "checkpoint_step": first.step,
                      "total_steps": first.config.get("total_steps"), "training_seeds": [p.seed for p in policies],
                      "training_years": list(first.env.scenario.weather_years),
                      "wall_s": json.loads(status.read_text()) if status.exists() else None}
        if chosen:
            info[name]["selected_steps"] = steps
    return agents, info


def run_select(args: argparse.Namespace, command: str) -> int:
    """Every kept checkpoint of every seed on the validation conditions; each seed's best by return."""
    import numpy as np

    from oe3jax import load_policy
    from oe3jax.evaluation.compare import evaluate_conditions
    from oe3jax.evaluation.selection import best_steps
    from oe3jax.training.checkpoint import complete_steps

    last = load_policy(args.run_dir)
    training_years = list(last.env.scenario.weather_years)
    outside = [y for y in args.years if y not in training_years]
    if outside:
        print(f"error: --years: {', '.join(outside)} not among the run's training years "
              f"({', '.join(training_years)}); validation must not touch a held-out year", file=sys.stderr)
        return 2
    steps = complete_steps(Path(args.run_dir) / "checkpoints" / last.algo)
    seeds = int(last.config["seeds"])
    arrival = list(range(args.first_eval_seed, args.first_eval_seed + args.eval_seeds))
    policies = [load_policy(args.run_dir, step=step, seed=k) for step in steps for k in range(seeds)]
    envs = {year: _year_env(year, last.env.scenario.reward, _eval_overrides(last.config)) for year in args.years}
    print(f"== {args.run_dir}: {len(steps)} checkpoints x {seeds} seeds on {len(arrival) * len(args.years)} "
          "conditions", flush=True)
    res = evaluate_conditions({"all": policies}, lambda year: envs[year], arrival, args.years, HOURS,
                              baseline_list=[], progress=lambda line: print("  " + line, flush=True))
    def per_step(kpi: str) -> np.ndarray:  # step x seed, the mean over the conditions
        return np.asarray(res.values["all"][kpi]).mean(axis=1).reshape(len(steps), seeds)

    ret = per_step("return")
    best = best_steps(steps, ret)
    doc = {"command": command, "criterion": "mean return under the run's reward", "years": args.years,
           "arrival_seeds": arrival, "steps": steps, "selected_steps": best,
           **{kpi: per_step(kpi).T.tolist()
              for kpi in ("return", "monthly_peaks_sum_kw", "co2_kg", "ev_delivered_kwh")}}
    (Path(args.run_dir) / SELECTION).write_text(json.dumps(doc, indent=1) + "\n")
    for k in range(seeds):
        print(f"seed {k}: step {best[k]:,} (return {ret[steps.index(best[k]), k]:.3f}; last step "
              f"{steps[-1]:,}: {ret[-1, k]:.3f})")
    return 0


def _merged_baselines(paths: list[str]) -> dict[str, Any] | None:
    """The baseline files' values in one document; None (after a message) if their conditions differ."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    base = {**docs[0], "values": {}, "seconds": {}, "describe": {}, "commands": []}
    for path, doc in zip(paths, docs):
        for key in ("reward", "years", "arrival_seeds", "hours"):
            if doc[key] != base[key]:
                print(f"error: {path} holds other conditions ({key} = {doc[key]}, {paths[0]}: {base[key]})",
                      file=sys.stderr)
                return None
        for key in ("values", "seconds", "describe"):
            base[key].update(doc[key])
        base["commands"] += doc["commands"]
    return base


def run_report(args: argparse.Namespace, command: str) -> int:
    import jax
    import numpy as np

    from oe3jax.evaluation.compare import (ConditionResults, evaluate_conditions, statistics_markdown,
                                           statistics_report)

    base = _merged_baselines(args.baselines)
    if base is None:
        return 2
    years, seeds = base["years"], base["arrival_seeds"]
    unknown = sorted(set(args.selected or ()) - set(args.names or ()))
    if unknown:
        print(f"error: --selected: {', '.join(unknown)} not among --names", file=sys.stderr)
        return 2
    agents, info = _load_agents(args.run_dirs, args.names, args.selected)
    overrides = _eval_overrides(agents[next(iter(agents))][0].config)
    envs = {year: _year_env(year, base["reward"], overrides) for year in years}
    for name, pols in agents.items():
        if pols[0].env.scenario.reward != base["reward"]:
            print(f"error: {name} was trained on reward {pols[0].env.scenario.reward!r}, the baselines on "
                  f"{base['reward']!r}", file=sys.stderr)
            return 2
        print(f"== {name}: {len(pols)} seeds, step {pols[0].step}", flush=True)
    res = evaluate_conditions(agents, lambda year: envs[year], seeds, years, HOURS, baseline_list=[],
                              progress=lambda line: print("  " + line, flush=True))
    order = [b.name for b in _baselines() if b.name in base["values"]]
    all_b = {b.name: b for b in _baselines()}
    values = {**res.values, **{n: {k: np.asarray(v) for k, v in base["values"][n].items()} for n in order}}
    kinds = {**res.kinds, **{n: "baseline" for n in order}}
    merged = ConditionResults(
        scenario=res.scenario, hours=HOURS, conditions=res.conditions, values=values, kinds=kinds,
        seconds={**res.seconds, **base["seconds"]}, baselines={n: all_b[n] for n in order},
        optimises={n: tuple(all_b[n].optimises) for n in order},
    )
    report = statistics_report(merged)
    report.update(command=command, baseline_commands=base["commands"], reward=base["reward"], years=years,
                  arrival_seeds=seeds, agents_info=info, device=str(jax.devices()[0]))
    report["bar"] = _bar(values, list(agents))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = _markdown(report, args.title)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def _bar(values: dict[str, dict[str, Any]], agents: list[str]) -> dict[str, Any]:
    """Per agent, seed and condition: monthly peaks below the rule's, EV share and CO2 against the rule."""
    import numpy as np

    rule, unc = values["rule"], values["uncontrolled"]
    out = {}
    for name in agents:
        v = values[name]
        peaks = np.asarray(v["monthly_peaks_sum_kw"]) < np.asarray(rule["monthly_peaks_sum_kw"])[0]
        ev = np.asarray(v["ev_delivered_kwh"]) / np.asarray(unc["ev_delivered_kwh"])[0]
        co2 = np.asarray(v["co2_kg"]) / np.asarray(rule["co2_kg"])[0] - 1.0
        out[name] = {"peaks_below_rule_frac": float(peaks.mean()), "ev_share_min": float(ev.min()),
                     "ev_share_mean": float(ev.mean()), "co2_vs_rule_max": float(co2.max()),
                     "co2_vs_rule_mean": float(co2.mean()),
                     "met": bool(peaks.all() and ev.min() >= 0.99 and co2.max() <= 0.01)}
    return out


def _markdown(report: dict[str, Any], title: str) -> str:
    from oe3jax.evaluation.compare import statistics_markdown

    seeds, years = report["arrival_seeds"], report["years"]
    lines = [f"# {title}\n",
             f"Agents: `{report['command']}`; baselines: "
             + "; ".join(f"`{c}`" for c in report["baseline_commands"]) + ".\n",
             f"- **conditions**: iquitos-128, reward `{report['reward']}`, {report['hours']:,} hours from 1 January; "
             f"arrival seeds {seeds[0]}-{seeds[-1]} x weather years {', '.join(years)} "
             f"({len(seeds) * len(years)} conditions); every policy sees the same vehicles in a condition"]
    for name, a in report["agents_info"].items():
        lines.append(f"- **{name}**: `{a['run_dir']}`, {a['checkpoint_step']:,} steps per environment "
                     f"(total_steps {a['total_steps']:,}), training seeds "
                     f"{', '.join(map(str, a['training_seeds']))}, trained on {', '.join(a['training_years'])}"
                     + (f"; judged at each seed's checkpoint chosen on a training year (`select`, "
                        f"`{a['run_dir']}/{SELECTION}`): steps {', '.join(f'{s:,}' for s in a['selected_steps'])}"
                        if a.get("selected_steps") else ""))
    lines.append("")
    lines.append("## The bar, per agent (every training seed x condition)\n")
    lines.append("| agent | monthly peaks below the rule's | EV energy / uncontrolled (min, mean) "
                 "| CO2 vs the rule (max, mean) | met |")
    lines.append("|---|---:|---:|---:|:---:|")
    for name, b in report["bar"].items():
        lines.append(f"| {name} | {100 * b['peaks_below_rule_frac']:.0f} % | {100 * b['ev_share_min']:.2f} %, "
                     f"{100 * b['ev_share_mean']:.2f} % | {100 * b['co2_vs_rule_max']:+.2f} %, "
                     f"{100 * b['co2_vs_rule_mean']:+.2f} % | {'yes' if b['met'] else 'no'} |")
    lines.append("")
    lines += _seed_lines(report)
    lines += _gap_lines(report)
    return "\n".join(lines) + "\n" + statistics_markdown(report)


def _seed_lines(report: dict[str, Any]) -> list[str]:
    """Per agent and training seed, over the conditions: the bar's three quantities and the gap closed."""
    import numpy as np

    v = report["values"]
    rule_p, opt_p = (np.asarray(v[n]["monthly_peaks_sum_kw"])[0] for n in ("rule", "optimum_monthly_peaks"))
    rule_c, unc_ev = np.asarray(v["rule"]["co2_kg"])[0], np.asarray(v["uncontrolled"]["ev_delivered_kwh"])[0]
    lines = ["## Per training seed (mean over the conditions; bar: every condition)\n",
             "| agent | seed | sum of monthly peaks (kW) | below the rule's | gap closed, rule to optimum "
             "| EV / uncontrolled (min) | CO2 vs the rule (max) | bar met |",
             "|---|---:|---:|---:|---:|---:|---:|:---:|"]
    for name, info in report["agents_info"].items():
        peaks, co2 = np.asarray(v[name]["monthly_peaks_sum_kw"]), np.asarray(v[name]["co2_kg"])
        ev = np.asarray(v[name]["ev_delivered_kwh"]) / unc_ev
        for i, seed in enumerate(info["training_seeds"]):
            below = peaks[i] < rule_p
            dco2 = co2[i] / rule_c - 1.0
            gap = np.mean((rule_p - peaks[i]) / (rule_p - opt_p))
            met = bool(below.all() and ev[i].min() >= 0.99 and dco2.max() <= 0.01)
            lines.append(f"| {name} | {seed} | {peaks[i].mean():,.0f} | {below.sum()}/{below.size} | {100 * gap:.1f} % "
                         f"| {100 * ev[i].min():.2f} % | {100 * dco2.max():+.2f} % | {'yes' if met else 'no'} |")
    lines.append("")
    return lines


def _gap_lines(report: dict[str, Any]) -> list[str]:
    """Per agent and for the ratchet rule and the MPCs (the baselines without perfect foresight that
    shave peaks): the sum of monthly peaks and the share of the rule-to-optimum gap closed (mean and
    95 % interval over training seeds x conditions)."""
    peaks = report["kpis"]["monthly_peaks_sum_kw"]["policies"]
    names = [*report["agents_info"], *(n for n in ("ratchet", "mpc", "mpc_ev") if n in peaks)]
    lines = ["## Sum of monthly peaks: the rule-to-optimum gap closed\n",
             "| policy | sum of monthly peaks (kW) [95 % CI] | gap closed, rule to optimum [95 % CI] |",
             "|---|---:|---:|"]
    for name in names:
        p, g = peaks[name], peaks[name].get("gap_closed_rule") or {}
        gap = (f"{100 * g['mean']:.1f} % [{100 * g['ci'][0]:.1f}, {100 * g['ci'][1]:.1f}]"
               if g.get("defined") else "undefined")
        lines.append(f"| {name} | {p['mean']:,.0f} [{p['ci'][0]:,.0f}, {p['ci'][1]:,.0f}] | {gap} |")
    best = max(report["agents_info"], key=lambda n: (peaks[n].get("gap_closed_rule") or {}).get("mean", -1e9))
    g = peaks[best].get("gap_closed_rule") or {}
    if g.get("defined"):
        verdict = "meets" if g["mean"] >= 0.5 else "falls short of"
        lines.append(f"\nBest agent: **{best}**, closing {100 * g['mean']:.1f} % of the gap on average: it "
                     f"{verdict} the bar of half the gap.")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("baselines")
    b.add_argument("--reward", default="peak")
    b.add_argument("--years", nargs="+", default=["syn4", "syn5"])
    b.add_argument("--eval-seeds", type=int, default=5)
    b.add_argument("--first-eval-seed", type=int, default=FIRST_EVAL_SEED)
    b.add_argument("--only", nargs="+", default=None, help="these baselines only")
    b.add_argument("--redo", action="store_true", help="recompute cached baselines")
    b.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--names", nargs="+", default=None)
    r.add_argument("--baselines", nargs="+", required=True, help="files written by `baselines` (same conditions)")
    r.add_argument("--out", required=True)
    r.add_argument("--title", default="Agents beside the baselines")
    r.add_argument("--selected", nargs="*", default=None, metavar="NAME",
                   help="judge these agents (of --names; all when none is given) at each seed's checkpoint "
                        "chosen by `select` instead of the last")
    s = sub.add_parser("select")
    s.add_argument("run_dir")
    s.add_argument("--years", nargs="+", required=True, help="validation years, among the run's training years")
    s.add_argument("--eval-seeds", type=int, default=1)
    s.add_argument("--first-eval-seed", type=int, default=7)
    args = ap.parse_args(argv)
    command = "python scripts/peak_results.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    run = {"baselines": run_baselines, "report": run_report, "select": run_select}[args.cmd]
    return run(args, command)


if __name__ == "__main__":
    sys.exit(main())
