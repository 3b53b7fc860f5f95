#!/usr/bin/env python
"""Evaluate a policy over the year and write its KPIs as JSON under results/.

    python scripts/evaluate.py --policy rule                         # iquitos-128, seed 0, full year
    python scripts/evaluate.py --policy optimal --scenario iquitos-38 --seed 1
    python scripts/evaluate.py --policy uncontrolled rule optimal --scenario iquitos-128 iquitos-38 \\
        --markdown results/baselines.md                              # every pair, plus a table
    python scripts/evaluate.py results/runs/ppo-iquitos-128          # a trained run's policy

Baselines: ``uncontrolled`` (vehicles at full power, battery idle), ``rule`` (battery stores PV
surplus, discharges 18:00-22:59), ``optimal`` (perfect-foresight linear program, replayed through
the environment; its JSON also holds the LP's own totals, solve time and the replay gap). Every
policy evaluated with the same seed sees the same vehicles. Output:
``results/eval_<scenario>_<policy>_seed<N>.json``.

Bad input (a missing run directory, an output path that is a file or under one, a policy trained
on a scenario of other sizes, an out-of-range seed) exits 2 with one ``error:`` line; a damaged
checkpoint exits 1, as in train.py.
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
(2 x capacity). Peak import 18-22 h covers 18:00-21:59.

"""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", default=None,
                    help="a run or checkpoint directory of a trained policy (instead of --policy)")
    ap.add_argument("--policy", nargs="+", default=None, metavar="NAME",
                    help=f"baseline(s) to evaluate: {', '.join(BASELINES)}")
    ap.add_argument("--scenario", nargs="+", default=None, metavar="NAME",
                    help="scenario preset(s); default iquitos-128 (or the run's scenario)")
    ap.add_argument("--seed", type=int, default=0,
                    help=f"seed of the vehicle arrivals, 0 to {SEED_MAX} (default 0)")
    ap.add_argument("--hours", type=int, default=None, help="episode length in hours (default 8760)")
    ap.add_argument("--out", default="results", help="output directory for the JSON (default results/)")
    ap.add_argument("--markdown", default=None, metavar="FILE",
                    help="also write a markdown table comparing the evaluated policies")
    return ap.parse_args(argv)


def _check_args(args: argparse.Namespace) -> None:
    """Raise a one-line ConfigError for values argparse cannot check and for unusable paths."""
    from oe3jax.simulation.env import ENV_SPEC
    from oe3jax.training.resources import check_writable_dir, check_writable_file

    if args.run_dir is None and not args.policy:
        raise ConfigError("give --policy NAME (one of " + ", ".join(BASELINES) + ") or a run directory")
    for name in args.policy or ():
        if name not in BASELINES:
            raise ConfigError(f"--policy: unknown policy {name!r}; accepted: {', '.join(BASELINES)}")
    max_hours = int(ENV_SPEC["episode_hours"].high)  # the longest episode the environment runs
    if args.hours is not None and not 1 <= args.hours <= max_hours:
        raise ConfigError(f"--hours: expected an integer in [1, {max_hours}], got {args.hours}")
    if not 0 <= args.seed <= SEED_MAX:
        raise ConfigError(f"--seed: expected an integer in [0, {SEED_MAX}] (a uint32 seed), got {args.seed}")
    if args.run_dir is not None and not Path(args.run_dir).exists():
        raise ConfigError(f"run_dir: {args.run_dir} does not exist (expected a run or checkpoint directory)")
    check_writable_dir(args.out, "--out")
    if args.markdown:
        check_writable_file(args.markdown, "--markdown")


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


def _evaluate_run(run_dir: str, scenario: str | None, seed: int, hours: int | None) -> dict[str, Any]:
    import jax

    from oe3jax import load_policy
    from oe3jax.evaluation.kpis import policy_kpis

    policy = load_policy(run_dir)
    if scenario is not None and scenario != policy.scenario:
        _check_same_sizes(policy, scenario, run_dir)
    tic = time.perf_counter()
    out = policy_kpis(policy, scenario, key=jax.random.key(seed), hours=hours)
    out.update(policy=f"{policy.algo}", run_dir=str(run_dir), checkpoint_step=policy.step, seed=seed,
               wall_seconds=time.perf_counter() - tic)
    return out


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

    import jax

    from oe3jax.evaluation.compare import compare
    from oe3jax.training.checkpoint import CheckpointError

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    jobs: list[tuple[str, str | None]] = []
    if args.run_dir is not None:
        jobs += [("run", s) for s in (args.scenario or [None])]
    jobs += [(p, s) for s in (args.scenario or ["iquitos-128"]) for p in (args.policy or [])]
    for policy, scenario in jobs:
        try:
            if policy == "run":
                kpis = _evaluate_run(args.run_dir, scenario, args.seed, args.hours)
            else:
                kpis = _evaluate_baseline(policy, scenario, args.seed, args.hours)
        except ValueError as exc:  # bad scenario name, bad profile, a policy of other sizes, ...
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except CheckpointError as exc:  # a damaged checkpoint
            print(f"error: {exc}", file=sys.stderr)
            return 1
        kpis["versions"] = {"jax": jax.__version__, "python": platform.python_version()}
        _print(kpis)
        path = out_dir / f"eval_{kpis['scenario']}_{kpis['policy']}_seed{args.seed}.json"
        path.write_text(json.dumps(kpis, indent=2, sort_keys=True) + "\n")
        print(f"  -> {path}")
        tables.setdefault(kpis["scenario"], {})[kpis["policy"]] = kpis
    if len(jobs) > 1 or args.markdown:
        text = []
        for scenario, results in tables.items():
            hours = next(iter(results.values()))["hours"]
            text.append(f"### {scenario}: {hours} hours, seed {args.seed}\n\n{compare(results)}\n")
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
            Path(args.markdown).write_text(_MARKDOWN_HEADER.format(command=command) + "\n".join(text))
            print(f"-> {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
