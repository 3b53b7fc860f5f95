"""``python -m oe3jax.training --algo ppo``: the same command line as ``scripts/train.py``."""
import sys

from oe3jax.training.cli import main

sys.exit(main())
