#!/usr/bin/env python
"""Evaluate trained runs beside the baselines with confidence intervals, or the baselines alone.

    python scripts/evaluate.py results/runs/ppo --eval-seeds 10      # every training seed x 10 arrival seeds
    python scripts/evaluate.py runs/ppo runs/a2c runs/sac --eval-seeds 10 --years syn4 syn5 --out results/agents
    python scripts/evaluate.py --policy rule                         # iquitos-128, seed 0, full year
    python scripts/evaluate.py --policy optimal --scenario iquitos-38 --seed 1
    python scripts/evaluate.py --policy uncontrolled rule optimal --scenario iquitos-128 iquitos-38 \\
        --markdown results/baselines.md                              # every pair, plus a table

Trained runs (``RUN_DIR...``): each training seed's deterministic policy runs over the conditions
``weather years x arrival seeds`` (arrival seeds ``--first-eval-seed`` onwards, 1000 by default:
training draws its arrivals from keys split off ``PRNGKey(seed + run)`` and its final evaluation
uses ``eval.seed``, 0 by default; years from ``--years``, default the scenario's own profile), and
every baseline of ``oe3jax.evaluation.compare.BASELINES`` runs on the same conditions. Per KPI:
mean, 95 % stratified-bootstrap interval over training seeds and conditions, the strongest
baseline, and the share of the optimum's gain (over uncontrolled) and of the gap from the rule
and from the strongest baseline that each agent closes. Written to
``RUN_DIR/evaluation/statistics.json`` (every per-condition value) and ``statistics.md``; with
``--out DIR`` also one comparison of all the runs in ``DIR/statistics.{json,md}``.

Baselines alone (``--policy``): ``uncontrolled`` (vehicles at full power, battery idle), ``rule``
(battery stores PV surplus, discharges 18:00-22:59), ``optimal`` (perfect-foresight linear program,
replayed through the environment; its JSON also holds the LP's own totals, solve time and the
replay gap), over one episode. Every policy evaluated with the same seed sees the same vehicles.
Output: ``results/eval_<scenario>_<policy>_seed<N>.json``.

Bad input (a missing run directory, an output path that is a file or under one, a policy trained
on a scenario of other sizes, an out-of-range seed, fewer than one evaluation seed, an unknown
weather year) exits 2 with one ``error:`` line; a damaged checkpoint exits 1, as in train.py.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oe3jax.schema import SEED_MAX, ConfigError  # noqa: E402

BASELINES = ("uncontrolled", "rule", "optimal")
DEFAULT_EVAL_SEEDS = 10
#: At most this many arrival seeds: every one is a condition (a year-long episode per policy, a
#: linear program for the optimum, and a column of every bootstrap resample), so 1,000 already
#: take hours on a CPU; a mistyped count would otherwise fill the memory and never finish.
MAX_EVAL_SEEDS = 1000
#: First arrival seed of the held-out conditions (training uses keys split off PRNGKey(seed + run)
#: and evaluates at the end with eval.seed, 0 by default).
FIRST_EVAL_SEED = 1000
HOURS_PER_YEAR = 8760

_MARKDOWN_HEADER = """# Baselines

Made by `{command}`. Every policy sees the same vehicles (same seed).

- **uncontrolled**: every plugged vehicle charges at full socket power; the battery is idle.
- **rule**: vehicles at full power; the battery stores the PV surplus (never grid energy) and
  discharges at full rating 18:00-22:59 (capped by the load PV leaves and the SOC window).
- **optimal**: perfect foresight of PV, mall load and vehicles; a linear program minimising the
  grid import (hence CO2) while every vehicle gets what it gets at full power, replayed through
  the environment. It minimises import, not cost or peak: with a time-of-use tariff its cost can
  exceed the rule's, and its peak import is not minimised.

Self-sufficiency = 1 - import / (mall + EV). Equivalent full cycles = (charge + discharge) /
(2 x capacity). Peak import {evening} is the evening peak.

