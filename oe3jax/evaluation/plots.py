"""The report's plots: learning curves, the dispatch of typical days, monthly values and the
load-duration curve (matplotlib, Agg canvas, PNGs of 256 colours), and the episodes behind them.

:mod:`oe3jax.evaluation.report` composes them into the report; each plot function takes plain data
(progress rows, :class:`Episode` records) and writes one PNG.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oe3jax.evaluation.runfiles import finite_number as _num

#: The progress CSV columns the learning curves need.
CURVE_COLUMNS = ("step", "reward_avg", "seed")
DPI = 100
_BASELINE_STYLE = {
    "uncontrolled": {"color": "#8c8c8c", "linestyle": "-"},
    "rule": {"color": "#1f77b4", "linestyle": "-"},
    "greedy": {"color": "#17becf", "linestyle": "--"},
    "optimum_grid": {"color": "#000000", "linestyle": ":"},
    "optimum_monthly_peaks": {"color": "#000000", "linestyle": ":"},
}
_AGENT_COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#e377c2", "#8c564b")


# ============================================================================= learning curves
def learning_curve(rows: Sequence[Mapping[str, str]], column: str = "reward_avg") -> dict[str, np.ndarray]:
    """``{"step", "mean", "low", "high", "n"}`` of ``column`` per step over the seeds of each chunk."""
    by_step: dict[int, list[float]] = {}
    for r in rows:
        step, value = _num(r.get("step")), _num(r.get(column))
        if step is None or value is None:
            continue
        by_step.setdefault(int(step), []).append(value)
    steps = sorted(by_step)
    vals = [np.asarray(by_step[s]) for s in steps]
    return {"step": np.asarray(steps, np.int64), "mean": np.asarray([v.mean() for v in vals]),
            "low": np.asarray([v.min() for v in vals]), "high": np.asarray([v.max() for v in vals]),
            "n": np.asarray([v.size for v in vals], np.int64)}


def _steps_text(x: float, _pos: Any = None, digits: int = 6) -> str:
    """``40k``, ``1.5M``: env steps for axes and titles (``digits`` significant digits)."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:.{digits}g}M"
    if abs(x) >= 1e3:
        return f"{x / 1e3:.{digits}g}k"
    return f"{x:.{digits}g}"


