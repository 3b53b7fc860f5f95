"""The report of one or more runs: a Markdown page with PNG plots that a reader takes in at a glance.

>>> report = write_report(["results/runs/all-iquitos-128"], "results/runs/all-iquitos-128/report",
...                       load_policies=load_every_seed)
>>> report.path, report.partial, report.missing

What it shows, and where each number comes from:

- **Learning curves** (``learning_curves.png``): the mean reward per hour of every chunk of training
  from ``progress/<algo>_progress.csv``, the mean over the training seeds and the band from the
  lowest to the highest seed, one panel per agent.
- **KPI table**: agents and baselines with their 95 % intervals, the share of the optimum's gain and
  of the rule-to-optimum gap, and the difference to the strongest baseline on the objective (the
  lowest mean among the baselines without foresight, named; each agent is judged against it), from
  ``evaluation/statistics.json`` (``scripts/evaluate.py RUN_DIR --eval-seeds N``) when it exists,
  otherwise from the end-of-training evaluation ``evaluation/<algo>.json`` (one condition: the
  interval spans the training seeds only).
- **Dispatch** (``dispatch.png``): PV, mall load, EV charging, battery power, grid import and the
  battery's state of charge over a typical sunny and a typical cloudy day, for the best agent beside
  the evening rule and the perfect-foresight optimum of the run's objective. The days: rank the
  evaluated days by their PV energy; the sunny day is the median day of the top decile, the cloudy
  day the median day of the bottom decile. The best agent has the lowest mean of the run's
  objective KPI (the sum of monthly peak imports under a demand-charge reward, CO2 otherwise).
- **Monthly** (``monthly.png``) grid import with its CO2 and monthly peak import, and the
  **load-duration curve** (``load_duration.png``) of the hourly grid import, for every agent and
  baseline on the episode of the end-of-training evaluation (same arrivals, same hours).

The episodes behind the last three are run here (:func:`oe3jax.simulation.episode.run_episode`)
with the policies that ``load_policies(run_dir, algo)`` returns (one per training seed; the caller
brings them, as this layer does not read checkpoints); their data are written to ``report.json``.

A run killed mid-way, without an evaluation, or with damaged files gives a report marked partial
that says what is missing; only a directory that is not a run raises (:class:`ReportError`, one line).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oe3jax.evaluation import statistics
from oe3jax.evaluation.plots import (
    CURVE_COLUMNS,
    Episode,
    _episode,
    day_name,
    learning_curve,
    monthly_values,
    plot_dispatch,
    plot_learning_curves,
    plot_load_duration,
    plot_monthly,
    typical_days,
)
from oe3jax.evaluation.runfiles import RunDirError, read_progress_rows, run_agents
from oe3jax.evaluation.runfiles import finite_number as _num

#: The report's file names inside its output directory.
FILES = {"markdown": "report.md", "data": "report.json", "curves": "learning_curves.png",
         "dispatch": "dispatch.png", "monthly": "monthly.png", "duration": "load_duration.png"}

#: (KPI, label, unit scale, format) of the KPI table's value columns.
_KPI_COLUMNS: tuple[tuple[str, str, float, str], ...] = (
    ("co2_kg", "CO2 (t)", 1e-3, ",.1f"),
    ("monthly_peaks_sum_kw", "sum of monthly peaks (kW)", 1.0, ",.0f"),
    ("peak_import_kw", "peak import (kW)", 1.0, ",.0f"),
    ("ev_unmet_kwh", "EV unmet (MWh)", 1e-3, ",.2f"),
)
#: KPIs whose share of the optimum's gain the table gives.
_SHARE_KPIS = ("co2_kg", "monthly_peaks_sum_kw")
_LABELS = {
    "uncontrolled": "uncontrolled", "rule": "evening rule", "greedy": "greedy rule",
    "optimum_grid": "optimum (grid import)", "optimum_monthly_peaks": "optimum (monthly peaks)",
    "optimum_cost": "optimum (cost)",
}


class ReportError(ValueError):
    """What was given is not something a report can be made of (one line)."""


# ============================================================================= reading the runs
@dataclasses.dataclass
class AgentRun:
    """One agent of a run directory, as its files have it."""

    name: str                       # shown in the report (the algorithm; with the run's name if several)
    algo: str
    run_dir: Path
    cfg: dict[str, Any]
    rows: list[dict[str, str]]
    evaluation: dict[str, Any] | None   # evaluation/<algo>.json, complete
    stats: dict[str, Any] | None        # evaluation/statistics.json of the run, if it holds this agent
    stats_name: str | None              # the agent's name in it
    notes: list[str]

    @property
    def seeds(self) -> list[int]:
        return [int(self.cfg.get("seed", 0)) + i for i in range(int(self.cfg.get("seeds", 1)))]

    @property
    def total_steps(self) -> int:
        return int(self.cfg.get("total_steps") or 0)

    @property
    def steps_done(self) -> int:
        return max((int(_num(r.get("step")) or 0) for r in self.rows), default=0)

    @property
    def train_seconds(self) -> float | None:
        """The wall time of the chunks in the CSV: each chunk's env steps (all seeds) over its
        ``steps_per_s``, summed (compilation before the first chunk and evaluation not counted)."""
        rates: dict[int, float] = {}
        for r in self.rows:
            step, rate = _num(r.get("step")), _num(r.get("steps_per_s"))
            if step is not None and rate is not None and rate > 0:
                rates.setdefault(int(step), rate)
        if not rates:
            return None
        steps = sorted(rates)
        deltas = np.diff(np.r_[0, steps])
        return float(sum(d * len(self.seeds) / rates[s] for d, s in zip(deltas, steps)))

    @property
    def trained(self) -> bool:
        return self.total_steps > 0 and self.steps_done >= self.total_steps

    def seed_kpis(self) -> list[dict[str, Any]] | None:
        """The end-of-training KPIs of every seed, in seed order (None without an evaluation)."""
        if self.evaluation is None:
            return None
        return [self.evaluation[f"seed {s}"] for s in self.seeds]


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        notes.append(f"{path.parent.name}/{path.name}: cannot be read ({type(exc).__name__}); left out")
        return None
    if not isinstance(doc, dict):
        notes.append(f"{path.parent.name}/{path.name}: not a JSON object; left out")
        return None
    return doc


def _evaluation(run_dir: Path, algo: str, seeds: Sequence[int], notes: list[str]) -> dict[str, Any] | None:
    path = run_dir / "evaluation" / f"{algo}.json"
    doc = _read_json(path, notes)
    if doc is None:
        return None
    missing = [f"seed {s}" for s in seeds if not isinstance(doc.get(f"seed {s}"), Mapping)]
    if missing:
        notes.append(f"evaluation/{algo}.json: no entry for {', '.join(missing)}; left out")
        return None
    return doc


def _statistics(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    doc = _read_json(run_dir / "evaluation" / "statistics.json", notes)
    if doc is None:
        return None
    if not all(isinstance(doc.get(k), Mapping) for k in ("kpis", "agents_info", "baselines")):
        notes.append("evaluation/statistics.json: not a statistics report (no kpis, agents_info or baselines); left out")
        return None
    return doc


def read_runs(run_dirs: Sequence[str | Path]) -> list[AgentRun]:
    """Every agent of every run directory, in the order given (the pipeline's order within a run)."""
    if not run_dirs:
        raise ReportError("RUN_DIR: give at least one run directory")
    agents: list[AgentRun] = []
    several = len(run_dirs) > 1
    for run_dir in map(Path, run_dirs):
        try:
            order, cfgs = run_agents(run_dir)
        except RunDirError as exc:
            raise ReportError(str(exc)) from None
        run_notes: list[str] = []
        stats = _statistics(run_dir, run_notes)
        for algo in order:
            cfg = cfgs.get(algo, {})
            notes = list(run_notes)
            rows = read_progress_rows(run_dir / "progress" / f"{algo}_progress.csv", notes)
            if rows and not set(CURVE_COLUMNS) <= set(rows[0]):
                notes.append(f"{algo}_progress.csv: no {', '.join(c for c in CURVE_COLUMNS if c not in rows[0])} "
                             "column; left out")
                rows = []
            agent = AgentRun(algo if not several else f"{algo} ({run_dir.name})", algo, run_dir, cfg, rows,
                             None, None, None, notes)
            agent.evaluation = _evaluation(run_dir, algo, agent.seeds, notes)
            if stats is not None:
                names = [n for n, info in stats["agents_info"].items()
                         if isinstance(info, Mapping) and info.get("algo") == algo]
                if names and all(isinstance(stats["kpis"].get(k), Mapping) for k in _SHARE_KPIS):
                    agent.stats, agent.stats_name = stats, names[0]
            run_notes_seen = set(run_notes)
            agent.notes = [n for n in notes if n not in run_notes_seen] + run_notes
            agents.append(agent)
    seen: set[str] = set()
    for a in agents:  # the same algorithm twice in one list of runs of the same name
        while a.name in seen:
            a.name += "'"
        seen.add(a.name)
    return agents


def objective_of(cfg: Mapping[str, Any], scenario: Any = None) -> str:
    """The KPI a run is judged on: the sum of monthly peaks under a demand charge, CO2 otherwise."""
    if scenario is not None and hasattr(scenario, "reward_weights"):
        return "monthly_peaks_sum_kw" if scenario.reward_weights.get("demand", 0.0) > 0 else "co2_kg"
    from oe3jax.simulation.scenario import REWARD_PRESETS

    merged = {**dict(cfg.get("env") or {}), **dict(cfg.get("scenario_overrides") or {})}
    weights = REWARD_PRESETS.get(str(merged.get("reward", "co2_focus")), {})
    return "monthly_peaks_sum_kw" if weights.get("demand", 0.0) > 0 else "co2_kg"


def _optimum_of(kpi: str) -> str | None:
    from oe3jax.evaluation.compare import BASELINES

    return next((b.name for b in BASELINES if kpi in b.optimises), None)


# ============================================================================= the KPI table
def _stat_from(doc_stat: Mapping[str, Any]) -> dict[str, Any]:
    ci = doc_stat.get("ci")
    n = int(doc_stat.get("n_runs", 1)) * int(doc_stat.get("n_conditions", 1))
    return {"mean": float(doc_stat["mean"]), "ci": [float(ci[0]), float(ci[1])] if ci and n > 1 else None, "n": n}


def _share_from(doc_share: Any) -> dict[str, Any] | None:
    if not isinstance(doc_share, Mapping) or not doc_share.get("defined"):
        return None
    return _stat_from(doc_share)


def _interval(values: np.ndarray) -> dict[str, Any]:
    x = np.asarray(values, np.float64)
    if x.size > 1:
        out = statistics.interval(x)
        return {"mean": out["mean"], "ci": out["ci"], "n": int(x.size)}
    return {"mean": float(x.reshape(-1)[0]), "ci": None, "n": 1}


def _table_from_statistics(agents: Sequence[AgentRun]) -> dict[str, Any]:
    doc = agents[0].stats
    assert doc is not None
    rows = []
    entries = [(a.name, "agent", a.stats_name) for a in agents] + \
              [(b, "baseline", b) for b in doc["baselines"]]
    strongest = {kpi: (doc["kpis"].get(kpi) or {}).get("strongest_baseline") for kpi in _SHARE_KPIS}
    optimum = {kpi: (doc["kpis"].get(kpi) or {}).get("optimum") for kpi in _SHARE_KPIS}
    for name, kind, key in entries:
        cells, shares, gaps, diffs = {}, {}, {}, {}
        for kpi, *_ in _KPI_COLUMNS:
            pol = (doc["kpis"].get(kpi) or {}).get("policies", {}).get(key)
            if isinstance(pol, Mapping):
                cells[kpi] = _stat_from(pol)
                if kpi in _SHARE_KPIS:
                    shares[kpi] = _share_from(pol.get("share_of_gain"))
                    gaps[kpi] = _share_from(pol.get("gap_closed_rule"))
                    diff = pol.get("difference")
                    diffs[kpi] = _stat_from(diff) if isinstance(diff, Mapping) and "mean" in diff else None
        rows.append({"name": name, "kind": kind, "cells": cells, "shares": shares, "gaps": gaps, "diffs": diffs})
    conds = doc.get("conditions") or []
    seeds = sorted({c.get("arrival_seed") for c in conds if isinstance(c, Mapping)} - {None})
    years = sorted({str(c.get("year")) for c in conds if isinstance(c, Mapping) and c.get("year")})
    source = (f"`evaluation/statistics.json` ({doc.get('command', 'scripts/evaluate.py')}): "
              f"{len(conds)} condition(s), arrival seeds {_ranges(seeds)}"
              + (f", weather years {', '.join(years)}" if years else ", the scenario's own weather year")
              + f", {int(doc.get('hours', 0)):,} hours from 1 January; mean [95 % bootstrap interval over "
              "training seeds and conditions]")
    return {"source": "statistics", "source_text": source, "rows": rows, "strongest": strongest,
            "optimum": optimum, "hours": int(doc.get("hours") or 0)}


def _ranges(values: Sequence[Any]) -> str:
    if not values:
        return "-"
    if len(values) > 2 and all(isinstance(v, int) for v in values) and values[-1] - values[0] == len(values) - 1:
        return f"{values[0]}-{values[-1]}"
    return ", ".join(str(v) for v in values)


def _table_from_evaluation(agents: Sequence[AgentRun]) -> dict[str, Any]:
    from oe3jax.evaluation.compare import BASELINES

    first = agents[0].evaluation
    assert first is not None
    seed_names = {f"seed {s}" for a in agents for s in a.seeds}
    base_names = [k for k, v in first.items() if isinstance(v, Mapping) and k not in seed_names]
    oracles = {b.name for b in BASELINES if b.oracle}
    optimum = {kpi: o if o in base_names else None for kpi in _SHARE_KPIS for o in [_optimum_of(kpi)]}
    strongest: dict[str, str | None] = {}
    for kpi in _SHARE_KPIS:
        real = {b: _num((first.get(b) or {}).get(kpi)) for b in base_names if b not in oracles}
        real = {b: v for b, v in real.items() if v is not None}
        strongest[kpi] = statistics.strongest(real) if real else None

    def ref(name: str | None, kpi: str) -> float | None:
        return _num((first.get(name) or {}).get(kpi)) if name else None

    def share(vals: np.ndarray, start: float | None, best: float | None) -> dict[str, Any] | None:
        if start is None or best is None:
            return None
        ratio, defined = statistics.share_matrix(vals[:, None], [start], [best])
        return _interval(ratio) if defined.any() else None

    def row(name: str, kind: str, per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        cells, shares, gaps, diffs = {}, {}, {}, {}
        for kpi, *_ in _KPI_COLUMNS:
            vals = [_num(k.get(kpi)) for k in per_seed]
            if not vals or any(v is None for v in vals):
                continue
            x = np.asarray(vals, np.float64)
            cells[kpi] = _interval(x)
            if kpi in _SHARE_KPIS:
                best = ref(optimum[kpi], kpi)
                shares[kpi] = share(x, ref("uncontrolled", kpi), best)
                gaps[kpi] = share(x, ref("rule", kpi), best)
                s = ref(strongest[kpi], kpi)
                diffs[kpi] = None if s is None else _interval(x - s)
        return {"name": name, "kind": kind, "cells": cells, "shares": shares, "gaps": gaps, "diffs": diffs}

    rows = [row(a.name, "agent", a.seed_kpis() or []) for a in agents]
    rows += [row(b, "baseline", [first[b]]) for b in base_names]
    k0 = first[f"seed {agents[0].seeds[0]}"]
    hours = int(k0.get("hours", 0))
    seeds = sorted({len(a.seeds) for a in agents})
    source = (f"the end-of-training evaluation (`evaluation/<algo>.json`): one condition, arrival seed "
              f"{agents[0].cfg.get('eval', {}).get('seed', 0)}, weather year {k0.get('weather_year', '?')}, "
              f"{hours:,} hours from 1 January; "
              + ("mean [95 % bootstrap interval over the training seeds]" if max(seeds) > 1 else
                 "one training seed, so no interval")
              + ". Run `python scripts/evaluate.py RUN_DIR --eval-seeds 10` for intervals over arrival seeds too")
    return {"source": "evaluation", "source_text": source, "rows": rows, "strongest": strongest,
            "optimum": optimum}


def _episode_key(a: AgentRun) -> tuple[Any, ...]:
    """What makes two end-of-training evaluations comparable: the same episode and baselines."""
    k = (a.seed_kpis() or [{}])[0]
    unc = (a.evaluation or {}).get("uncontrolled") or {}
    return (k.get("hours"), k.get("weather_year"), _num(unc.get("co2_kg")), _num(unc.get("monthly_peaks_sum_kw")))


def kpi_tables(agents: Sequence[AgentRun]) -> list[dict[str, Any]]:
    """The KPI tables of one run's agents: one from its statistics.json if it holds them all, else
    one per group of agents evaluated on the same episode (their baselines agree)."""
    if agents and all(a.stats is not None and a.stats is agents[0].stats for a in agents):
        return [{**_table_from_statistics(agents), "agents": [a.name for a in agents]}]
    groups: dict[tuple[Any, ...], list[AgentRun]] = {}
    for a in agents:
        if a.evaluation is not None:
            groups.setdefault(_episode_key(a), []).append(a)
    return [{**_table_from_evaluation(group), "agents": [a.name for a in group],
             "hours": int((group[0].seed_kpis() or [{}])[0].get("hours") or 0)} for group in groups.values()]


def _fmt_stat(stat: Mapping[str, Any] | None, scale: float, how: str) -> str:
    if stat is None:
        return "-"
    text = format(stat["mean"] * scale, how)
    if stat.get("ci"):
        lo, hi = stat["ci"]
        text += f" [{format(lo * scale, how)}, {format(hi * scale, how)}]"
    return text


def _fmt_share(stat: Mapping[str, Any] | None) -> str:
    if stat is None:
        return "-"
    text = f"{100 * stat['mean']:,.1f} %"
    if stat.get("ci"):
        lo, hi = stat["ci"]
        text += f" [{100 * lo:,.1f}, {100 * hi:,.1f}]"
    return text


def _fmt_diff(stat: Mapping[str, Any] | None, scale: float, how: str) -> str:
    if stat is None:
        return "-"
    signed = "+" + how if not how.startswith("+") else how
    text = format(stat["mean"] * scale, signed)
    if stat.get("ci"):
        lo, hi = stat["ci"]
        text += f" [{format(lo * scale, signed)}, {format(hi * scale, signed)}]"
    return text


def _column(kpi: str) -> tuple[str, str, float, str]:
    return next(c for c in _KPI_COLUMNS if c[0] == kpi)


def table_markdown(table: Mapping[str, Any], objective: str) -> str:
    """The KPI table: the objective first, with its shares of the optimum's gain and of the rule-to-
    optimum gap and its difference to the strongest baseline; then the other KPIs."""
    order = sorted(_KPI_COLUMNS, key=lambda c: c[0] != objective)  # the objective first
    strongest = (table.get("strongest") or {}).get(objective)
    head = ["policy"]
    for kpi, label, *_ in order:
        head.append(label + (" (objective)" if kpi == objective else ""))
        if kpi in _SHARE_KPIS:
            head.append("share of the optimum's gain")
        if kpi == objective:
            unit = label[label.rindex("(") + 1: -1]
            head += ["share of the rule-to-optimum gap",
                     f"difference to the strongest baseline, {_LABELS.get(strongest, strongest or '-')} ({unit})"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in table["rows"]:
        name = f"**{row['name']}**" if row["kind"] == "agent" else _LABELS.get(row["name"], row["name"])
        cells = [name]
        for kpi, _, scale, how in order:
            cells.append(_fmt_stat(row["cells"].get(kpi), scale, how))
            if kpi in _SHARE_KPIS:
                cells.append(_fmt_share(row["shares"].get(kpi)))
            if kpi == objective:
                cells.append(_fmt_share((row.get("gaps") or {}).get(kpi)))
                cells.append(_fmt_diff((row.get("diffs") or {}).get(kpi), scale, how))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(table: Mapping[str, Any], objective: str) -> list[str]:
    """One line per agent: its objective against the strongest baseline, named (Markdown bullets)."""
    kpi, label, scale, how = _column(objective)
    unit = label[label.rindex("(") + 1: -1]
    what = label[: label.rindex("(")].strip()
    strongest = (table.get("strongest") or {}).get(objective)
    rows = {r["name"]: r for r in table["rows"]}
    if strongest is None or strongest not in rows or kpi not in rows[strongest]["cells"]:
        return [f"No baseline that does not see the future was evaluated on {what}: the agents are not judged."]
    ref = rows[strongest]["cells"][kpi]["mean"] * scale
    out = [f"The strongest baseline on {what}, the objective, is the **{_LABELS.get(strongest, strongest)}** "
           f"({format(ref, how)} {unit}): the lowest mean among the baselines that do not see the future "
           f"(the optimum plans with perfect foresight, so it bounds what can be reached instead)."]
    for r in table["rows"]:
        if r["kind"] != "agent":
            continue
        d = (r.get("diffs") or {}).get(kpi)
        if d is None:
            continue
        amount = format(abs(d["mean"]) * scale, how) + f" {unit}"
        if d.get("ci") and d["ci"][0] <= 0.0 <= d["ci"][1]:
            word = (f"no clear difference ({_fmt_diff(d, scale, how)} {unit}: the interval holds 0)")
        else:
            word = f"{amount} {'more' if d['mean'] > 0 else 'less'} than it ({'worse' if d['mean'] > 0 else 'better'})"
            if not d.get("ci"):
                word += ", one value, no interval"
        gap = (r.get("gaps") or {}).get(kpi)
        gap_text = "" if gap is None else f"; it closes {_fmt_share(gap)} of the rule-to-optimum gap"
        out.append(f"- **{r['name']}**: {word}{gap_text}.")
    return out


# ============================================================================= the report
@dataclasses.dataclass
class Report:
    path: Path                # report.md
    partial: bool
    missing: list[str]        # what a complete report would have and this one lacks
    files: list[Path]         # every file written
    data: dict[str, Any]      # what report.json holds


LoadPolicies = Callable[[Path, str], Sequence[Any]]
#: ``checkpoints(run_dir, algo, notes) -> {"count", "final", "env_steps_per_seed", ...}``: the
#: agent's complete checkpoints (:func:`oe3jax.training.status.checkpoint_summary`).
Checkpoints = Callable[[Path, str, list], Mapping[str, Any]]


def _checkpoint_text(ck: Mapping[str, Any] | None) -> str:
    if ck is None:
        return "-"
    if not ck.get("count"):
        return "none"
    steps = int(ck.get("env_steps_per_seed") or 0)
    return (f"{int(ck['count'])}, the last at {steps:,} env steps" if steps else f"{int(ck['count'])}") \
        + (" (final)" if ck.get("final") else "")


def _status_line(a: AgentRun) -> str:
    if not a.rows:
        return "not started" if not any("empty" in n or "cut" in n for n in a.notes) else "no readable rows"
    if a.trained:
        return "trained"
    pct = 100.0 * a.steps_done / a.total_steps if a.total_steps else 0.0
    return f"unfinished ({pct:.0f} %)"


def _duration(seconds: float) -> str:
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


def _last_reward(a: AgentRun) -> float | None:
    c = learning_curve(a.rows)
    return float(c["mean"][-1]) if c["step"].size else None


def _best(tables: Sequence[Mapping[str, Any]], agents: Sequence[AgentRun], objective: str) -> AgentRun | None:
    """The agent with the lowest mean objective, compared within one table (the same conditions):
    a table from statistics.json first (most conditions), then the longest episode, then the most agents."""
    for table in sorted(tables, key=lambda t: (t.get("source") != "statistics", -int(t.get("hours") or 0),
                                               -len(t["agents"]))):
        means = {r["name"]: r["cells"][objective]["mean"] for r in table["rows"]
                 if r["kind"] == "agent" and objective in r["cells"]}
        if means:
            best = min(means, key=lambda n: (means[n], list(means).index(n)))
            return next(a for a in agents if a.name == best)
    return None


def _representative_seed(a: AgentRun, objective: str) -> int:
    """The index of the seed with the median end-of-training objective (of two middle ones, the lower)."""
    kpis = a.seed_kpis()
    if not kpis or len(kpis) == 1:
        return 0
    vals = [float(k[objective]) for k in kpis]
    order = sorted(range(len(vals)), key=lambda i: (vals[i], i))
    return order[(len(vals) - 1) // 2]


def _episodes(agents: Sequence[AgentRun], best: AgentRun, objective: str, load_policies: LoadPolicies,
              notes: list[str]) -> tuple[list[Episode], dict[str, Any]] | None:
    """Every agent of the best agent's environment and every baseline, on its evaluation episode."""
    import jax

    from oe3jax.control.registry import make_controller

    policies: dict[str, Any] = {}
    for a in [best] + [x for x in agents if x is not best and x.evaluation is not None]:
        try:
            loaded = list(load_policies(a.run_dir, a.algo))
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint: the plots go, the report stays
            notes.append(f"{a.name}: its policies could not be loaded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            continue
        if not loaded:
            continue
        policies[a.name] = (a, loaded[min(_representative_seed(a, objective), len(loaded) - 1)])
    if best.name not in policies:
        return None
    _, pol = policies[best.name]
    env = getattr(pol, "env", None)
    scenario = getattr(env, "scenario", None)
    if scenario is None or not hasattr(scenario, "capacity_kwh") or not hasattr(pol.env_params, "start_hour"):
        notes.append("the dispatch, monthly and load-duration plots need the EV-park environment; "
                     f"{best.name} was trained on another")
        return None
    import jax.numpy as jnp

    params = pol.env_params.replace(random_start=jnp.asarray(False), start_hour=jnp.asarray(0, jnp.int32))
    first = (best.seed_kpis() or [{}])[0]
    hours = int(first.get("hours") or best.cfg.get("eval", {}).get("hours") or 8760)
    eval_seed = int(best.cfg.get("eval", {}).get("seed", 0))
    key = jax.random.key(eval_seed)
    out: list[Episode] = []
    for name, (a, p) in policies.items():
        if getattr(p, "env", None) is None or p.env.scenario != scenario:
            notes.append(f"{name}: trained on another environment than {best.name}; left out of the episode plots")
            continue
        out.append(_episode(name, f"{name} (seed {p.seed})", "agent", env, params,
                            lambda obs, state, ep, f=p: f(obs), key, hours))
    optimum = "optimum_monthly_peaks" if objective == "monthly_peaks_sum_kw" else "optimum_grid"
    for name in ("uncontrolled", "rule", "greedy", optimum):
        act = make_controller(name, env, params, key, hours)
        out.append(_episode(name, _LABELS[name], "baseline", env, params, act, key, hours))
    info = {"hours": hours, "arrival_seed": eval_seed, "optimum": optimum, "scenario": scenario.name,
            "co2_kg_per_kwh": float(scenario.co2_kg_per_kwh), "best": best.name,
            "best_seed": policies[best.name][1].seed}
    return out, info


def _summary(tables: Sequence[Mapping[str, Any]], best: AgentRun | None, objective: str) -> str | None:
    """The header's line on the best agent: its objective beside the strongest baseline's."""
    if best is None:
        return None
    kpi, label, scale, how = _column(objective)
    unit = label[label.rindex("(") + 1: -1]
    for table in tables:
        rows = {r["name"]: r for r in table["rows"]}
        strongest = (table.get("strongest") or {}).get(objective)
        if best.name not in rows or kpi not in rows[best.name]["cells"]:
            continue
        text = (f"- best agent: **{best.name}**, {label[: label.rindex('(')].strip()} "
                f"{_fmt_stat(rows[best.name]['cells'][kpi], scale, how)} {unit}")
        diff = (rows[best.name].get("diffs") or {}).get(kpi)
        if strongest in rows and diff is not None:
            text += (f"; the strongest baseline, the {_LABELS.get(strongest, strongest)}: "
                     f"{_fmt_stat(rows[strongest]['cells'].get(kpi), scale, how)} {unit} "
                     f"(difference {_fmt_diff(diff, scale, how)} {unit}; see the KPIs)")
        return text
    return None


def _section_header(agents: Sequence[AgentRun], command: str | None) -> list[str]:
    runs = list(dict.fromkeys(a.run_dir for a in agents))
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs"
    lines = [f"# Report: {title}", ""]
    scen = sorted({str(a.cfg.get("scenario", "?")) for a in agents})
    rewards = sorted({str({**dict(a.cfg.get("env") or {}), **dict(a.cfg.get("scenario_overrides") or {})}
                          .get("reward", "co2_focus")) for a in agents})
    lines.append(f"- run director{'ies' if len(runs) > 1 else 'y'}: " + ", ".join(f"`{r}`" for r in runs))
    lines.append(f"- scenario {', '.join(scen)}, reward {', '.join(rewards)}; agents "
                 + ", ".join(f"{a.name} ({a.total_steps:,} env steps x {len(a.seeds)} seed"
                             f"{'s' * (len(a.seeds) > 1)}: {', '.join(map(str, a.seeds))})" for a in agents))
    lines.append(f"- written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
                 + (f" by `{command}`" if command else ""))
    return lines


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    load_policies: LoadPolicies | None = None,
    checkpoints: Checkpoints | None = None,
    command: str | None = None,
) -> Report:
    """Write ``report.md``, ``report.json`` and the PNG plots of ``run_dirs`` into ``out_dir``.

    ``load_policies(run_dir, algo)`` gives the trained policies of one agent, one per training seed
    (``None``: no episodes are run, so no dispatch, monthly or load-duration plots);
    ``checkpoints(run_dir, algo, notes)`` summarises its checkpoints for the training table. Raises
    :class:`ReportError` (one line) when a directory is not a run or ``out_dir`` cannot be written.
    """
    agents = read_runs(run_dirs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out: {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"--out: {out} cannot be created ({exc.strerror or type(exc).__name__})") from None
    b = _Build(out, {"run_dirs": [str(Path(r)) for r in run_dirs], "agents": {}})
    md = _section_header(agents, command)
    header_len = len(md)
    md += _training_section(b, agents, checkpoints)
    objective = objective_of(agents[0].cfg)
    tables = _kpi_tables(agents)
    md += _kpi_section(b, tables, objective)
    best = _best([t for _, t in tables], agents, objective)
    summary = _summary([t for _, t in tables], best, objective)
    if summary:
        md[header_len:header_len] = [summary]
    md += _episode_sections(b, agents, best, objective, load_policies)
    return _finish(b, md, objective, best)


@dataclasses.dataclass
class _Build:
    """What the sections of a report add to as it is written: the output directory, the JSON
    record, the files written, what is missing (a partial report) and notes on the data."""

    out: Path
    data: dict[str, Any]
    files: list[Path] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def _training_section(b: _Build, agents: Sequence[Any], checkpoints: Checkpoints | None) -> list[str]:
    """The training table (and what is missing per agent) and the learning curves."""
    out, missing, notes, files, data = b.out, b.missing, b.notes, b.files, b.data
    md: list[str] = []
    ckpts: dict[str, Mapping[str, Any] | None] = {}
    for a in agents:
        if checkpoints is not None:
            ck_notes: list[str] = []
            ckpts[a.name] = checkpoints(a.run_dir, a.algo, ck_notes)
            a.notes += ck_notes
        for n in a.notes:
            notes.append(f"{a.name}: {n}")
        if not a.rows:
            missing.append(f"{a.name}: no progress rows (`progress/{a.algo}_progress.csv` missing or empty)")
        elif not a.trained:
            missing.append(f"{a.name}: training not finished, {a.steps_done:,} of {a.total_steps:,} env steps per "
                           "seed (if it was interrupted, rerun the same train.py command to resume)")
        if a.evaluation is None:
            missing.append(f"{a.name}: no end-of-training evaluation (`evaluation/{a.algo}.json`)")
        if any("cut off" in n or "malformed" in n or "cannot be read" in n for n in a.notes):
            missing.append(f"{a.name}: damaged files (see the notes)")
        data["agents"][a.name] = {"algo": a.algo, "run_dir": str(a.run_dir), "seeds": a.seeds,
                                  "total_steps": a.total_steps, "steps_done": a.steps_done,
                                  "progress_rows": len(a.rows), "last_reward_avg": _last_reward(a),
                                  "evaluated": a.evaluation is not None, "train_seconds": a.train_seconds,
                                  "checkpoints": None if ckpts.get(a.name) is None else
                                  {k: ckpts[a.name].get(k) for k in ("count", "steps", "final", "env_steps_per_seed")}}
    md += ["", "## Training", "",
           "| agent | state | env steps per seed | seeds | training time | progress rows | last mean reward per hour "
           "| checkpoints | evaluation |",
           "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for a in agents:
        last = _last_reward(a)
        secs = a.train_seconds
        md.append(f"| {a.name} | {_status_line(a)} | {a.steps_done:,} / {a.total_steps:,} | {len(a.seeds)} "
                  f"| {'-' if secs is None else _duration(secs)} | {len(a.rows)} | {'-' if last is None else f'{last:.5f}'} | {_checkpoint_text(ckpts.get(a.name))} "
                  f"| {'yes' if a.evaluation is not None else 'missing'} |")
    if any(a.rows for a in agents):
        plot_learning_curves(agents, out / FILES["curves"])
        files.append(out / FILES["curves"])
        md += ["", f"![learning curves]({FILES['curves']})", "",
               "*Learning curves*: the mean reward per hour of each chunk of training (the `reward_avg` column of "
               "`progress/<algo>_progress.csv`), against the env steps each seed has taken; the line is the mean "
               "over the training seeds (thin) and the band spans the lowest to the highest seed. Each chunk's "
               "episodes cover other days of the year, so part of the wiggle is the weather, not learning: the "
               "thick line is the moving mean over one training episode of every environment (a year from "
               "1 January averages the seasons out), or over a tenth of the chunks when episodes are short. A "
               "dashed vertical line marks where an unfinished run is; the moving mean weighs each chunk by its env steps (a "
               "run's last chunk may be short, and its thin line noisier). Training time: the chunks' wall time from "
               "their `steps_per_s` (compilation and evaluation not counted)."]
    return md


def _kpi_tables(agents: Sequence[Any]) -> list[tuple[Path, dict[str, Any]]]:
    tables: list[tuple[Path, dict[str, Any]]] = []
    for run_dir in dict.fromkeys(a.run_dir for a in agents):
        tables += [(run_dir, t) for t in kpi_tables([a for a in agents if a.run_dir == run_dir])]
    return tables


def _kpi_section(b: _Build, tables: list[tuple[Path, dict[str, Any]]], objective: str) -> list[str]:
    """The KPI tables of agents and baselines, with the verdict against the strongest baseline."""
    missing, data = b.missing, b.data
    md: list[str] = []
    if tables:
        md += ["", "## KPIs", ""]
        for run_dir, table in tables:
            if len(tables) > 1:
                md += [f"### {run_dir.name}: {', '.join(table['agents'])}", ""]
            md += [f"Source: {table['source_text']}.", "", table_markdown(table, objective), ""]
            md += verdict(table, objective) + [""]
        if len({t.get("source_text") for _, t in tables}) > 1 and len({r for r, _ in tables}) == 1:
            md += ["The agents were evaluated on different episodes (other hours or arrivals), so each has "
                   "its own baselines; compare agents only within a table.", ""]
        md += ["Lower is better in every column. Share of the optimum's gain = (uncontrolled \u2212 x) / "
               "(uncontrolled \u2212 optimum) and share of the rule-to-optimum gap = (rule \u2212 x) / "
               "(rule \u2212 optimum), with the perfect-foresight optimum of that KPI (grid import for CO2, "
               "monthly peaks for their sum): 100 % is the optimum, a negative share is worse than the reference. "
               "'-' where that optimum was not run, or where it gains less than 0.01 % over the reference (a "
               "share of nothing). Difference = x \u2212 the strongest baseline (paired by condition): negative "
               "is better. EV unmet: energy the vehicles asked for and did not get (an agent that saves CO2 by "
               "not charging shows here)."]
        data["kpi_tables"] = [{"run_dir": str(r), **t} for r, t in tables]
    else:
        missing.append("the KPI table: no agent has an evaluation")
    return md


def _episode_sections(b: _Build, agents: Sequence[Any], best: Any, objective: str,
                      load_policies: LoadPolicies | None) -> list[str]:
    """The dispatch, monthly and load-duration plots from the end-of-training evaluation's episode."""
    out, missing, notes, files, data = b.out, b.missing, b.notes, b.files, b.data
    objective_label = "the sum of monthly peak imports" if objective == "monthly_peaks_sum_kw" else "CO2"
    md: list[str] = []
    episodes = None
    if best is None:
        missing.append("the dispatch, monthly and load-duration plots: no agent has an end-of-training evaluation")
    elif load_policies is None:
        missing.append("the dispatch, monthly and load-duration plots: no policies were given to run the episodes")
    else:
        md += ["", f"The best agent is **{best.name}**: the lowest mean of the run's objective, {objective_label} "
               f"(reward {str({**dict(best.cfg.get('env') or {}), **dict(best.cfg.get('scenario_overrides') or {})}.get('reward', 'co2_focus'))}), "
               "in the table above."]
        episodes = _episodes(agents, best, objective, load_policies, notes)
        if episodes is None:
            missing.append("the dispatch, monthly and load-duration plots: the best agent's policies could not be run")
    if episodes is not None:
        eps, info = episodes
        by_name = {e.name: e for e in eps}
        days = typical_days(by_name[best.name].flows["pv_kwh"])
        t0 = int(by_name[best.name].t[0])
        year = by_name[best.name].weather_year
        dispatch_eps = [by_name[best.name], by_name["rule"], by_name[info["optimum"]]]
        where = (f"{info['scenario']}, weather year {year}, arrival seed {info['arrival_seed']}")
        plot_dispatch(dispatch_eps, days, out / FILES["dispatch"],
                      f"Dispatch of {best.name} beside the evening rule and the optimum ({where})")
        sunny, cloudy = days["sunny"], days["cloudy"]
        k = days["decile_days"]
        md += ["", "## Dispatch on a typical sunny and a cloudy day", "",
               f"![dispatch]({FILES['dispatch']})", "",
               f"*Dispatch*: hourly power (kW; 1 kWh in an hour = 1 kW) of the best agent, **{best.name}** "
               f"(seed {info['best_seed']}), the evening rule and the {_LABELS[info['optimum']]}, with perfect foresight, "
               f"on the end-of-training evaluation's episode ({where}; every policy sees the same vehicles). "
               f"Battery power is positive when the battery discharges. The days: the {days['days']} days ranked "
               f"by PV energy; the sunny day is the median of the {k} sunniest (top decile), "
               f"**{day_name(t0 + 24 * sunny)}** ({days['daily_pv_kwh'][sunny] / 1000:,.1f} MWh of PV), the cloudy "
               f"day the median of the {k} least sunny (bottom decile), **{day_name(t0 + 24 * cloudy)}** "
               f"({days['daily_pv_kwh'][cloudy] / 1000:,.1f} MWh)."]
        monthly = {e.name: monthly_values(e, info["co2_kg_per_kwh"]) for e in eps}
        plot_monthly(eps, monthly, info["co2_kg_per_kwh"], out / FILES["monthly"],
                     f"Monthly grid import, CO2 and peak import by policy ({where})")
        top = int(min(200, max(24, len(eps[0].t) // 40)))
        plot_load_duration(eps, out / FILES["duration"], f"Load-duration curve of the grid import ({where})", top)
        files += [out / FILES["dispatch"], out / FILES["monthly"], out / FILES["duration"]]
        md += ["", "## Monthly grid import, CO2 and peak", "", f"![monthly]({FILES['monthly']})", "",
               f"*Monthly*: grid import per calendar month (MWh; the right axis gives its CO2, "
               f"{info['co2_kg_per_kwh']:g} kg per kWh) and the highest hourly import of each month (kW), for every "
               f"agent and baseline on the same episode ({where}, {info['hours']:,} hours).",
               "", "## Load-duration curve", "", f"![load-duration curve]({FILES['duration']})", "",
               "*Load-duration curve*: every hour's grid import sorted from highest to lowest (a point at x hours is "
               f"the import exceeded in x hours of the episode); right, the {top} highest hours, where the peaks "
               "differ. Agents are drawn above the baselines; a box names the curves that lie under another "
               "(within 0.2 % of the peak everywhere in those hours)."]
        data["episodes"] = {**info, "weather_year": year,
                            "days": {"sunny": {"day": sunny, "date": day_name(t0 + 24 * sunny)},
                                     "cloudy": {"day": cloudy, "date": day_name(t0 + 24 * cloudy)},
                                     "decile_days": k, "daily_pv_kwh": days["daily_pv_kwh"]},
                            "monthly": monthly,
                            "totals": {e.name: {"label": e.label, "grid_import_kwh": float(e.flows["grid_import"].sum()),
                                                "peak_import_kw": float(e.flows["grid_import"].max())} for e in eps}}
    return md


def _finish(b: _Build, md: list[str], objective: str, best: Any) -> Report:
    """The partial marker and notes, then report.md and report.json written atomically."""
    out, missing, notes, files, data = b.out, b.missing, b.notes, b.files, b.data
    partial = bool(missing)
    head = ["", "> **Partial report.** Missing:"] + [f"> - {m}" for m in missing] if partial else []
    md = md[:1] + head + md[1:]
    if notes:
        md += ["", "## Notes on the data", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    data.update(partial=partial, missing=missing, notes=list(dict.fromkeys(notes)),
                objective=objective, best=None if best is None else best.name)
    text = "\n".join(md) + "\n"
    for name, content in ((FILES["markdown"], text), (FILES["data"], json.dumps(data, indent=1) + "\n")):
        tmp = out / (name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(out / name)
        files.append(out / name)
    return Report(out / FILES["markdown"], partial, missing, files, data)
