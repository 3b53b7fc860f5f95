#!/usr/bin/env python
"""Train SAC / PPO / A2C on an EV-charging scenario; rerunning the same command resumes.

    python scripts/train.py --algo ppo
    python scripts/train.py --algo all --seeds 3 --run-dir results/runs/study
    python scripts/train.py --config configs/smoke.yaml --set ppo.lr=1e-4 --total-steps 50000
    python scripts/train.py --algo ppo --fresh         # start over (old run renamed *.old-<time>)

See the README for the configuration keys and the run directory's layout.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oe3jax.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
