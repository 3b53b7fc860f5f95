"""The host loop: progress CSV, seeds, load_policy and the --algo all pipeline (tiny dummy algorithm)."""
from __future__ import annotations

import io
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dummy_algo
import runner_fixtures as rf
from oe3jax import load_policy
from oe3jax.training.cli import run
from oe3jax.training.progress import CSV_COLUMNS


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return rf.baseline(tmp_path_factory)


def test_csv_columns_and_rows(base):
    run_dir, _ = base
    header = (run_dir / "progress" / "dummy_progress.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["episode", "step", "reward_avg", "actor_loss", "critic_loss", "entropy", "lr"]
    assert header[7:11] == ["steps_per_s", "co2_kg", "grid_kwh", "unmet_kwh"]
    assert tuple(header) == CSV_COLUMNS
    rows = rf.read_rows(run_dir, drop_timing=False)
    # 8 updates in chunks of 2 (one checkpoint interval of 16 steps per env / 8 steps per update),
    # one row per seed per chunk.
    assert len(rows) == 4 * rf.SEEDS
    for k, row in enumerate(rows):
        chunk, seed = divmod(k, rf.SEEDS)
        updates = 2 * (chunk + 1)
        steps_per_env = 8 * updates
        assert int(row["seed"]) == seed and int(row["update"]) == updates
        assert int(row["step"]) == 2 * steps_per_env                     # 2 envs per seed
        # Pendulum never terminates; episodes are cut at 24 steps, all envs in lockstep.
        assert int(row["episode"]) == 2 * (steps_per_env // 24)
        ended = steps_per_env // 24 > (steps_per_env - 16) // 24
        if ended:
            # The dummy reports per-episode CO2 = -return and grid = 2 kWh: means over the episodes.
            assert float(row["co2_kg"]) == pytest.approx(-float(row["episode_return"]), rel=1e-6)
            assert float(row["grid_kwh"]) == pytest.approx(2.0)
            assert float(row["unmet_kwh"]) == 0.0
        else:
            assert row["co2_kg"] == row["grid_kwh"] == row["unmet_kwh"] == row["episode_return"] == ""
        assert float(row["lr"]) == pytest.approx(0.01)
        assert float(row["steps_per_s"]) > 0
        assert math.isfinite(float(row["reward_avg"])) and float(row["reward_avg"]) <= 0.0  # Pendulum costs


def test_checkpoints_kept_and_final(base):
    run_dir, result = base
    from oe3jax.training.checkpoint import complete_steps, read_meta

    ckpt_dir = run_dir / "checkpoints" / "dummy"
    assert complete_steps(ckpt_dir) == [32, 48, 64]  # every 16 steps per env, max_to_keep 3
    meta = read_meta(ckpt_dir / "64")
    assert meta["final"] is True and meta["updates"] == 8 and meta["csv_rows"] == 4 * rf.SEEDS
    assert meta["episodes_done"] == [4] * rf.SEEDS and meta["seeds"] == [0, 1, 2]
    assert meta["config"]["dummy"]["num_envs"] == 2
    assert not read_meta(ckpt_dir / "48")["final"] and read_meta(ckpt_dir / "48")["csv_rows"] == 3 * rf.SEEDS
    assert result.step == 64 and result.updates == 8


def test_seeds_differ_and_each_is_reproducible_alone(base, tmp_path):
    _, result = base
    w = np.asarray(result.state.params["w"])
    assert w.shape[0] == rf.SEEDS
    for i in range(rf.SEEDS):
        for j in range(i):
            assert not np.allclose(w[i], w[j])
    # Seed index 1 of the vmapped run is the run of seed 1 alone.
    (alone,) = rf.train(tmp_path / "alone", ["--seed", "1", "--seeds", "1"])
    for a, b in zip(jax.tree_util.tree_leaves(alone.state), jax.tree_util.tree_leaves(result.state)):
        np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[1], rtol=1e-5, atol=1e-6)
    rows = rf.read_rows(tmp_path / "alone")
    assert [r["seed"] for r in rows] == ["1"] * 4


def test_load_policy_from_run_and_step_dirs(base):
    run_dir, result = base
    comps = dummy_algo.components()
    policy = load_policy(run_dir, components=comps)
    assert (policy.algo, policy.step, policy.scenario, policy.seed) == ("dummy", 64, "pendulum", 0)
    assert policy.config["dummy"]["num_envs"] == 2 and policy.config["seeds"] == rf.SEEDS
    rf.assert_same_bits(policy.params, jax.tree_util.tree_map(lambda x: x[0], result.state.params))
    p2 = load_policy(run_dir, seed=2, components=comps)
    rf.assert_same_bits(p2.params, jax.tree_util.tree_map(lambda x: x[2], result.state.params))
    # Deterministic action: clip(obs @ w + b, -2, 2), computed here with NumPy.
    obs = np.array([[1.0, 0.0, 0.5], [-0.5, 0.8, -3.0], [0.0, 1.0, 8.0]], np.float32)
    w, b = np.asarray(policy.params["w"]), np.asarray(policy.params["b"])
    expected = np.clip(obs @ w + b, -2.0, 2.0)
    np.testing.assert_allclose(np.asarray(jax.vmap(policy)(jnp.asarray(obs))), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(policy)(jnp.asarray(obs[1]))), expected[1], rtol=1e-6)
    older = load_policy(run_dir / "checkpoints" / "dummy" / "48", components=comps)
    assert older.step == 48 and not np.array_equal(np.asarray(older.params["w"]), w)
    with pytest.raises(ValueError, match="seed"):
        load_policy(run_dir, seed=rf.SEEDS, components=comps)