def moving_mean(values: np.ndarray, window: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The centred moving mean over ``window`` points (fewer at the ends), each point weighted by
    ``weights`` (default equal): a chunk's env steps, so that a short last chunk counts for its length."""
    v = np.asarray(values, np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64)
    half = window // 2
    csum, wsum = np.r_[0.0, np.cumsum(v * w)], np.r_[0.0, np.cumsum(w)]
    lo = np.clip(np.arange(v.size) - half, 0, v.size)
    hi = np.clip(np.arange(v.size) + window - half, 0, v.size)
    return (csum[hi] - csum[lo]) / (wsum[hi] - wsum[lo])


def _figure(width: float, height: float) -> Any:
    """A figure drawn by the Agg backend: no display, no pyplot state, safe in any thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    """The figure as a PNG of at most 256 colours (a third of the bytes, the same picture), atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    buf.seek(0)
    with Image.open(buf) as image:
        small = image.convert("RGB").quantize(256)
    tmp = path.with_name(path.name + ".tmp")
    small.save(tmp, format="PNG", optimize=True)
    tmp.replace(path)


def smoothing_window(steps: np.ndarray, cfg: Mapping[str, Any]) -> tuple[int, str]:
    """``(chunks, why)`` of the moving mean of a learning curve with chunks ending at ``steps``.

    One training episode of every environment when that spans 3 or more chunks and at most half
    of them (the episodes of the EV park run from 1 January in lockstep, so a chunk's reward follows
    the season: a moving mean over one episode averages the season out); otherwise a tenth of the
    chunks when there are 30 or more; otherwise none (1).
    """
    n = int(np.asarray(steps).size)
    if n < 2:
        return 1, ""
    chunk = float(np.median(np.diff(np.asarray(steps, np.float64))))
    hours = (cfg.get("env") or {}).get("episode_hours")
    envs = (cfg.get(str(cfg.get("algo"))) or {}).get("num_envs")
    if isinstance(hours, int) and isinstance(envs, int) and chunk > 0:
        window = int(math.ceil(hours * envs / chunk))
        if 3 <= window <= n // 2:
            return window, f"one episode ({window} chunks)"
    if n >= 30:
        return n // 10, f"{n // 10} chunks"
    return 1, ""


def plot_learning_curves(agents: Sequence[Any], path: Path) -> None:
    """One panel per agent: the mean reward per hour against env steps, band from lowest to highest seed."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    n = len(agents)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = _figure(3.8 * cols + 0.6, 3.2 * rows + 0.7)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).reshape(-1)
    several = False
    for i, (ax, agent) in enumerate(zip(axes, agents)):
        c = learning_curve(agent.rows)
        color = _AGENT_COLORS[i % len(_AGENT_COLORS)]
        seeds = len(agent.seeds)
        several |= seeds > 1
        window, why = smoothing_window(c["step"], agent.cfg)
        if c["step"].size:
            if seeds > 1:
                ax.fill_between(c["step"], c["low"], c["high"], color=color, alpha=0.18, lw=0)
            ax.plot(c["step"], c["mean"], color=color, lw=1.0, alpha=0.45)
            ax.plot(c["step"], moving_mean(c["mean"], window, np.diff(np.r_[0, c["step"]])), color=color, lw=2.2)
        else:
            ax.text(0.5, 0.5, "no progress rows", transform=ax.transAxes, ha="center", va="center", fontsize=10)
        total = agent.total_steps
        if total:
            ax.set_xlim(0, total * 1.02)
            if 0 < agent.steps_done < total:
                ax.axvline(agent.steps_done, color="#555555", lw=0.8, ls="--")
        state = ("" if agent.trained else " (not started)" if not c["step"].size
                 else f" (at {_steps_text(agent.steps_done, digits=3)})")
        smooth = (f"moving mean over {why}" if window > 1 else
                  f"{c['step'].size} chunks, too few to smooth" if c["step"].size else "")
        ax.set_title(f"{agent.name}: {_steps_text(total)} steps x {seeds} seed{'s' * (seeds > 1)}{state}"
                     + (f"\n{smooth}" if smooth else ""), fontsize=10)
        ax.xaxis.set_major_formatter(FuncFormatter(_steps_text))
        ax.set_xlabel("env steps per seed")
        if i % cols == 0:
            ax.set_ylabel("mean reward per hour")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    grey = "#555555"
    handles = [Line2D([], [], color=grey, lw=1.0, alpha=0.45), Line2D([], [], color=grey, lw=2.2)]
    labels = ["each chunk (mean over the seeds)", "moving mean (see each title)"]
    if several:
        handles.append(Patch(color=grey, alpha=0.18, lw=0))
        labels.append("lowest to highest seed")
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    _save(fig, path)


# ============================================================================= the episodes behind the plots
@dataclasses.dataclass
class Episode:
    """One policy's evaluation episode, reduced to what the plots need (hourly arrays)."""

    name: str
    label: str
    kind: str                    # "agent" or "baseline"
    t: np.ndarray                # hour of the year of each step
    flows: dict[str, np.ndarray]  # kWh per hour
    soc_frac: np.ndarray         # state of charge at the start of each hour and after the last (steps + 1)
    weather_year: str


def _episode(name: str, label: str, kind: str, env: Any, params: Any, act: Any, key: Any, hours: int) -> Episode:
    from oe3jax.simulation.episode import run_episode

    trace = run_episode(env, params, act, key, hours)
    cap = float(env.scenario.capacity_kwh)
    energy = np.r_[np.asarray(trace["energy_kwh"], np.float64), float(trace["final"]["energy_kwh"])]
    flows = {k: np.asarray(trace["flows"][k], np.float64)
             for k in ("pv_kwh", "mall_kwh", "ev_kwh", "bess_charge", "bess_discharge", "grid_import",
                       "pv_curtailed", "unmet_kwh")}
    year = env.scenario.weather_years[int(np.asarray(trace["year"])[0])]
    return Episode(name, label, kind, np.asarray(trace["t"]), flows, energy / cap, str(year))


def typical_days(pv_kwh: np.ndarray, t0: int = 0) -> dict[str, Any]:
    """The sunny and the cloudy day of an episode's hourly PV (see the module doc for the rule).

    Only whole days count (from the episode's first hour, which starts a day here). Returns
    ``{"sunny": day, "cloudy": day, "decile_days": k, "daily_pv_kwh": [...], "days": n}`` with days
    as indices into the episode's days (day 0 starts at hour ``t0``).
    """
    days = len(pv_kwh) // 24
    if days < 1:
        raise ValueError("typical_days: expected at least one whole day of PV")
    daily = np.asarray(pv_kwh[: days * 24], np.float64).reshape(days, 24).sum(axis=1)
    k = max(1, days // 10)
    order = np.argsort(daily, kind="stable")        # least PV first
    bottom, top = order[:k], order[days - k:]
    return {"sunny": int(top[k // 2]), "cloudy": int(bottom[k // 2]), "decile_days": k,
            "daily_pv_kwh": daily.tolist(), "days": days}


def day_name(hour_of_year: int) -> str:
    """``"14 Mar"`` for an hour of the simulation's 365-day year."""
    from oe3jax.simulation.calendar import DAYS_PER_MONTH, MONTH_NAMES

    day = (int(hour_of_year) % 8760) // 24
    for month, length in enumerate(DAYS_PER_MONTH):
        if day < length:
            return f"{day + 1} {MONTH_NAMES[month]}"
        day -= length
    raise AssertionError("unreachable")


def _hour_steps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x, y of an hourly series drawn as steps over [0, 24]."""
    return np.arange(len(values) + 1), np.r_[values, values[-1]]


_FLOW_STYLE = (
    # (series, label, color, line width, style)
    ("pv", "PV generation", "#f2b400", 2.0, "-"),
    ("mall", "mall load", "#7f7f7f", 1.6, "-"),
    ("ev", "EV charging", "#9467bd", 1.6, "-"),
    ("battery", "battery (+ discharge, \u2212 charge)", "#2ca02c", 1.6, "-"),
    ("grid", "grid import", "#111111", 2.2, "-"),
)


def _day_series(ep: Episode, day: int) -> dict[str, np.ndarray]:
    s = slice(day * 24, day * 24 + 24)
    f = ep.flows
    return {"pv": f["pv_kwh"][s], "mall": f["mall_kwh"][s], "ev": f["ev_kwh"][s],
            "battery": f["bess_discharge"][s] - f["bess_charge"][s], "grid": f["grid_import"][s],
            "soc": 100.0 * ep.soc_frac[day * 24: day * 24 + 25]}


def plot_dispatch(episodes: Sequence[Episode], days: Mapping[str, Any], path: Path, title: str) -> None:
    """Rows: each policy's power flows (kW), then the states of charge; columns: sunny, cloudy day."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MultipleLocator

    n = len(episodes)
    fig = _figure(11.0, 2.35 * n + 2.9)
    axes = fig.subplots(n + 1, 2, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [1.0] * n + [0.8]})
    for r in range(n + 1):  # every flow panel on one scale; the two state-of-charge panels on theirs
        for c in range(2):
            if (r, c) not in ((0, 0), (n, 0)):
                axes[r, c].sharey(axes[0, 0] if r < n else axes[n, 0])
            if c == 1:
                axes[r, c].tick_params(labelleft=False)
    t0 = int(episodes[0].t[0])
    for c, which in enumerate(("sunny", "cloudy")):
        day = days[which]
        pv_mwh = days["daily_pv_kwh"][day] / 1000.0
        axes[0, c].set_title(f"{which} day: {day_name(t0 + 24 * day)}, PV {pv_mwh:,.1f} MWh", fontsize=11)
        for r, ep in enumerate(episodes):
            ax = axes[r, c]
            series = _day_series(ep, day)
            for key, label, color, lw, ls in _FLOW_STYLE:
                x, y = _hour_steps(series[key])
                ax.step(x, y, where="post", color=color, lw=lw, ls=ls, label=label)
            ax.axhline(0.0, color="#333333", lw=0.6)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(f"{ep.label}\npower (kW)", fontsize=10)
        ax = axes[n, c]
        for ep in episodes:
            series = _day_series(ep, day)
            style = _BASELINE_STYLE.get(ep.name, {"color": _AGENT_COLORS[0], "linestyle": "-"})
            ax.plot(np.arange(len(series["soc"])), series["soc"], lw=1.8, label=ep.label, **style)
        ax.set_ylim(0, 135)
        ax.set_yticks([0, 20, 40, 60, 80, 100])
        ax.grid(alpha=0.3)
        ax.set_xlabel("hour of day")
        ax.xaxis.set_major_locator(MultipleLocator(3))
        ax.set_xlim(0, 24)
        if c == 0:
            ax.set_ylabel("battery state\nof charge (%)", fontsize=10)
    # the power series below the figure; the states of charge in the empty band above 100 %
    flows = [Line2D([], [], color=color, lw=lw, ls=ls) for _, _, color, lw, ls in _FLOW_STYLE]
    fig.legend(flows, [f[1] for f in _FLOW_STYLE], loc="outside lower center", ncols=len(flows), fontsize=9,
               frameon=False)
    axes[n, 0].legend(loc="upper center", ncols=len(episodes), fontsize=8, frameon=False,
                      handlelength=2.2, columnspacing=1.2, borderaxespad=0.2)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def monthly_values(ep: Episode, co2_kg_per_kwh: float) -> dict[str, Any]:
    """Grid import (kWh), CO2 (kg) and peak import (kW) of each calendar month the episode covers."""
    from oe3jax.simulation.calendar import MONTH_NAMES, month_of_hour

    month = month_of_hour()[ep.t % 8760]
    present = sorted(set(month.tolist()))
    grid = ep.flows["grid_import"]
    imp = [float(grid[month == m].sum()) for m in present]
    return {"months": [MONTH_NAMES[m] for m in present], "grid_import_kwh": imp,
            "co2_kg": [v * co2_kg_per_kwh for v in imp],
            "peak_import_kw": [float(grid[month == m].max()) for m in present]}


#: Markers of the monthly plot, so that policies whose lines coincide stay apart.
_MARKERS = {"uncontrolled": "s", "rule": "^", "greedy": "v", "optimum_grid": "D", "optimum_monthly_peaks": "D"}


def _style(ep: Episode, agent_index: int) -> dict[str, Any]:
    """Line style of one policy: agents thick and drawn above the baselines, which often coincide."""
    if ep.kind == "agent":
        return {"color": _AGENT_COLORS[agent_index % len(_AGENT_COLORS)], "linestyle": "-", "lw": 2.0, "zorder": 4}
    return {**_BASELINE_STYLE.get(ep.name, {"color": "#444444", "linestyle": "-."}), "lw": 1.6, "zorder": 3}


def _styles(episodes: Sequence[Episode]) -> list[dict[str, Any]]:
    out, k = [], 0
    for ep in episodes:
        out.append(_style(ep, k))
        k += ep.kind == "agent"
    return out


def plot_monthly(episodes: Sequence[Episode], monthly: Mapping[str, Mapping[str, Any]], co2_kg_per_kwh: float,
                 path: Path, title: str) -> None:
    """Monthly grid import (MWh; CO2 in t on the right axis, the same line) and monthly peak import (kW)."""
    fig = _figure(10.0, 7.0)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for ep, style in zip(episodes, _styles(episodes)):
        m = monthly[ep.name]
        x = np.arange(len(m["months"]))
        mark = {"marker": _MARKERS.get(ep.name, "o"), "ms": 5 if ep.kind == "agent" else 4}
        ax1.plot(x, np.asarray(m["grid_import_kwh"]) / 1000.0, label=ep.label, **mark, **style)
        ax2.plot(x, m["peak_import_kw"], label=ep.label, **mark, **style)
    months = monthly[episodes[0].name]["months"]
    ax2.set_xticks(np.arange(len(months)), months)
    ax1.set_ylabel("grid import (MWh)")
    factor = co2_kg_per_kwh  # MWh -> t: the same factor
    right = ax1.secondary_yaxis("right", functions=(lambda v: v * factor, lambda v: v / factor))
    right.set_ylabel(f"CO2 (t; {co2_kg_per_kwh:g} kg/kWh)")
    ax2.set_ylabel("monthly peak import (kW)")
    ax2.set_xlabel("month")
    ax1.set_title("grid import and CO2 per month (months of 28 to 31 days: part of the zigzag is their length)",
                  fontsize=10)
    ax2.set_title("highest hourly grid import per month (what a demand charge bills)", fontsize=10)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def hidden_under(curves: Sequence[tuple[Episode, np.ndarray, float]], rel_tol: float = 0.002) -> list[str]:
    """``"uncontrolled: under sac"`` for each curve that another one drawn above it covers (every point
    within ``rel_tol`` of the larger's peak), so that a reader knows where the missing lines are."""
    out = []
    for i, (ep, y, z) in enumerate(curves):
        tol = rel_tol * max(float(np.abs(y).max(initial=0.0)), 1.0)
        above = [e.label for j, (e, y2, z2) in enumerate(curves)
                 if j != i and (z2, j) > (z, i) and y2.shape == y.shape and np.abs(y2 - y).max(initial=0.0) <= tol]
        if above:
            out.append(f"{ep.label}: under {above[-1]}")
    return out


def plot_load_duration(episodes: Sequence[Episode], path: Path, title: str, top_hours: int) -> None:
    """The hourly grid import sorted from highest to lowest: the whole episode, and its top hours."""
    fig = _figure(11.0, 4.6)
    ax1, ax2 = fig.subplots(1, 2)
    tops: list[tuple[Episode, np.ndarray, float]] = []
    for ep, style in zip(episodes, _styles(episodes)):
        curve = np.sort(ep.flows["grid_import"])[::-1]
        hours = np.arange(1, curve.size + 1)
        ax1.plot(hours, curve, label=ep.label, **style)
        ax2.plot(hours[:top_hours], curve[:top_hours], label=ep.label, **style)
        tops.append((ep, curve[:top_hours], style["zorder"]))
    hidden = hidden_under(tops)
    if hidden:
        ax2.text(0.98, 0.97, "\n".join(hidden), transform=ax2.transAxes, ha="right", va="top", fontsize=8.5,
                 color="#333333", bbox={"facecolor": "white", "edgecolor": "#bbbbbb", "alpha": 0.9, "pad": 3})
    ax1.set_title("all hours", fontsize=10)
    ax2.set_title(f"the {top_hours} highest hours", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel("hours at or above this import")
        ax.set_ylabel("grid import (kW)")
        ax.grid(alpha=0.3)
    ax1.set_xlim(0, None)
    ax2.set_xlim(0, top_hours)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