"""


def markdown_header(command: str) -> str:
    """The head of ``--markdown``: the command, the policies and the KPIs' definitions."""
    from oe3jax.simulation.env import EVENING_PEAK_LABEL

    return _MARKDOWN_HEADER.format(command=command, evening=EVENING_PEAK_LABEL)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="*", default=[], metavar="RUN_DIR",
                    help="run or checkpoint directories of trained policies (instead of --policy)")
    ap.add_argument("--policy", nargs="+", default=None, metavar="NAME",
                    help=f"baseline(s) to evaluate alone: {', '.join(BASELINES)}")
    ap.add_argument("--scenario", nargs="+", default=None, metavar="NAME",
                    help="scenario preset(s); default iquitos-128 (or the runs' scenario)")
    ap.add_argument("--seed", type=int, default=None,
                    help=f"with --policy: seed of the vehicle arrivals, 0 to {SEED_MAX} (default 0)")
    ap.add_argument("--eval-seeds", type=int, default=DEFAULT_EVAL_SEEDS, metavar="N",
                    help=f"with RUN_DIR: arrival seeds per weather year, 1 to {MAX_EVAL_SEEDS:,} (default {DEFAULT_EVAL_SEEDS})")
    ap.add_argument("--first-eval-seed", type=int, default=FIRST_EVAL_SEED, metavar="S",
                    help=f"with RUN_DIR: the arrival seeds are S, S+1, ..., S+N-1 (default {FIRST_EVAL_SEED})")
    ap.add_argument("--years", nargs="+", default=None, metavar="NAME",
                    help="with RUN_DIR: weather years to evaluate on (default: the scenario's own profile, "
                         "or each of its weather years)")
    ap.add_argument("--algo", nargs="+", default=None, metavar="NAME",
                    help="with RUN_DIR: the algorithms of a run to evaluate (default: every one it holds)")
    ap.add_argument("--no-optimal", action="store_true",
                    help="with RUN_DIR: skip the perfect-foresight optimum (a linear program per condition)")
    ap.add_argument("--hours", type=int, default=None, help="episode length in hours (default 8760)")
    ap.add_argument("--out", default=None,
                    help="output directory: the JSON of --policy (default results/); with RUN_DIR, the "
                         "comparison of all the runs (default: none written)")
    ap.add_argument("--markdown", default=None, metavar="FILE",
                    help="with --policy: also write a markdown table comparing the evaluated policies")
    return ap.parse_args(argv)


def _weather_years() -> tuple[str, ...]:
    """The packaged weather years the environment accepts (none when it has only its own profile)."""
    from oe3jax.simulation import profiles

    return tuple(getattr(profiles, "WEATHER_YEARS", ()))


def _check_args(args: argparse.Namespace) -> None:
    """Raise a one-line ConfigError for values argparse cannot check and for unusable paths."""
    from oe3jax.simulation.env import ENV_SPEC
    from oe3jax.training.resources import check_writable_dir, check_writable_file

    if not args.run_dir and not args.policy:
        raise ConfigError("give --policy NAME (one of " + ", ".join(BASELINES) + ") or a run directory")
    for name in args.policy or ():
        if name not in BASELINES:
            raise ConfigError(f"--policy: unknown policy {name!r}; accepted: {', '.join(BASELINES)}")
    max_hours = int(ENV_SPEC["episode_hours"].high)  # the longest episode the environment runs
    if args.hours is not None and not 1 <= args.hours <= max_hours:
        raise ConfigError(f"--hours: expected an integer in [1, {max_hours}], got {args.hours}")
    if args.seed is not None and not 0 <= args.seed <= SEED_MAX:
        raise ConfigError(f"--seed: expected an integer in [0, {SEED_MAX}] (a uint32 seed), got {args.seed}")
    for run_dir in args.run_dir:
        if not Path(run_dir).exists():
            raise ConfigError(f"run_dir: {run_dir} does not exist (expected a run or checkpoint directory)")
    if args.run_dir:
        _check_statistics_args(args)
    else:
        for flag, given in (("--years", args.years), ("--algo", args.algo), ("--no-optimal", args.no_optimal)):
            if given:
                raise ConfigError(f"{flag}: applies to run directories; give RUN_DIR... or leave {flag} out")
        check_writable_dir("results" if args.out is None else args.out, "--out")
    if args.markdown:
        check_writable_file(args.markdown, "--markdown")


