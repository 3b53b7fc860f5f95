"""Progress output of a run: the per-chunk CSV, the console line, optional TensorBoard.

``progress/<algo>_progress.csv`` holds one row per seed per chunk. Its first seven columns are a
public contract; the episode KPIs are means over the episodes that ended in the chunk (empty when
none did); ``steps_per_s`` is wall-clock, the only column that differs between two runs of the
same command. On resume the file is cut back to the rows the checkpoint recorded, by writing the
kept rows to a temporary file and renaming it over the old one: the only copy is never truncated.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oe3jax.training.files import append_text, atomic_write_text, storage_error

CSV_COLUMNS = (
    "episode",        # episodes finished so far by this seed (all its environments together)
    "step",           # env steps done so far by this seed (all its environments together)
    "reward_avg",
    "actor_loss",
    "critic_loss",
    "entropy",
    "lr",
    "steps_per_s",    # env steps per second of the whole program (all seeds), this chunk
    "co2_kg",
    "grid_kwh",
    "unmet_kwh",
    "episode_return",
    "seed",           # the seed value (cfg.seed + index)
    "update",         # updates done so far
    # algorithm-specific diagnostics (empty where an algorithm does not report them)
    "alpha",          # SAC entropy temperature
    "q_mean",         # SAC mean Q of the sampled batches
    "buffer_fill",    # SAC replay-buffer fill fraction
    "approx_kl",      # PPO approximate KL between the rollout and the updated policy
    "clip_frac",      # PPO fraction of clipped ratios
    "nonfinite_skips",  # gradient steps skipped as non-finite in the chunk
    "loss_scale",     # dynamic loss scale (float16)
)
EXTRA_METRICS = ("alpha", "q_mean", "buffer_fill", "approx_kl", "clip_frac", "nonfinite_skips", "loss_scale")
TIMING_COLUMNS = ("steps_per_s",)
_EPISODE_COLUMNS = (("co2_kg", "ep_co2_kg"), ("grid_kwh", "ep_grid_kwh"),
                    ("unmet_kwh", "ep_unmet_kwh"), ("episode_return", "ep_return"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


class ProgressCSV:
    """``progress/<algo>_progress.csv``, kept to ``keep_rows`` data rows and then appended to."""

    def __init__(self, path: Path, keep_rows: int, warn: Any = None):
        warn = warn or sys.stderr
        self.path = Path(path)
        lines: list[str] = []
        if keep_rows > 0:
            if not self.path.is_file():
                print(f"warning: {self.path} is missing; its first {keep_rows} rows are lost", file=warn)
            else:
                try:
                    with open(self.path, encoding="utf-8", newline="") as fh:  # keep csv's \r\n
                        lines = fh.read().splitlines(keepends=True)
                except OSError as exc:
                    raise storage_error(self.path, exc, "read") from None
                if len(lines) - 1 < keep_rows:
                    print(f"warning: {self.path} holds {max(len(lines) - 1, 0)} rows, the checkpoint "
                          f"recorded {keep_rows}", file=warn)
                lines = lines[: keep_rows + 1]
        header = _csv_text([CSV_COLUMNS])
        if lines and lines[0] != header:
            print(f"warning: {self.path} has another header; rewritten with the current columns", file=warn)
            lines[0] = header
        self.rows = max(len(lines) - 1, 0)
        atomic_write_text(self.path, "".join(lines) if lines else header)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        append_text(self.path, _csv_text([[_cell(row.get(col)) for col in CSV_COLUMNS] for row in rows]))
        self.rows += len(rows)


def chunk_rows(
    metrics: Mapping[str, np.ndarray], cfg: Mapping[str, Any], episodes_done: list[int],
    step: int, update: int, steps_per_s: float,
) -> list[dict[str, Any]]:
    """The CSV rows of one chunk (one per seed); updates ``episodes_done`` in place."""
    rows = []
    for i in range(cfg["seeds"]):
        m = {k: np.asarray(v)[i] for k, v in metrics.items()}
        n_ep = int(round(float(m.get("episodes", 0.0))))
        episodes_done[i] += n_ep
        row: dict[str, Any] = {
            "episode": episodes_done[i], "step": step, "update": update, "seed": cfg["seed"] + i,
            "steps_per_s": round(steps_per_s, 1),
        }
        for key in ("reward_avg", "actor_loss", "critic_loss", "entropy", "lr") + EXTRA_METRICS:
            row[key] = float(m[key]) if key in m else None
        if n_ep > 0:
            for col, key in _EPISODE_COLUMNS:
                row[col] = float(m[key]) / n_ep if key in m else None
        rows.append(row)
    return rows


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(_dt.timedelta(seconds=int(round(seconds))))


class TensorBoard:
    """Chunk metrics as TensorBoard scalars (means over seeds) under ``<run_dir>/tensorboard/<algo>``."""

    def __init__(self, run_dir: Path, name: str):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard" / name))

    def write(self, metrics: Mapping[str, Any], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", float(np.mean(np.asarray(value))), step)

    def close(self) -> None:
        self.writer.close()
