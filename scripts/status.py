#!/usr/bin/env python
"""Where a run stands, per agent and for the pipeline, from its directory alone.

    python scripts/status.py results/runs/all-iquitos-128            # once
    python scripts/status.py results/runs/all-iquitos-128 --watch    # refreshed every 5 s
    python scripts/status.py results/runs/all-iquitos-128 --json     # for scripts
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oe3jax.training.status import StatusError, format_status, run_status  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="status.py", description="Where a training run stands.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 5) until the run finishes or Ctrl-C")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    if args.watch is not None and not args.watch > 0:
        print("error: --watch: expected a number of seconds > 0", file=sys.stderr)
        return 2
    try:
        while True:
            st = run_status(args.run_dir)
            text = json.dumps(st, indent=1) if args.json else format_status(st)
            if args.watch is not None and sys.stdout.isatty():
                print("\033[2J\033[H", end="")
            print(text, flush=True)
            if args.watch is None or st["finished"]:
                return 0
            time.sleep(args.watch)
    except StatusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