def _check_statistics_args(args: argparse.Namespace) -> None:
    """The options of the statistics over run directories."""
    from oe3jax.training.resources import check_writable_dir

    if args.policy:
        raise ConfigError("--policy: evaluates baselines alone; with run directories every baseline is "
                          "evaluated beside the runs (leave --policy out)")
    if args.seed is not None:
        raise ConfigError("--seed: applies to --policy; with run directories the arrival seeds are "
                          "--first-eval-seed S onwards (--eval-seeds N of them)")
    if args.markdown:
        raise ConfigError("--markdown: applies to --policy; with run directories the tables go to "
                          "RUN_DIR/evaluation/statistics.md (and DIR/statistics.md with --out DIR)")
    if args.scenario is not None and len(args.scenario) != 1:
        raise ConfigError(f"--scenario: expected one scenario with run directories, got {len(args.scenario)}")
    if not 1 <= args.eval_seeds <= MAX_EVAL_SEEDS:
        raise ConfigError(f"--eval-seeds: expected an integer in [1, {MAX_EVAL_SEEDS:,}] (each seed is one condition "
                          f"per weather year), got {args.eval_seeds}")
    if not 0 <= args.first_eval_seed <= SEED_MAX - args.eval_seeds + 1:
        raise ConfigError(f"--first-eval-seed: expected an integer in [0, {SEED_MAX - args.eval_seeds + 1}] so "
                          f"that the last of {args.eval_seeds} seeds is a uint32 seed, got {args.first_eval_seed}")
    if args.hours is not None and args.hours > HOURS_PER_YEAR:
        raise ConfigError(f"--hours: expected an integer in [1, {HOURS_PER_YEAR}] with run directories "
                          f"(conditions are episodes from 1 January), got {args.hours}")
    if args.years is not None:
        accepted = _weather_years()
        for i, year in enumerate(args.years):
            if year not in accepted:
                which = ", ".join(accepted) if accepted else "none (only the scenario's own profile: leave --years out)"
                raise ConfigError(f"--years: unknown weather year {year!r}; accepted: {which}")
            if year in args.years[:i]:
                raise ConfigError(f"--years: {year!r} is given twice")
    for run_dir in args.run_dir:
        check_writable_dir(_run_root(Path(run_dir)) / "evaluation", "RUN_DIR")
    if args.out is not None:
        check_writable_dir(args.out, "--out")


def _evaluate_baseline(name: str, scenario: str, seed: int, hours: int | None) -> dict[str, Any]:
    import jax

    from oe3jax.control import baselines
    from oe3jax.simulation.env import make_env
    from oe3jax.evaluation.kpis import episode_kpis

    env, params = make_env(scenario)
    key = jax.random.key(seed)
    extra: dict[str, Any] = {}
    tic = time.perf_counter()
    if name == "uncontrolled":
        act = baselines.uncontrolled
    elif name == "rule":
        act = baselines.make_rule_based(env.scenario)
    else:
        act, opt, _ = baselines.optimal_policy(env, params, key, hours)
        lp = opt.totals()
        lp["n_variables"] = opt.n_variables
        lp["n_constraints"] = opt.n_constraints
        lp["status"] = opt.status
        lp["violations_kwh"] = baselines.check_optimum(opt)
        extra["lp"] = lp
    out = episode_kpis(env, params, act, key, hours)
    if name == "optimal":
        gap = out["grid_import_kwh"] - extra["lp"]["grid_import_kwh"]
        extra["lp"]["replay_gap_kwh"] = gap
        extra["lp"]["replay_gap_frac"] = gap / max(extra["lp"]["grid_import_kwh"], 1e-9)
    out.update(policy=name, seed=seed, wall_seconds=time.perf_counter() - tic, **extra)
    return out


# ----------------------------------------------------------------------------- statistics over run directories
def condition_env(cfg: dict[str, Any], year: str | None, hours: int, scenario: str | None = None) -> tuple[Any, Any]:
    """The environment of one evaluation condition: episodes of ``hours`` from 1 January on ``year``.

    The run's environment as its resolved config builds it (scenario, scenario overrides and env
    section), with the scenario override ``weather_years = (year,)`` (``None``: the scenario's own
    profile); ``scenario`` names another preset of the same sizes to evaluate on instead.
    """
    import copy

    from oe3jax.simulation.env import make_env
    from oe3jax.training.config import default_components, make_run_env

    year_override = {} if year is None else {"weather_years": (year,)}
    if scenario is not None:
        return make_env(scenario, episode_hours=hours, **year_override)
    cfg = copy.deepcopy(dict(cfg))
    cfg["env"] = {**cfg.get("env", {}), "episode_hours": hours, "random_start": False}
    cfg["scenario_overrides"] = {**cfg.get("scenario_overrides", {}), **year_override}
    return make_run_env(cfg, default_components())


