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
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oe3jax.training.files import StorageError, append_text, atomic_write_text, storage_error

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
    "nonfinite_skips",  # gradient steps skipped as non-finite in the chunk (every precision)
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


def csv_columns(swept: Sequence[str] = ()) -> tuple[str, ...]:
    """The CSV's columns: :data:`CSV_COLUMNS`, and for a sweep ``member`` and each swept key."""
    return CSV_COLUMNS + (("member", *swept) if swept else ())


class ProgressCSV:
    """``progress/<algo>_progress.csv``, kept to ``keep_rows`` data rows and then appended to."""

    def __init__(self, path: Path, keep_rows: int, warn: Any = None, columns: Sequence[str] = CSV_COLUMNS):
        warn = warn or sys.stderr
        self.path = Path(path)
        self.columns = tuple(columns)
        lines: list[str] = []
        if keep_rows > 0:
            if not self.path.exists():
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
        header = _csv_text([self.columns])
        if lines and lines[0] != header:
            print(f"warning: {self.path} has another header; rewritten with the current columns", file=warn)
            lines[0] = header
        self.rows = max(len(lines) - 1, 0)
        atomic_write_text(self.path, "".join(lines) if lines else header)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        append_text(self.path, _csv_text([[_cell(row.get(col)) for col in self.columns] for row in rows]))
        self.rows += len(rows)


def chunk_rows(
    metrics: Mapping[str, np.ndarray], cfg: Mapping[str, Any], episodes_done: list[int],
    step: int, update: int, steps_per_s: float, members: Sequence[Mapping[str, float]] = ({},),
) -> list[dict[str, Any]]:
    """The CSV rows of one chunk (one per seed, or per member and seed of a sweep: row
    ``m * seeds + i``); updates ``episodes_done`` in place."""
    rows = []
    seeds = int(cfg["seeds"])
    for i in range(seeds * len(members)):
        m = {k: np.asarray(v)[i] for k, v in metrics.items()}
        n_ep = int(round(float(m.get("episodes", 0.0))))
        episodes_done[i] += n_ep
        row: dict[str, Any] = {
            "episode": episodes_done[i], "step": step, "update": update, "seed": cfg["seed"] + i % seeds,
            "steps_per_s": round(steps_per_s, 1),
        }
        if len(members) > 1 or members[0]:
            row.update(members[i // seeds], member=i // seeds)
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


# --------------------------------------------------------------------------------------------
# Live status: a progress bar (or plain lines) and a heartbeat file other processes can read
# --------------------------------------------------------------------------------------------

def status_path(run_dir: Path, name: str) -> Path:
    """``progress/<algo>_status.json``: what the training process last said about itself."""
    return Path(run_dir) / "progress" / f"{name}_status.json"


def _memory() -> tuple[int | None, dict[str, Any] | None, str]:
    """(host RSS of this process, the first accelerator's memory statistics or None, device name)."""
    import jax

    try:
        import psutil

        rss: int | None = int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - memory figures are informative only
        rss = None
    dev = jax.local_devices()[0]
    stats = None
    try:
        raw = dev.memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends do not report
        raw = None
    if raw:
        stats = {k: int(raw[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in raw}
    return rss, stats, f"{dev.platform}:{getattr(dev, 'device_kind', dev.platform)}"


class LiveStatus:
    """Progress of one agent while it trains.

    On a terminal: a ``rich`` progress bar with steps, steps/s, ETA and the latest reward. Elsewhere
    (CI, logs): a plain line at most every ``print_every_s`` seconds. After every chunk it also
    rewrites ``progress/<algo>_status.json`` atomically (steps, rate, ETA, compile time, process
    id, host and accelerator memory), which ``scripts/status.py`` reads from another terminal. No
    callback runs inside the compiled chunk: everything here happens between chunks.
    """

    def __init__(self, run_dir: Path, name: str, *, total_steps: int, seeds: int, done_steps: int,
                 print_every_s: float, out: Any, extra: Mapping[str, Any] | None = None):
        self.path = status_path(run_dir, name)
        self.name, self.total, self.seeds, self.out = name, int(total_steps), int(seeds), out
        self.print_every_s = print_every_s
        self.extra = dict(extra or {})
        self.started = time.time()
        self.start_steps = self.steps = int(done_steps)
        self.busy_s = 0.0
        self.compile_s = 0.0
        self.rate = math.nan
        self.reward = math.nan
        self._last_print = -math.inf
        self._bar = None
        self._task = None
        if getattr(out, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self._bar = Progress(
                TextColumn(f"[bold]{name}[/bold]"), BarColumn(), TaskProgressColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
                TextColumn("{task.fields[rate]} steps/s  ETA {task.fields[eta]}  reward {task.fields[reward]}"),
                console=Console(file=out), transient=False,
            )
            self._task = self._bar.add_task(name, total=self.total, completed=self.steps, rate="-", eta="?", reward="-")
            self._bar.start()
        self.write("starting")

    def say(self, text: str) -> None:
        """A message that does not tear the bar."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

    def compiled(self, seconds: float) -> None:
        self.compile_s += seconds

    @property
    def eta_s(self) -> float:
        left = (self.total - self.steps) * self.seeds
        return left / self.rate if self.rate and math.isfinite(self.rate) and self.rate > 0 else math.nan

    def chunk(self, steps: int, seconds: float, reward: float) -> None:
        """After a chunk: ``steps`` env steps per seed done so far, the chunk's wall time."""
        self.busy_s += seconds
        self.steps = int(steps)
        self.rate = (self.steps - self.start_steps) * self.seeds / max(self.busy_s, 1e-9)
        self.reward = float(reward)
        self.write("training")
        if self._bar is not None:
            self._bar.update(self._task, completed=self.steps, rate=f"{self.rate:,.0f}",
                             eta=fmt_duration(self.eta_s), reward=f"{self.reward:.4g}")
            return
        now = time.perf_counter()
        if now - self._last_print >= self.print_every_s or self.steps >= self.total:
            self._last_print = now
            print(f"[{self.name}] {self.steps:>12,}/{self.total:,} steps ({100.0 * self.steps / self.total:5.1f}%)  "
                  f"{self.rate:,.0f} steps/s  ETA {fmt_duration(self.eta_s)}  reward {self.reward:.4g}",
                  file=self.out, flush=True)

    def write(self, phase: str) -> None:
        rss, device_memory, device = _memory()
        doc = {
            "algo": self.name, "phase": phase, "pid": os.getpid(),
            "started_at": self.started, "updated_at": time.time(),
            "step": self.steps, "total_steps": self.total, "seeds": self.seeds,
            "steps_per_s": None if not math.isfinite(self.rate) else self.rate,
            "eta_s": None if not math.isfinite(self.eta_s) else self.eta_s,
            "compile_s": self.compile_s, "train_s": self.busy_s, "reward_avg": None if math.isnan(self.reward) else self.reward,
            "device": device, "device_memory": device_memory, "host_rss_bytes": rss, **self.extra,
        }
        try:
            atomic_write_text(self.path, json.dumps(doc, indent=1))
        except StorageError:
            pass  # the status file is informative; a full disk is reported by the files that matter

    def close(self, phase: str) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        self.write(phase)
