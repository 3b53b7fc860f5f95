"""Where a run stands, read from its directory alone (usable from another terminal while it trains).

:func:`run_status` gathers, per agent (in the pipeline's order for ``--algo all``): steps done out
of the total, the rate and the time left with a finishing clock time, the checkpoints saved (how
many, the last one and its age), the latest losses, entropy, reward and learning rate from the
progress CSV, whether the training process is alive, its host memory, the accelerator memory it
last reported, and the replay buffer. Sources: ``config.yaml``, ``progress/<algo>_progress.csv``,
the checkpoints' metadata and ``progress/<algo>_status.json`` (rewritten by the training process
after every chunk). Nothing is written.

A damaged or partial source is reported as such (``notes``), never as a traceback; a directory
that is not a run raises :class:`StatusError` with one line.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from oe3jax.training.progress import CSV_COLUMNS, fmt_duration, status_path

_LATEST = ("reward_avg", "actor_loss", "critic_loss", "entropy", "lr", "alpha", "buffer_fill", "nonfinite_skips")


class StatusError(ValueError):
    """The directory is not a run directory (or cannot be read)."""


def _agents(run_dir: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise StatusError(f"{run_dir} is a file, not a run directory" if run_dir.exists() else f"{run_dir}: no such directory")
    if not path.is_file():
        raise StatusError(f"{run_dir} is not a run directory (no config.yaml); "
                          "give the directory train.py wrote (its --run-dir)")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StatusError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(cfg, Mapping) or "algo" not in cfg:
        raise StatusError(f"{path} is not a run's configuration (no algo)")
    if cfg["algo"] == "all":
        agents = cfg.get("agents") or {}
        return list(agents), {k: dict(v) for k, v in agents.items()}
    return [str(cfg["algo"])], {str(cfg["algo"]): dict(cfg)}


def _csv(path: Path, notes: list[str]) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        notes.append(f"{path.name}: cannot be read ({type(exc).__name__})")
        return []
    lines = text.splitlines()
    if not lines:
        notes.append(f"{path.name}: empty")
        return []
    if not text.endswith("\n"):
        notes.append(f"{path.name}: its last line is cut off (a write in progress or a kill); ignored")
        lines = lines[:-1]
    rows = list(csv.reader(lines))
    header, body = rows[0], rows[1:]
    if tuple(header[: len(CSV_COLUMNS)]) != CSV_COLUMNS[: len(header)]:
        notes.append(f"{path.name}: unexpected header")
    good = [dict(zip(header, r)) for r in body if len(r) == len(header)]
    if len(good) != len(body):
        notes.append(f"{path.name}: {len(body) - len(good)} malformed row(s) ignored")
    return good


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _alive(pid: int | None, started_at: float | None) -> bool:
    """Whether the process that wrote the status file still runs (and is the same process)."""
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(int(pid))
        return started_at is None or proc.create_time() <= float(started_at) + 1.0
    except Exception:  # noqa: BLE001 - no such process, or no permission: not ours
        return False


def _rss(pid: int | None) -> int | None:
    try:
        import psutil

        return int(psutil.Process(int(pid)).memory_info().rss)
    except Exception:  # noqa: BLE001
        return None


def _checkpoints(run_dir: Path, name: str, notes: list[str]) -> dict[str, Any]:
    from oe3jax.training.checkpoint import CheckpointError, complete_steps, read_meta

    directory = run_dir / "checkpoints" / name
    steps = complete_steps(directory)
    out: dict[str, Any] = {"count": len(steps), "steps": steps, "last": steps[-1] if steps else None,
                           "last_age_s": None, "final": False, "env_steps_per_seed": 0}
    if steps:
        last = directory / str(steps[-1])
        out["last_age_s"] = max(0.0, time.time() - last.stat().st_mtime)
        try:
            meta = read_meta(last)
            out["final"] = bool(meta.get("final"))
            out["env_steps_per_seed"] = int(meta.get("env_steps_per_seed", 0))
        except CheckpointError as exc:
            notes.append(str(exc).split(";")[0])
    return out


def agent_status(run_dir: Path, name: str, cfg: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """Everything known of one agent of the run (see the module docstring)."""
    now = time.time() if now is None else now
    notes: list[str] = []
    rows = _csv(run_dir / "progress" / f"{name}_progress.csv", notes)
    seeds = int(cfg.get("seeds", 1))
    last = rows[-seeds:] if rows else []
    hb: dict[str, Any] = {}
    spath = status_path(run_dir, name)
    if spath.is_file():
        try:
            hb = json.loads(spath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            notes.append(f"{spath.name}: cannot be read")
    ckpt = _checkpoints(run_dir, name, notes)
    total = int(hb.get("total_steps") or cfg.get("total_steps") or 0)
    done = max([int(_num(r.get("step")) or 0) for r in last] + [int(hb.get("step") or 0), ckpt["env_steps_per_seed"]])
    alive = hb.get("phase") != "finished" and _alive(hb.get("pid"), hb.get("started_at"))
    rate = _num(hb.get("steps_per_s"))
    if rate is None and rows:
        rates = [_num(r.get("steps_per_s")) for r in rows[-3 * seeds:]]
        rates = [r for r in rates if r]
        rate = sum(rates) / len(rates) if rates else None
    finished = ckpt["final"] and done >= total
    if finished:
        state = "finished" if hb.get("phase") in (None, "finished") or not alive else "evaluating"
        evaluation = run_dir / "evaluation" / f"{name}.json"
        if evaluation.is_file():
            state = "finished"
    elif done == 0 and not alive:
        state = "not started"
    elif alive:
        state = "training" if hb.get("phase") != "starting" else "compiling"
    else:
        state = "stopped"
    eta = None
    if not finished and rate and total:
        eta = max(total - done, 0) * seeds / rate
    latest = {}
    for key in _LATEST:
        vals = [_num(r.get(key)) for r in last]
        vals = [v for v in vals if v is not None]
        if vals:
            latest[key] = sum(vals) / len(vals)
    return {
        "algo": name, "state": state, "step": done, "total_steps": total, "seeds": seeds,
        "fraction": (done / total) if total else None, "steps_per_s": rate, "eta_s": eta,
        "finish_at": None if eta is None or state not in ("training", "compiling") else now + eta,
        "checkpoints": ckpt, "latest": latest, "csv_rows": len(rows),
        "alive": alive, "pid": hb.get("pid"), "phase": hb.get("phase"),
        "updated_age_s": None if not hb.get("updated_at") else max(0.0, now - float(hb["updated_at"])),
        "host_rss_bytes": _rss(hb.get("pid")) if alive else hb.get("host_rss_bytes"),
        "device": hb.get("device"), "device_memory": hb.get("device_memory"),
        "compile_s": hb.get("compile_s"),
        "buffer": None if "buffer_capacity" not in hb else {
            "capacity": hb["buffer_capacity"], "bytes": hb.get("buffer_bytes"), "fill": latest.get("buffer_fill")},
        "notes": notes,
    }


def run_status(run_dir: str | Path, now: float | None = None) -> dict[str, Any]:
    """The status of every agent of a run and of the whole pipeline."""
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    order, cfgs = _agents(run_dir)
    agents = [agent_status(run_dir, name, cfgs[name], now) for name in order]
    left, known = 0.0, True
    for a in agents:
        if a["state"] == "finished":
            a["pipeline_finish_at"] = None
            continue
        if a["eta_s"] is None:
            known = False
        else:
            left += a["eta_s"]
        a["pipeline_finish_at"] = now + left if known and any(x["alive"] for x in agents) else None
    return {
        "run_dir": str(run_dir), "now": now, "agents": agents,
        "finished": all(a["state"] == "finished" for a in agents),
        "eta_s": left if known else None,
        "finish_at": now + left if known and any(a["alive"] for a in agents) else None,
        "alive": any(a["alive"] for a in agents),
    }


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

def _bar(fraction: float | None, width: int = 24) -> str:
    f = 0.0 if fraction is None else min(max(fraction, 0.0), 1.0)
    n = int(round(f * width))
    return "[" + "#" * n + "." * (width - n) + "]"


def _clock(ts: float | None) -> str:
    return "-" if ts is None else _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _bytes(n: Any) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1024
    return f"{n:,.1f} TiB"


def format_status(st: Mapping[str, Any]) -> str:
    """The status as text, one block per agent."""
    lines = [f"run {st['run_dir']}  ({'process alive' if st['alive'] else 'no training process running'})"]
    for a in st["agents"]:
        pct = "-" if a["fraction"] is None else f"{100.0 * a['fraction']:5.1f}%"
        rate = "-" if a["steps_per_s"] is None else f"{a['steps_per_s']:,.0f} steps/s"
        eta = "-" if a["eta_s"] is None else fmt_duration(a["eta_s"])
        head = (f"{a['algo']:>4}  {a['state']:<11} {_bar(a['fraction'])} {pct}  "
                f"{a['step']:,}/{a['total_steps']:,} steps x {a['seeds']} seed(s)  {rate}")
        if a["state"] != "finished":
            head += f"  ETA {eta}"
            if a["finish_at"] is not None:
                head += f", done at {_clock(a['finish_at'])}"
            if a.get("pipeline_finish_at") is not None and len(st["agents"]) > 1:
                head += f" (pipeline at {_clock(a['pipeline_finish_at'])})"
        lines.append(head)
        c = a["checkpoints"]
        age = "-" if c["last_age_s"] is None else fmt_duration(c["last_age_s"]) + " ago"
        lines.append(f"      checkpoints: {c['count']} (last {c['last']}, {age}{', final' if c['final'] else ''})")
        if a["latest"]:
            lines.append("      latest: " + ", ".join(f"{k} {v:.4g}" for k, v in a["latest"].items()))
        mem = f"host {_bytes(a['host_rss_bytes'])}"
        dm = a.get("device_memory") or {}
        if dm:
            mem += f", {a['device']} {_bytes(dm.get('bytes_in_use'))} in use (peak {_bytes(dm.get('peak_bytes_in_use'))}" \
                   f" of {_bytes(dm.get('bytes_limit'))})"
        elif a.get("device"):
            mem += f", device {a['device']}"
        if a["pid"]:
            lines.append(f"      process {a['pid']} {'alive' if a['alive'] else 'not running'}; memory {mem}"
                         + ("" if a["compile_s"] is None else f"; compile {a['compile_s']:.1f} s"))
        if a["buffer"]:
            b = a["buffer"]
            fill = "-" if b["fill"] is None else f"{100.0 * b['fill']:.0f} % full"
            lines.append(f"      replay buffer: {b['capacity']:,} transitions, {_bytes(b['bytes'])}, {fill}")
        for note in a["notes"]:
            lines.append(f"      note: {note}")
    if not st["finished"]:
        lines.append("pipeline: " + ("ETA unknown until every agent has started" if st["eta_s"] is None else
                                     f"ETA {fmt_duration(st['eta_s'])}, done at {_clock(st['finish_at'])}"))
    else:
        lines.append("pipeline: finished")
    return "\n".join(lines)
