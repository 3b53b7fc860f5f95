#!/usr/bin/env python
"""The report of one or more training runs: Markdown with PNG plots.

    python scripts/report.py results/runs/all-iquitos-128                 # into RUN_DIR/report/
    python scripts/report.py runs/ppo runs/sac --out results/report        # several runs side by side
    python scripts/report.py results/runs/all-iquitos-128 --no-episodes    # learning curves and KPIs only

Learning curves per agent (mean and band over the training seeds), the KPI table of agents and
baselines with 95 % intervals, the share of the optimum's gain and of the rule-to-optimum gap, each
agent judged against the strongest baseline (from
``evaluation/statistics.json`` when ``scripts/evaluate.py RUN_DIR`` made one, otherwise from the
end-of-training evaluation), and, on the end-of-training evaluation's episode: the dispatch of the
best agent beside the evening rule and the optimum over a typical sunny and cloudy day, monthly grid
import, CO2 and peak by policy, and the load-duration curve. ``python scripts/train.py --algo all``
writes the same report into its run directory when it ends.

A run killed mid-way, not evaluated, or with damaged files gives a report marked partial that lists
what is missing (exit 0); a directory that is not a run, or an output that cannot be written, exits
2 with one ``error:`` line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="report.py", description="The report of training runs: Markdown with PNG plots.")
    p.add_argument("run_dir", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", metavar="DIR", help="output directory (default RUN_DIR/report; needed with several runs)")
    p.add_argument("--no-episodes", action="store_true",
                   help="skip the episodes behind the dispatch, monthly and load-duration plots (no policy is loaded)")
    args = p.parse_args(argv)
    if args.out is None and len(args.run_dir) > 1:
        print("error: --out: give an output directory when reporting several runs", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out is not None else Path(args.run_dir[0]) / "report"
    command = "python scripts/report.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        from oe3jax.evaluation.report import ReportError, write_report
        from oe3jax.training.policy import load_policies
        from oe3jax.training.status import checkpoint_summary

        def load(path: Path, algo: str) -> list:
            return load_policies(path, algo=algo)

        report = write_report(args.run_dir, out, load_policies=None if args.no_episodes else load,
                              checkpoints=checkpoint_summary, command=command)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output directory filled up or vanished while writing
        print(f"error: {out}: cannot be written ({exc.strerror or type(exc).__name__})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"report written to {report.path}")
    for path in report.files:
        if path != report.path:
            print(f"  {path}")
    if report.partial:
        print("partial report; missing:")
        for item in report.missing:
            print(f"  - {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
