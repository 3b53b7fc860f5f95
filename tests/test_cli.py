"""scripts/train.py end to end with the project's own environment and algorithms."""
from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def test_package_exports_are_lazy():
    import oe3jax

    assert callable(oe3jax.load_policy)
    assert "load_policy" in dir(oe3jax)
    with pytest.raises(AttributeError):
        oe3jax.no_such_name  # noqa: B018


@pytest.mark.skipif(not _have("oe3jax.simulation.env", "oe3jax.learning.sac"), reason="environment or SAC not available")
def test_bad_config_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        TRAIN + ["--algo", "sac", "--run-dir", str(tmp_path / "r"), "--set", "sac.bogus=1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sac.bogus: unknown key; accepted keys in sac: ")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not _have("oe3jax.simulation.env", "oe3jax.learning.ppo"), reason="environment or PPO not available")
def test_smoke_config_trains_end_to_end(tmp_path):
    run_dir = tmp_path / "smoke"
    # the packaged mall load as a user's file without timestamps: the run must say what it assumed
    from oe3jax.simulation.profiles import builtin_profile

    (tmp_path / "mall.csv").write_text("kW\n" + "\n".join(repr(float(v)) for v in builtin_profile("mall_kw")) + "\n")
    proc = subprocess.run(
        TRAIN + ["--config", str(ROOT / "configs" / "smoke.yaml"), "--run-dir", str(run_dir),
                 "--set", f"scenario_overrides.mall_profile={{path: {tmp_path / 'mall.csv'}, column: kW}}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "profile: mall_profile" in proc.stdout and "no timestamps" in proc.stdout
    text = (run_dir / "config.yaml").read_text()
    assert text.startswith("# profile: mall_profile") and "no timestamps" in text.splitlines()[0]
    smoke = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config = yaml.safe_load(text)
    assert config["scenario_overrides"]["mall_profile"]["column"] == "kW"
    assert config["algo"] == "ppo" and config["scenario"] == smoke["scenario"] == "iquitos-38"
    assert config["total_steps"] == smoke["total_steps"] and "lr" in config["ppo"]  # defaults filled in
    with open(run_dir / "progress" / "ppo_progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:7] == ["episode", "step", "reward_avg", "actor_loss", "critic_loss", "entropy", "lr"]
    num_envs, num_steps = config["ppo"]["num_envs"], config["ppo"]["num_steps"]
    per_update = num_envs * num_steps
    chunk = -(-smoke["checkpoint"]["every"] // num_steps)  # updates per checkpoint interval (and chunk)
    assert [int(r["step"]) for r in rows] == list(range(chunk * per_update, smoke["total_steps"] + 1, chunk * per_update))
    # 48-hour episodes in lockstep: every env has ended steps_per_env // 48 episodes
    hours = smoke["env"]["episode_hours"]
    assert [int(r["episode"]) for r in rows] == [num_envs * (int(r["step"]) // num_envs // hours) for r in rows]
    assert all(float(r["co2_kg"]) > 0 and float(r["grid_kwh"]) > 0 for r in rows)

    from oe3jax import load_policy

    policy = load_policy(run_dir)
    assert (policy.algo, policy.scenario, policy.step) == ("ppo", "iquitos-38", smoke["total_steps"] // num_envs)
    obs, _ = policy.env.reset(__import__("jax").random.key(0), policy.env_params)
    action = np.asarray(policy(obs))
    assert action.shape == policy.env.action_space(policy.env_params).shape
    assert np.all(np.abs(action) <= 1.0)
