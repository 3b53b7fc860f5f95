"""Early stopping after the fact: each training seed's checkpoint of the best validation return.

Training keeps its checkpoints (``checkpoint.max_to_keep``); each is judged by the mean return of
its deterministic policy over validation conditions (years of the training set, arrival seeds of
one's choice), and each seed keeps the checkpoint of the highest return, the later one on a tie.
``scripts/peak_results.py select`` runs it on a run directory.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def best_steps(steps: Sequence[int], returns: np.ndarray) -> list[int]:
    """Per seed, the step of the highest return (the later step on a tie).

    ``returns[i, k]`` is the validation return of seed ``k`` at ``steps[i]``; ``steps`` ascend.
    """
    steps = [int(s) for s in steps]
    ret = np.asarray(returns, np.float64)
    if ret.ndim != 2 or ret.shape[0] != len(steps) or not steps:
        raise ValueError(f"returns: expected shape (steps={len(steps)}, seeds), got {ret.shape}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"steps: expected ascending steps, got {steps}")
    if not np.all(np.isfinite(ret)):
        raise ValueError("returns: expected finite returns; a checkpoint's validation return is not finite")
    last_best = len(steps) - 1 - np.argmax(ret[::-1], axis=0)
    return [steps[i] for i in last_best]


__all__ = ["best_steps"]