def test_algo_all_runs_each_agent_and_skips_finished(tmp_path):
    run_dir = tmp_path / "all"
    argv = ["--algo", "all", "--scenario", "pendulum", "--total-steps", "32", "--run-dir", str(run_dir),
            "--set", "dummy.num_envs=2", "--set", "dummy2.num_envs=1", "--set", "checkpoint.every=16",
            "--set", "checkpoint.async=false"]
    results = run(argv, dummy_algo.components(), out=io.StringIO())
    assert [r.algo for r in results] == ["dummy2", "dummy"]     # the pipeline's order
    assert [r.step for r in results] == [32, 16]                # 32 steps over 1 env / over 2 envs
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["algo"] == "all" and set(config["agents"]) == {"dummy", "dummy2"}
    assert config["agents"]["dummy2"]["dummy2"]["num_envs"] == 1
    # A pipeline killed in its second agent: its last checkpoint never completed.
    final = run_dir / "checkpoints" / "dummy" / "16"
    final.rename(final.with_name("16.orbax-checkpoint-tmp-1700000000"))
    out = io.StringIO()
    again = run(argv, dummy_algo.components(), out=out)
    assert "[dummy2] already trained" in out.getvalue()
    assert [r.algo for r in again] == ["dummy"]
    rf.assert_same_bits(again[0].state, results[1].state)
    # one chunk (2 updates of 2 envs) for dummy, two (4 updates of 1 env) for dummy2
    assert len(rf.read_rows(run_dir, "dummy")) == 1 and len(rf.read_rows(run_dir, "dummy2")) == 2


def test_evaluation_hook_writes_kpis_per_seed(tmp_path):
    seen = []

    def evaluate(policies, **kwargs):
        assert kwargs == {"hours": None, "seed": 0, "optimal": True}
        seen.extend(p.seed for p in policies.values())
        return {name: {"mean_action": float(np.mean(np.asarray(p(jnp.ones(3)))))} for name, p in policies.items()}

    run_dir = tmp_path / "ev"
    run(["--algo", "dummy", "--scenario", "pendulum", "--total-steps", "16", "--seeds", "2",
         "--run-dir", str(run_dir), "--set", "dummy.num_envs=1", "--set", "checkpoint.async=false"],
        dummy_algo.components(evaluate), out=io.StringIO())
    data = json.loads((run_dir / "evaluation" / "dummy.json").read_text())
    assert seen == [0, 1] and set(data) == {"seed 0", "seed 1"}
