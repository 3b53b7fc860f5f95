"""Interval estimates over training seeds and evaluation conditions, and shares of the optimum's gain.

Scores are matrices ``runs x conditions``: one row per training seed of an agent (one row for a
deterministic baseline), one column per evaluation condition (arrival seed x weather year).

- :func:`interval` gives the mean (and the interquartile mean) with a 95 % percentile-bootstrap
  confidence interval, stratified as rliable's ``StratifiedBootstrap(task_bootstrap=True)`` is:
  every replicate resamples the conditions with replacement, then, within each drawn condition,
  the runs with replacement. The interval therefore covers the spread over training seeds *and*
  over conditions; a baseline (one run) has the spread over conditions only.
- :func:`shares` gives, per run and condition, the share of a reference gain an agent reaches:
  ``(start - agent) / (start - optimum)`` for a KPI where lower is better. With ``start`` the
  uncontrolled baseline it is the *share of the optimum's gain*; with the rule (or the strongest
  baseline) the *share of the gap closed* (negative when the agent is worse than that baseline).
  A condition whose denominator is about zero (``|start - optimum| <= REL_TOL * |start|``) has no
  share: it is counted and left out, and a KPI with no condition left is reported as undefined.

Pure NumPy: no JAX and nothing of the simulation, so every number here can be recomputed from the
per-condition values that ``statistics.json`` keeps.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

#: Coverage of the confidence intervals.
CONFIDENCE = 0.95
#: Bootstrap replicates of every interval (rliable's default is 50,000; 10,000 puts the 2.5 %
#: and 97.5 % percentiles within about a tenth of a standard error of their limits).
BOOTSTRAP_REPS = 10_000
#: Seed of the bootstrap's resampling: the same data give the same interval.
BOOTSTRAP_SEED = 0
#: A share is undefined in a condition where ``|start - optimum|`` is at most this fraction of
#: ``|start|`` (the optimum gains nothing there, so any ratio would be noise).
REL_TOL = 1e-4
#: Elements of one block of resampled scores (replicates x runs x conditions), to bound memory.
_BLOCK = 4_000_000


def iqm(values: np.ndarray, axis: Any = None) -> np.ndarray:
    """Interquartile mean: the mean of the middle half (25 % trimmed at each end) of ``values``.

    Trims ``floor(0.25 * n)`` values at each end, as ``scipy.stats.trim_mean(x, 0.25)`` does.
    """
    x = np.asarray(values, np.float64)
    if axis is None:
        x, axis = x.reshape(-1), 0
    x = np.sort(x, axis=axis)
    n = x.shape[axis]
    cut = int(np.floor(0.25 * n))
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _as_matrix(scores: Any) -> np.ndarray:
    x = np.asarray(scores, np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"scores: expected a non-empty matrix runs x conditions, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores: expected finite values")
    return x


def bootstrap_replicates(
    scores: Any,
    statistics: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, np.ndarray]:
    """Each statistic over ``reps`` stratified resamples of ``scores`` (``runs x conditions``).

    A resample draws ``conditions`` condition indices with replacement, then for each drawn column
    ``runs`` run indices with replacement (independently per column). Each statistic maps a stack
    of resamples ``(block, runs, conditions)`` to one value per resample.
    """
    x = _as_matrix(scores)
    runs, conds = x.shape
    rng = np.random.default_rng(seed)
    per_block = max(1, _BLOCK // x.size)
    out: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    done = 0
    while done < reps:
        b = min(per_block, reps - done)
        task = rng.integers(0, conds, size=(b, 1, conds))
        run = rng.integers(0, runs, size=(b, runs, conds))
        sample = x[run, task]
        for name, fn in statistics.items():
            out[name].append(np.asarray(fn(sample), np.float64))
        done += b
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _mean_of_sample(sample: np.ndarray) -> np.ndarray:
    return sample.mean(axis=(1, 2))


def _iqm_of_sample(sample: np.ndarray) -> np.ndarray:
    return iqm(sample.reshape(sample.shape[0], -1), axis=1)


def interval(
    scores: Any,
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Mean and IQM of ``scores`` (``runs x conditions``, or one row) with percentile-bootstrap intervals.

    Returns ``{"mean", "ci": [low, high], "iqm", "iqm_ci": [low, high], "n_runs", "n_conditions"}``;
    the interval's limits are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles
    (linear interpolation) of the statistic over the resamples of :func:`bootstrap_replicates`.
    """
    x = _as_matrix(scores)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a fraction in (0, 1), got {confidence!r}")
    reps_out = bootstrap_replicates(x, {"mean": _mean_of_sample, "iqm": _iqm_of_sample}, reps, seed)
    q = [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)]
    return {
        "mean": float(x.mean()),
        "ci": [float(v) for v in np.percentile(reps_out["mean"], q)],
        "iqm": float(iqm(x)),
        "iqm_ci": [float(v) for v in np.percentile(reps_out["iqm"], q)],
        "n_runs": int(x.shape[0]),
        "n_conditions": int(x.shape[1]),
    }


def share_matrix(agent: Any, start: Any, optimum: Any, rel_tol: float = REL_TOL) -> tuple[np.ndarray, np.ndarray]:
    """``(shares, defined)``: ``(start - agent) / (start - optimum)`` per run and condition.

    ``agent`` is ``runs x conditions`` (or one row); ``start`` and ``optimum`` one value per
    condition. ``defined[c]`` is False where ``|start - optimum| <= rel_tol * |start|``; the shares of
    those conditions are left out (the returned matrix has only the defined columns).
    """
    a = _as_matrix(agent)
    s = np.asarray(start, np.float64).reshape(-1)
    o = np.asarray(optimum, np.float64).reshape(-1)
    if s.shape != (a.shape[1],) or o.shape != (a.shape[1],):
        raise ValueError(f"start, optimum: expected {a.shape[1]} values (one per condition), "
                         f"got {s.shape[0]} and {o.shape[0]}")
    den = s - o
    defined = np.abs(den) > rel_tol * np.abs(s)
    return (s[None, defined] - a[:, defined]) / den[None, defined], defined


def shares(
    agent: Any,
    start: Any,
    optimum: Any,
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
    rel_tol: float = REL_TOL,
) -> dict[str, Any]:
    """The share of the ``start``-to-``optimum`` gain that ``agent`` reaches, averaged with its interval.

    Returns :func:`interval`'s fields over the defined conditions, plus ``"defined": True`` and
    ``"undefined_conditions"`` (how many were left out); or ``{"defined": False, "reason": ...}``
    when no condition has a gain to share.
    """
    ratio, defined = share_matrix(agent, start, optimum, rel_tol)
    left_out = int((~defined).sum())
    if not defined.any():
        return {"defined": False, "undefined_conditions": left_out,
                "reason": "the optimum gains nothing over the reference in any condition"}
    return {"defined": True, "undefined_conditions": left_out, **interval(ratio, reps, seed)}


def strongest(means: Mapping[str, float]) -> str:
    """The name with the lowest mean (ties: the first listed): the strongest baseline on a KPI
    where lower is better."""
    if not means:
        raise ValueError("means: expected at least one baseline")
    return min(means, key=lambda name: (means[name], list(means).index(name)))