def _run_root(path: Path) -> Path:
    """The run directory of a run, algorithm-checkpoint or step directory (where evaluation/ goes)."""
    if path.name.isdigit() and (path / "meta").is_dir():
        path = path.parent
    if path.parent.name == "checkpoints":
        path = path.parent.parent
    return path


def _run_algos(path: Path, wanted: list[str] | None) -> list[str | None]:
    """The algorithms of a run directory to evaluate (``[None]`` for a checkpoint directory)."""
    from oe3jax.training.checkpoint import complete_steps

    ckpts = path / "checkpoints"
    if not ckpts.is_dir():
        return [None]
    names = sorted(d.name for d in ckpts.iterdir() if complete_steps(d))
    if wanted is None:
        return list(names) or [None]  # none: load_policy says what is missing
    chosen = [name for name in names if name in wanted]
    if not chosen:
        raise ConfigError(f"--algo: no checkpoint of {', '.join(wanted)} in {path}; found: {', '.join(names) or 'none'}")
    return chosen


def _load_agents(args: argparse.Namespace) -> tuple[dict[str, list[Any]], dict[str, dict[str, Any]]]:
    """Every training seed's policy of every algorithm of every run directory, by agent name."""
    from oe3jax import load_policy

    agents: dict[str, list[Any]] = {}
    info: dict[str, dict[str, Any]] = {}
    for run_dir in args.run_dir:
        for algo in _run_algos(Path(run_dir), args.algo):
            first = load_policy(run_dir, algo=algo)
            seeds = int(first.config["seeds"])
            policies = [first] + [load_policy(run_dir, algo=algo, step=first.step, seed=k) for k in range(1, seeds)]
            name = first.algo
            if name in agents:
                name = f"{first.algo} ({Path(run_dir).name})"
            while name in agents:
                name += "'"
            agents[name] = policies
            info[name] = {
                "run_dir": str(run_dir), "run_root": str(_run_root(Path(run_dir))), "algo": first.algo,
                "checkpoint_step": first.step, "total_steps": first.config.get("total_steps"),
                "training_seeds": [p.seed for p in policies],
                "scenario": first.scenario, "config": first.config,
            }
    return agents, info


def _check_agents(agents: dict[str, list[Any]], info: dict[str, dict[str, Any]], scenario: str | None) -> None:
    """Runs compared on the same conditions must share their environment; ``--scenario`` its sizes."""
    names = list(agents)
    first = agents[names[0]][0]
    for name in names[1:]:
        other = agents[name][0]
        if other.env.scenario != first.env.scenario:
            raise ConfigError(
                f"RUN_DIR: {info[names[0]]['run_dir']} ({names[0]}) and {info[name]['run_dir']} ({name}) were "
                f"trained on different environments ({first.scenario!r} and {other.scenario!r}, or other scenario "
                "overrides or reward); evaluate them separately"
            )
    if scenario is not None:
        for name in names:
            if scenario != agents[name][0].scenario:
                _check_same_sizes(agents[name][0], scenario, info[name]["run_dir"])


