#!/usr/bin/env python
"""Every non-learned controller over a year, side by side: results/controllers.md (and .json).

    python scripts/controllers.py                                   # iquitos-128 and iquitos-38, seed 0
    python scripts/controllers.py --scenario iquitos-38 --hours 168 --out /tmp/c.md

Controllers: those of ``oe3jax.control.registry.CONTROLLERS`` (the MPCs on the monthly-peak
objective with ``--horizon`` hours). Every controller sees the same vehicles (same seed); every
optimum is replayed through the environment and checked against its own objective. Metrics: CO2,
energy cost, sum of the monthly peak imports, annual peak, evening peak (18:00-21:59), EV energy,
total reward (the scenario's reward preset, co2_focus by default), solve and wall times.
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

SCENARIOS = ("iquitos-128", "iquitos-38")


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", nargs="+", default=list(SCENARIOS), help="scenario presets")
    ap.add_argument("--seed", type=int, default=0, help="episode seed (the vehicles)")
    ap.add_argument("--hours", type=int, default=None, help="episode length (default the full year)")
    ap.add_argument("--horizon", type=int, default=36, help="MPC horizon in hours")
    ap.add_argument("--controllers", nargs="+", default=None, help="subset of the registry's names")
    ap.add_argument("--out", default="results/controllers.md", help="markdown output")
    ap.add_argument("--json", default=None, help="JSON output (default: --out with .json)")
    args = ap.parse_args(argv)
    from oe3jax.control.registry import CONTROLLERS
    from oe3jax.simulation.scenario import PRESETS

    for name in args.scenario:
        if name not in PRESETS:
            ap.error(f"--scenario: unknown {name!r}; accepted: {', '.join(PRESETS)}")
    for name in args.controllers or ():
        if name not in CONTROLLERS:
            ap.error(f"--controllers: unknown {name!r}; accepted: {', '.join(CONTROLLERS)}")
    if args.hours is not None and args.hours < 1:
        ap.error(f"--hours: expected an integer >= 1, got {args.hours}")
    if args.horizon < 1:
        ap.error(f"--horizon: expected an integer >= 1, got {args.horizon}")
    return args


def run_scenario(scenario: str, seed: int, hours: int | None, horizon: int, names: list[str]) -> dict[str, Any]:
    import jax
    import numpy as np

    from oe3jax.control import optimum as O
    from oe3jax.control.registry import controller_info, make_controller
    from oe3jax.evaluation.kpis import kpis
    from oe3jax.simulation.calendar import monthly_peaks
    from oe3jax.simulation.env import make_env
    from oe3jax.simulation.episode import run_episode

    env, params = make_env(scenario)
    key = jax.random.key(seed)
    out: dict[str, Any] = {}
    for name in names:
        options = {"horizon": horizon} if name.startswith("mpc") else {}
        tic = time.perf_counter()
        act = make_controller(name, env, params, key, hours, **options)
        trace = run_episode(env, params, act, key, hours)
        wall = time.perf_counter() - tic
        k = kpis(trace, env.scenario)
        g = np.asarray(trace["flows"]["grid_import"], np.float64)
        row = {
            "co2_t": k["co2_kg"] / 1000.0,
            "cost": k["cost"],
            "monthly_peaks_kw": float(monthly_peaks(trace["t"], g).sum()),
            "peak_kw": k["peak_import_kw"],
            "evening_peak_kw": k["peak_import_evening_kw"],
            "ev_mwh": k["ev_delivered_kwh"] / 1000.0,
            "ev_unmet_mwh": k["ev_unmet_kwh"] / 1000.0,
            "reward": k["return"],
            "grid_to_bess_mwh": k["grid_to_bess_kwh"] / 1000.0,
            "wall_seconds": wall,
            "info": controller_info(act),
        }
        if name.startswith("optimum_"):
            row["check"] = O.check_plan(env, params, key, act, hours, trace)
        out[name] = row
        print(f"{scenario} {name}: {wall:.1f} s, CO2 {row['co2_t']:.1f} t, monthly peaks {row['monthly_peaks_kw']:.0f} kW, "
              f"reward {row['reward']:.2f}", flush=True)
    return {"scenario": scenario, "seed": seed, "hours": hours or int(params.max_steps_in_episode),
            "reward_preset": env.scenario.reward, "currency": env.scenario.currency, "controllers": out}


def _markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Controllers",
        "",
        f"Made by `{command}` ({platform.processor() or platform.machine()}, {platform.python_version()}).",
        "Every controller sees the same vehicles (same seed); the optima are perfect-foresight",
        "LPs/MILP solved by HiGHS and replayed through the environment (`docs/baselines.md`).",
        "",
        "- **uncontrolled**: vehicles at full power, battery idle. **rule**: PV surplus into the",
        "  battery, discharge 18:00-22:59. **greedy**: PV surplus into the battery, discharge whenever",
        "  there is net load. **ratchet**: PV surplus into the battery; from 09:00 to 22:59 discharge",
        "  what the import would exceed max(month-to-date peak, 60 % of the mall's annual peak),",
        "  at night discharge whatever net load there is.",
        "- **mpc**: the monthly-peak LP over the next hours, re-solved every hour, on the true PV and",
        "  mall profiles, knowing the vehicles once plugged. **mpc_ev**: the same plus an expected EV",
        "  load by hour of day (mean uncontrolled EV load of another episode, key `fold_in(key, 1)`).",
        "- **optimum_X**: perfect foresight of PV, mall and vehicles, best for objective X: `grid`",
        "  import (= CO2), `cost` (grid charging allowed), `monthly_peaks` (sum of the twelve monthly",
        "  peak imports), `evening_peak` (18:00-21:59), `reward` (MILP under the environment's dispatch",
        "  rules). All but `reward` give every vehicle its full-power energy.",
        "",
        "Columns: CO2 (t), energy cost, sum of monthly peak imports (kW), annual peak import (kW),",
        "evening peak import 18:00-21:59 (kW), EV energy delivered (MWh), total reward, grid energy",
        "stored (MWh), solve time (s: the solver's own time; for the MPC the sum over its hourly solves),",
        "wall time (s: making the controller and running the year, compilation included).",
    ]
    for res in results:
        rows = res["controllers"]
        lines += ["", f"## {res['scenario']}: {res['hours']:,} hours, seed {res['seed']}, reward {res['reward_preset']}",
                  "", f"| controller | CO2 (t) | cost ({res['currency']}) | sum of monthly peaks (kW) | peak (kW) | "
                  "evening peak (kW) | EV (MWh) | reward | grid to BESS (MWh) | solve (s) | wall (s) |",
                  "|---|" + "---:|" * 10]
        for name, r in rows.items():
            info = r["info"]
            solve = info.get("solve_seconds")
            lines.append(
                f"| {name} | {r['co2_t']:,.1f} | {r['cost']:,.0f} | {r['monthly_peaks_kw']:,.0f} | {r['peak_kw']:,.0f} | "
                f"{r['evening_peak_kw']:,.0f} | {r['ev_mwh']:,.1f} | {r['reward']:,.2f} | {r['grid_to_bess_mwh']:,.1f} | "
                + (f"{solve:,.1f}" if solve is not None else "-") + f" | {r['wall_seconds']:,.0f} |")
        checks = {n: r["check"] for n, r in rows.items() if "check" in r}
        if checks:
            lines += ["", "Optima replayed through the environment (solver value, replayed value, difference, "
                      "tolerance; dispatch-rule violations in kWh; MIP gap):", ""]
            for n, c in checks.items():
                info = rows[n]["info"]
                worst = max(c["violations_kwh"].values())
                lines.append(
                    f"- {n}: {c['solver']:,.6g} vs {c['replayed']:,.6g} (difference {c['difference']:.2g}, tolerance "
                    f"{c['tolerance']:.2g}), worst violation {worst:.1g} kWh, {info['n_variables']:,} variables, "
                    f"{info['n_integers']:,} integer, gap {info['gap']:.1g}, {info['solve_seconds']:.1f} s: "
                    + ("**ok**" if c["ok"] else "**FAILED**"))
        if {"rule", "optimum_monthly_peaks"} <= set(rows):
            rule, best = rows["rule"]["monthly_peaks_kw"], rows["optimum_monthly_peaks"]["monthly_peaks_kw"]
            rule_p, best_p = rows["rule"]["peak_kw"], rows["optimum_monthly_peaks"]["peak_kw"]
            lines += ["", f"Monthly peaks: the optimum is {100 * (rule - best) / rule:.1f} % below the rule "
                      f"({rule:,.0f} -> {best:,.0f} kW)."]
            for m in ("mpc", "mpc_ev"):
                if m in rows:
                    got = rows[m]["monthly_peaks_kw"]
                    got_p = rows[m]["peak_kw"]
                    info = rows[m]["info"]
                    lines.append(
                        f"{m} ({info.get('horizon')} h): {got:,.0f} kW, closing {100 * (rule - got) / (rule - best):.0f} % "
                        f"of the rule-to-optimum gap of the monthly peaks and {100 * (rule_p - got_p) / (rule_p - best_p):.0f} % "
                        f"of the annual peak's; {info.get('solves', 0):,} solves, {info.get('mean_solve_seconds', 0) * 1000:.1f} ms "
                        f"each on average ({info.get('max_solve_seconds', 0) * 1000:.0f} ms at most).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from oe3jax.control.registry import CONTROLLERS

    names = args.controllers or list(CONTROLLERS)
    command = "python scripts/controllers.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                 " " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
    results = [run_scenario(s, args.seed, args.hours, args.horizon, names) for s in args.scenario]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_markdown(results, command), encoding="utf-8")
    json_path = Path(args.json) if args.json else out.with_suffix(".json")
    json_path.write_text(json.dumps({"command": command, "results": results}, indent=1, default=float), encoding="utf-8")
    print(f"wrote {out} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
