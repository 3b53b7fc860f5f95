"""Reading a run directory's files as they are, damaged or not: its agents and progress CSVs.

Shared by the live status (``oe3jax.training.status``) and the report (``oe3jax.evaluation.report``).
A directory that is not a run raises :class:`RunDirError` with one line; a damaged or partial
progress CSV gives the rows that can be read and a note saying what was left out.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float (a CSV cell, a JSON value), or None if it is not one."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


class RunDirError(ValueError):
    """The directory is not a run directory (or its configuration cannot be read)."""


def run_agents(run_dir: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``(agents in the pipeline's order, resolved config of each)`` from ``run_dir/config.yaml``."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory" if run_dir.exists() else f"{run_dir}: no such directory")
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no config.yaml); "
                          "give the directory train.py wrote (its --run-dir)")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunDirError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(cfg, Mapping) or "algo" not in cfg:
        raise RunDirError(f"{path} is not a run's configuration (no algo)")
    if cfg["algo"] == "all":
        agents = cfg.get("agents") or {}
        if not isinstance(agents, Mapping):
            raise RunDirError(f"{path} is not a run's configuration (agents is not a mapping)")
        return [str(k) for k in agents], {str(k): dict(v) for k, v in agents.items() if isinstance(v, Mapping)}
    return [str(cfg["algo"])], {str(cfg["algo"]): dict(cfg)}


def read_progress_rows(path: Path, notes: list[str], columns: Sequence[str] = ()) -> list[dict[str, str]]:
    """The complete rows of a progress CSV as dicts of strings (``[]`` if there is no file).

    What cannot be used is appended to ``notes`` (one line each): an unreadable or empty file, a
    last line cut off by a kill or a write in progress (left out), a header that does not start
    with ``columns``, rows with the wrong number of cells (left out).
    """
    path = Path(path)
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
        if not lines:
            return []
    try:
        rows = list(csv.reader(lines))
    except csv.Error:
        notes.append(f"{path.name}: not a CSV file")
        return []
    header, body = rows[0], rows[1:]
    if tuple(header[: len(columns)]) != tuple(columns)[: len(header)]:
        notes.append(f"{path.name}: unexpected header")
    good = [dict(zip(header, r)) for r in body if len(r) == len(header)]
    if len(good) != len(body):
        notes.append(f"{path.name}: {len(body) - len(good)} malformed row(s) ignored")
    return good