def _statistics(args: argparse.Namespace, argv: list[str] | None) -> int:
    import jax

    from oe3jax.evaluation.compare import evaluate_conditions, statistics_markdown, statistics_report
    from oe3jax.training.checkpoint import CheckpointError, DamagedCheckpoint

    command = "python scripts/evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    hours = args.hours or HOURS_PER_YEAR
    years = list(args.years) if args.years else [None]
    scenario = args.scenario[0] if args.scenario else None
    seeds = list(range(args.first_eval_seed, args.first_eval_seed + args.eval_seeds))
    try:
        agents, info = _load_agents(args)
        _check_agents(agents, info, scenario)
        first = agents[next(iter(agents))][0]
        if args.years is None:  # several weather years of its own: each is a condition (not drawn per key)
            own = tuple(getattr(first.env.scenario, "weather_years", ()) or ())
            years = list(own) if len(own) > 1 else [None]
        envs = {year: condition_env(first.config, year, hours, scenario) for year in years}
    except CheckpointError as exc:  # a damaged checkpoint: name the path of the previous complete one
        print(f"error: {exc.by_path() if isinstance(exc, DamagedCheckpoint) else exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:  # a run without checkpoints, a bad override, other sizes
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env0 = envs[years[0]][0]
    trained_years = tuple(getattr(agents[next(iter(agents))][0].env.scenario, "weather_years", ()) or ())
    print(f"== {', '.join(agents)} on {env0.scenario.name}: {len(seeds)} arrival seeds x "
          f"{len(years)} weather year(s), {hours} hours, on {jax.devices()[0].platform}")
    results = evaluate_conditions(agents, lambda year: envs[year], seeds, years, hours,
                                  optimal=not args.no_optimal, progress=lambda line: print("  " + line))
    meta = {
        "command": command,
        "scenario": env0.scenario.name,
        "reward": getattr(env0.scenario, "reward", None),
        "hours": hours,
        "arrival_seeds": seeds,
        "years": years,
        "training_years": list(trained_years),
        "optimal": not args.no_optimal,
        "device": str(jax.devices()[0]),
        "versions": {"jax": jax.__version__, "python": platform.python_version()},
    }
    groups: dict[str, list[str]] = {}
    for name, agent in info.items():
        groups.setdefault(agent["run_root"], []).append(name)
    targets = [(Path(root) / "evaluation", names) for root, names in groups.items()]
    if args.out is not None:
        targets.append((Path(args.out), list(agents)))
    text = ""
    for directory, names in targets:
        report = {**meta, "agents_info": {n: {k: v for k, v in info[n].items() if k != "config"} for n in names},
                  **statistics_report(results, names)}
        text = _statistics_header(report) + "\n" + statistics_markdown(report)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "statistics.json").write_text(json.dumps(report, indent=1) + "\n")
        (directory / "statistics.md").write_text(text)
        print(f"  -> {directory / 'statistics.json'}, {directory / 'statistics.md'}")
    print("\n" + text)
    return 0


def _statistics_header(report: dict[str, Any]) -> str:
    """What every figure of a statistics report stands on: command, seeds, years, baselines."""
    seeds = report["arrival_seeds"]
    years = report["years"]
    year_text = ", ".join(y for y in years if y) if years != [None] else "the scenario's own profile"
    trained = report.get("training_years") or []
    if trained and years != [None]:
        seen = [y for y in years if y in trained]
        year_text += (f" (also training years: {', '.join(seen)})" if seen
                      else f" (held out: training used {', '.join(trained)})")
    lines = [
        "# Agents beside the baselines\n",
        f"Made by `{report['command']}`.\n",
        f"- **scenario**: {report['scenario']} (reward {report['reward']}), {report['hours']:,} hours from 1 January",
        f"- **conditions**: {len(seeds)} arrival seeds ({seeds[0]}-{seeds[-1]}) x {len(years)} weather "
        f"year(s): {year_text}; every policy sees the same vehicles in a condition",
    ]
    for name, agent in report["agents_info"].items():
        seeds_text = ", ".join(str(s) for s in agent["training_seeds"])
        secs = report["seconds"].get(name)
        lines.append(f"- **{name}**: `{agent['run_dir']}`, checkpoint step {agent['checkpoint_step']:,}, "
                     f"training seeds {seeds_text}; deterministic policy"
                     + (f" ({secs:.1f} s for all its seeds and conditions)" if secs is not None else ""))
    for name, base in report["baselines"].items():
        lines.append(f"- **{name}** (baseline{', perfect foresight' if base['oracle'] else ''}): {base['describe']}")
    boot = report["bootstrap"]
    lines += [
        f"- **intervals**: {100 * boot['confidence']:.0f} % {boot['method']} ({boot['reps']:,} replicates, "
        f"seed {boot['seed']}): over training seeds and conditions for an agent, over conditions for a baseline",
        "- **shares** (lower is better): share of the optimum's gain = (uncontrolled - x) / (uncontrolled - "
        "optimum); gap closed = (b - x) / (b - optimum) from baseline b; per condition, then averaged; "
        f"undefined where |b - optimum| <= {boot['share_rel_tol']:g} |b|. An agent is judged against the "
        "strongest baseline (lowest mean, perfect foresight excluded); difference = agent - it, paired by condition",
        f"- device: {report['device']}; jax {report['versions']['jax']}",
        "",
    ]
    return "\n".join(lines)


