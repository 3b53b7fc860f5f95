#!/usr/bin/env python
"""Print where a run directory stands: per algorithm, steps done, checkpoints, last progress row.

    python scripts/status.py results/runs/ppo-iquitos-128
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oe3jax.training.checkpoint import CheckpointError, complete_steps, read_meta  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: status.py RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    ckpt_root = run_dir / "checkpoints"
    if not ckpt_root.is_dir():
        print(f"error: {run_dir} has no checkpoints/ directory", file=sys.stderr)
        return 2
    for algo_dir in sorted(p for p in ckpt_root.iterdir() if p.is_dir()):
        steps = complete_steps(algo_dir)
        if not steps:
            print(f"{algo_dir.name}: no complete checkpoint yet")
            continue
        try:
            meta = read_meta(algo_dir / str(steps[-1]))
        except CheckpointError as exc:
            print(f"{algo_dir.name}: {exc}")
            continue
        total = meta["config"]["total_steps"]
        state = "finished" if meta.get("final") else "in progress"
        print(f"{algo_dir.name}: {state}, {meta['env_steps_per_seed']:,}/{total:,} env steps per seed "
              f"({meta['episodes_done']} episodes), checkpoints at {steps} env steps per env")
        csv_path = run_dir / "progress" / f"{algo_dir.name}_progress.csv"
        if csv_path.is_file():
            with open(csv_path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if rows:
                last = rows[-1]
                print("  last row: " + ", ".join(f"{k}={v}" for k, v in last.items() if v != ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
