"""A tiny reference run shared by the runner and checkpoint tests (trained once per session)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import jax
import numpy as np

import dummy_algo
from oe3jax.training.cli import run
from oe3jax.training.progress import TIMING_COLUMNS

# 2 envs x 8 steps per update; 8 updates; a checkpoint (and a chunk) every 2 updates (16 steps
# per env); episodes of 24 steps, so episodes end in the 2nd and 3rd chunks only.
SEEDS = 3
ARGV = [
    "--algo", "dummy", "--scenario", "pendulum", "--total-steps", "128", "--seeds", str(SEEDS),
    "--set", "dummy.num_envs=2", "--set", "dummy.num_steps=8", "--set", "env.episode_len=24",
    "--set", "checkpoint.every=16", "--set", "log.print_every_s=0",
]


def train(run_dir: Path, extra: list[str] | None = None, comps=None, **kwargs):
    return run(ARGV + ["--run-dir", str(run_dir)] + (extra or []), comps or dummy_algo.components(), **kwargs)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def read_rows(run_dir: Path, algo: str = "dummy", drop_timing: bool = True) -> list[dict[str, str]]:
    with open(run_dir / "progress" / f"{algo}_progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if drop_timing:
        for row in rows:
            for col in TIMING_COLUMNS:
                row.pop(col)
    return rows


def assert_same_bits(a, b) -> None:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8))


_BASELINE: dict[str, object] = {}


def baseline(tmp_path_factory):
    """``(run_dir, result)`` of the uninterrupted reference run, trained once per session."""
    if not _BASELINE:
        run_dir = tmp_path_factory.mktemp("baseline") / "run"
        (result,) = train(run_dir)
        _BASELINE.update(run_dir=run_dir, result=result)
    return _BASELINE["run_dir"], _BASELINE["result"]