def _check_same_sizes(policy: Any, scenario: str, run_dir: str) -> None:
    """A policy acts on the observation and action sizes of its training scenario only."""
    import numpy as np

    from oe3jax.simulation.env import make_env

    env, params = make_env(scenario)

    def sizes(e: Any, p: Any) -> tuple[int, int]:
        return (int(np.prod(e.observation_space(p).shape)), int(np.prod(e.action_space(p).shape)))

    mine, theirs = sizes(policy.env, policy.env_params), sizes(env, params)
    if mine != theirs:
        raise ConfigError(
            f"--scenario: the policy in {run_dir} was trained on {policy.scenario!r} ({mine[0]} observations, "
            f"{mine[1]} actions) and cannot act on {scenario!r} ({theirs[0]} observations, {theirs[1]} actions); "
            f"evaluate it on {policy.scenario!r} or a scenario of the same size"
        )


def _print(kpis: dict[str, Any]) -> None:
    print(f"== {kpis['policy']} on {kpis['scenario']}, seed {kpis['seed']}, {kpis['hours']} hours")
    for key, value in kpis.items():
        if key in ("policy", "scenario", "seed"):
            continue
        if isinstance(value, float):
            print(f"  {key:32s} {value:,.3f}")
        elif not isinstance(value, dict):
            print(f"  {key:32s} {value}")
    if "lp" in kpis:
        lp = kpis["lp"]
        print(f"  LP: import {lp['grid_import_kwh']:,.1f} kWh, solved in {lp['solve_seconds']:.1f} s "
              f"({lp['n_variables']:,} variables), replay gap {lp['replay_gap_kwh']:.4f} kWh")


def main(argv: list[str] | None = None) -> int:
    """Exit 0, or 2 with one ``error:`` line for bad input, 1 for a damaged checkpoint."""
    args = _parse(argv)
    try:
        _check_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.run_dir:
        return _statistics(args, argv)
    return _baselines_alone(args, argv)


def _baselines_alone(args: argparse.Namespace, argv: list[str] | None) -> int:
    import jax

    from oe3jax.evaluation.compare import compare

    seed = 0 if args.seed is None else args.seed
    out_dir = Path("results" if args.out is None else args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    jobs = [(p, s) for s in (args.scenario or ["iquitos-128"]) for p in args.policy]
    for policy, scenario in jobs:
        try:
            kpis = _evaluate_baseline(policy, scenario, seed, args.hours)
        except ValueError as exc:  # bad scenario name, bad profile, ...
            print(f"error: {exc}", file=sys.stderr)
            return 2
        kpis["versions"] = {"jax": jax.__version__, "python": platform.python_version()}
        _print(kpis)
        path = out_dir / f"eval_{kpis['scenario']}_{kpis['policy']}_seed{seed}.json"
        path.write_text(json.dumps(kpis, indent=2, sort_keys=True) + "\n")
        print(f"  -> {path}")
        tables.setdefault(kpis["scenario"], {})[kpis["policy"]] = kpis
    if len(jobs) > 1 or args.markdown:
        text = []
        for scenario, results in tables.items():
            hours = next(iter(results.values()))["hours"]
            text.append(f"### {scenario}: {hours} hours, seed {seed}\n\n{compare(results)}\n")
            for name, res in results.items():
                if "lp" in res:
                    lp = res["lp"]
                    text.append(
                        f"{name}: linear program of {lp['n_variables']:,} variables and "
                        f"{lp['n_constraints']:,} constraints solved by HiGHS in {lp['solve_seconds']:.1f} s; "
                        f"replayed through the environment its grid import differs by "
                        f"{lp['replay_gap_kwh']:.3f} kWh ({lp['replay_gap_frac']:.1e} relative).\n"
                    )
        print("\n" + "\n".join(text))
        if args.markdown:
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
            command = "python scripts/evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv)
            Path(args.markdown).write_text(markdown_header(command) + "\n".join(text))
            print(f"-> {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
