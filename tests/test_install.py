"""A regular (non-editable) install carries everything a run needs: the code's defaults, the
profiles, and the smoke preset trains every algorithm from a directory outside the checkout."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_installed_package_trains_every_algorithm_outside_the_checkout(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (site / "oe3jax" / "__editable__").exists()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run([sys.executable, "-c", "import oe3jax; print(oe3jax.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    preset = tmp_path / "smoke.yaml"
    preset.write_text((ROOT / "configs" / "smoke.yaml").read_text())
    run = subprocess.run(
        [sys.executable, "-m", "oe3jax.training", "--algo", "all", "--config", str(preset),
         "--run-dir", str(tmp_path / "run"), "--set", "eval.enabled=false"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    # the code's defaults reached every agent: SAC's tanh policy, PPO's and A2C's tuned sections
    assert config["agents"]["sac"]["network"]["squash"] == "tanh"
    assert config["agents"]["ppo"]["ppo"]["num_envs"] == 8 and config["agents"]["a2c"]["a2c"]["gae_lambda"] == 0.95
    for algo in ("sac", "ppo", "a2c"):
        assert (tmp_path / "run" / "checkpoints" / algo).is_dir(), algo
        rows = (tmp_path / "run" / "progress" / f"{algo}_progress.csv").read_text().splitlines()
        assert len(rows) >= 2, algo
