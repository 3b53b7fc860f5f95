"""The benchmark's measurement functions on tiny sizes: structure and counts, never speed."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dummy_algo
from oe3jax.benchmarks import throughput as bench
from oe3jax.simulation.env import make_env

ROOT = Path(__file__).resolve().parent.parent


def _positive_rate(rate: dict) -> None:
    assert set(rate) == {"median", "min", "max"}
    assert all(math.isfinite(v) and v > 0 for v in rate.values())
    assert rate["min"] <= rate["median"] <= rate["max"]


# ---------------------------------------------------------------------------- FLOP counting
def test_hlo_flops_multiplies_loop_bodies_by_trip_count_and_takes_the_costlier_branch():
    n = 64

    def program(x):
        def body(c, _):
            return jnp.tanh(c @ x), None

        c, _ = jax.lax.scan(body, x, None, length=7)
        return jax.lax.cond(c[0, 0] > 0, lambda c: c @ c, lambda c: c, c)

    compiled = jax.jit(program).lower(jnp.ones((n, n), jnp.float32)).compile()
    counted = bench.hlo_flops(compiled.as_text())
    assert counted["dot_flops"] == (7 + 1) * 2 * n**3  # 7 products in the loop, 1 in the costlier branch
    assert counted["unknown_trip_counts"] == []


def test_hlo_flops_nested_loops_and_rectangular_dots():
    a = jnp.ones((16, 32), jnp.float32)
    b = jnp.ones((32, 8), jnp.float32)

    def program(a, b):
        def outer(acc, _):
            def inner(acc, _):
                return acc + jnp.sum(jnp.tanh(a * acc) @ b), None

            return jax.lax.scan(inner, acc, None, length=5)[0], None

        return jax.lax.scan(outer, jnp.float32(0.0), None, length=3)[0]

    counted = bench.hlo_flops(jax.jit(program).lower(a, b).compile().as_text())
    assert counted["dot_flops"] == 3 * 5 * 2 * 16 * 32 * 8


def test_hlo_flops_elementwise_matches_hand_count_and_xla_without_loops():
    x = jnp.ones((10, 20), jnp.float32)
    compiled = jax.jit(lambda a, b: a * b + a).lower(x, x).compile()
    counted = bench.hlo_flops(compiled.as_text())
    assert counted["dot_flops"] == 0
    assert counted["elementwise_flops"] == 2 * 200  # one multiply and one add per element
    assert bench.xla_cost_flops(compiled) == pytest.approx(400.0)


# ---------------------------------------------------------------------------- environment
def test_rollout_makes_the_steps_it_counts():
    env, params = make_env("iquitos-38")
    num_envs, num_steps = 3, 5
    rollout, args = bench.make_rollout(env, params, num_envs, num_steps, "pool", pool_size=16)
    out = jax.jit(rollout)(*args)
    out = jax.jit(rollout)(*out)
    _, env_state, obs, reward_sum, t, _ = out
    np.testing.assert_array_equal(np.asarray(env_state.k), np.full(num_envs, 2 * num_steps))
    np.testing.assert_array_equal(np.asarray(env_state.t), np.full(num_envs, 2 * num_steps))
    assert int(t) == 2 * num_steps
    assert obs.shape == (num_envs, env.observation_space(params).shape[0])
    assert np.isfinite(float(reward_sum)) and float(reward_sum) != 0.0


@pytest.mark.parametrize("num_envs, pool_size", [(3, 16), (16, 16), (40, 16)])
def test_pool_rows_are_the_rows_each_env_reads_at_step_t(num_envs, pool_size):
    pool = np.arange(pool_size * 2, dtype=np.float32).reshape(pool_size, 2)
    stride = max(1, pool_size // num_envs) if num_envs < pool_size else 1
    tiled = bench.tile_pool(jnp.asarray(pool), num_envs, stride)
    for t in (0, 1, pool_size - 1, pool_size, 3 * pool_size + 5):
        rows = [(i * stride + t) % pool_size for i in range(num_envs)]
        got = np.asarray(jax.jit(bench.pool_rows, static_argnums=(2, 3, 4))(tiled, t, num_envs, stride, pool_size))
        np.testing.assert_array_equal(got, pool[rows])


def test_obs_mode_actions_read_every_observation_feature():
    """In mode ``obs`` the actions depend on each observation feature: the battery's on every
    global one, socket i's on its own features only (a policy-shaped dependency XLA cannot drop)."""
    env, params = make_env("iquitos-38")
    layout = env.obs_layout
    policy = bench._obs_policy(env, layout.size, 1 + layout.n_sockets)
    obs = jnp.asarray(np.random.default_rng(0).uniform(0.0, 0.5, layout.size), jnp.float32)
    base = jnp.zeros(1 + layout.n_sockets, jnp.float32)
    jac = np.asarray(jax.jacfwd(lambda o: policy(o, base))(obs))  # [actions, features]
    g, f = layout.n_global, layout.n_socket_features
    assert np.all(jac[0, :g] != 0) and np.all(jac[0, g:] == 0)
    for i in range(layout.n_sockets):
        own = slice(g + i * f, g + (i + 1) * f)
        assert np.all(jac[1 + i, own] != 0)
        assert np.count_nonzero(jac[1 + i]) == f
    rollout, args = bench.make_rollout(env, params, 2, 3, "obs", pool_size=8)
    out = jax.jit(rollout)(*args)
    assert np.isfinite(float(out[3]))


def test_step_stages_attribute_the_profiled_step_to_its_named_scopes():
    env, params = make_env("iquitos-38")
    row = bench.step_stages(env, params, 4, "pool", num_steps=4, calls=1, top=3)
    stages = {r["stage"]: r for r in row["stages"]}
    assert {"observation", "arrivals"} <= set(stages)
    assert set(stages) <= set(bench.STEP_STAGES) | {"other", bench.HARNESS_STAGE}
    assert sum(r["share"] for r in row["stages"]) == pytest.approx(1.0)
    assert sum(r["us_per_step"] for r in row["stages"]) == pytest.approx(row["thunk_us_per_step"])
    assert row["steps"] == 4 and row["wall_us_per_step"] > 0 and len(row["top_thunks"]) == 3


def test_reference_throughput_counts_steps():
    row = bench.reference_throughput("iquitos-38", 20)
    assert row["steps"] == 20 and row["reward_finite"]
    assert row["env_steps_per_s"] == pytest.approx(20 / row["seconds"], rel=1e-3)


def test_matmul_flops_reports_rates():
    row = bench.matmul_flops(32, iters=2, repeats=2, min_repeat_s=0.0)
    _positive_rate(row["flops_per_s"])
    assert len(row["repeat_s"]) == 2


# ---------------------------------------------------------------------------- training and checkpoints
DUMMY = {"scenario": "pendulum", "dummy.num_envs": 2, "dummy.num_steps": 4}


def test_train_throughput_and_checkpoint_cost_with_a_small_algorithm(tmp_path):
    comps = dummy_algo.components()
    row = bench.train_throughput("dummy", overrides=DUMMY, max_env_steps_per_chunk=16, repeats=2,
                                 peak_flops_per_s=1e9, comps=comps, log=lambda _: None)
    assert row["num_envs"] == 2 and row["steps_per_env_per_update"] == 4
    assert row["runner_chunk_updates"] == math.ceil(500 / 4)  # one checkpoint interval
    assert row["chunk_updates"] == 16 // 8
    for key in ("env_steps_per_s", "updates_per_s"):
        _positive_rate(row[key])
    assert row["env_steps_per_s"]["median"] == pytest.approx(8 * row["updates_per_s"]["median"])
    assert row["flops_per_chunk"] > 0 and row["flops_per_s"] > 0
    assert row["flops_fraction_of_matmul"] == pytest.approx(row["flops_per_s"] / 1e9)
    assert row["metrics_finite"] and row["compile_s"] > 0
    assert "dummy.num_envs=2" in row["config"]

    ck = bench.checkpoint_cost("dummy", overrides=DUMMY, max_env_steps_per_chunk=16, saves=1, comps=comps,
                               workdir=str(tmp_path), log=lambda _: None)
    assert ck["checkpoint_bytes_on_disk"] > 0 and ck["checkpoint_bytes_on_disk_async"] > 0
    assert all(t > 0 for t in ck["sync_save_s"] + ck["async_save_call_s"] + ck["async_interval_s"])
    assert all(math.isfinite(v) for v in ck["lost_per_save_s"].values())
    assert list(tmp_path.iterdir()) == []  # its temporary checkpoints are removed


# ---------------------------------------------------------------------------- the command line
def _script():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_env_section_writes_json_and_markdown(tmp_path, monkeypatch):
    script = _script()
    tiny = {**script.QUICK, "env": {**script.QUICK["env"], "scenarios": {"iquitos-38": ("pool",)}, "num_envs": (2,)}}
    monkeypatch.setattr(script, "QUICK", tiny)
    assert script.main(["--quick", "--sections", "env", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    assert doc["quick"] and doc["machine"]["cpu_usable"] >= 1 and doc["machine"]["versions"]["jax"]
    env = doc["sections"]["env"]["scenarios"]["iquitos-38"]
    (row,) = env["vmapped"]
    assert row["num_envs"] == 2 and row["mode"] == "pool" and row["reward_finite"]
    _positive_rate(row["env_steps_per_s"])
    assert row["env_steps_per_repeat"] == row["calls_per_repeat"] * row["steps_per_call"] * 2
    best = env["best"]["pool"]
    assert best["ratio_to_reference"] == pytest.approx(
        row["env_steps_per_s"]["median"] / env["reference"]["env_steps_per_s"])
    assert len(env["load_avg_start"]) == 3
    md = (tmp_path / "benchmark.md").read_text()
    assert "iquitos-38" in md and "NumPy reference loop" in md


def test_cli_records_failing_sections_and_fails_only_for_env(tmp_path, monkeypatch):
    script = _script()

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(script, "run_env", boom)
    monkeypatch.setattr(script, "run_algos", boom)
    monkeypatch.setattr(script, "run_matmul", boom)
    assert script.main(["--quick", "--sections", "env,train", "--out", str(tmp_path)]) == 1
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    assert doc["sections"]["env"]["error"] == "RuntimeError: boom"
    assert doc["sections"]["train"]["error"] == "RuntimeError: boom"
    assert "FAILED: RuntimeError: boom" in (tmp_path / "benchmark.md").read_text()

    assert script.main(["--quick", "--sections", "train", "--out", str(tmp_path)]) == 0
    assert script.main(["--sections", "env,nope", "--out", str(tmp_path)]) == 2


def test_cli_bad_out_and_options_are_one_line_before_any_measurement(tmp_path, capsys, monkeypatch):
    script = _script()

    def boom(*args, **kwargs):
        raise AssertionError("measured despite bad options")

    monkeypatch.setattr(script, "run_env", boom)
    monkeypatch.setattr(script, "run_scaling", boom)
    monkeypatch.setattr(script, "run_peers", boom)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    cases = [
        (["--quick", "--sections", "env", "--out", str(a_file)], f"--out: {a_file} is a file, not a directory"),
        (["--quick", "--out", str(a_file / "sub")], f"--out: cannot create {a_file / 'sub'}: {a_file} is a file, "
                                                     "not a directory"),
        (["--scaling", "--quick", "--out", str(a_file)], f"--out: {a_file} is a file, not a directory"),
        (["--peers", "env", "--out", str(a_file)], f"--out: {a_file} is a file, not a directory"),
        (["--out", ""], "--out: expected a directory path, got an empty string"),
        (["--resume", "--out", str(tmp_path)], "--resume: only with --peers"),
        (["--ev2gym-python", "python", "--out", str(tmp_path)], "--ev2gym-python: only with --peers"),
        (["--citylearn-python", "python", "--out", str(tmp_path)], "--citylearn-python: only with --peers"),
        (["--citylearn-schema", "x", "--out", str(tmp_path)], "--citylearn-schema: only with --peers"),
        (["--peers", "--sections", "env", "--out", str(tmp_path)],
         "--sections: not with --peers (its sections follow it: --peers env,train,quality)"),
        (["--peers", "--plan", "gpu", "--out", str(tmp_path)], "--plan: not with --peers"),
        (["--scaling", "--sections", "env", "--out", str(tmp_path)], "--sections: not with --scaling"),
        (["--quick", "--plan", "gpu", "--out", str(tmp_path)], "--plan: not with --quick (it has its own tiny sizes)"),
        (["--sections", "", "--out", str(tmp_path)],
         "--sections: expected one or more of env, train, checkpoint (comma-separated), got ''"),
        (["--sections", " , ", "--out", str(tmp_path)],
         "--sections: expected one or more of env, train, checkpoint (comma-separated), got ' , '"),
        (["--peers", "", "--out", str(tmp_path)],
         "--peers: expected one or more of env, train, quality (comma-separated), or none for all, got ''"),
        (["--scaling", "--peers", "--out", str(tmp_path)], "--scaling: not with --peers; run them one after the other"),
        (["--peers", "--ev2gym-python", str(tmp_path / "nope"), "--out", str(tmp_path)],
         f"--ev2gym-python: {tmp_path / 'nope'} is not an executable file"),
        (["--peers", "--citylearn-python", str(a_file), "--out", str(tmp_path)],
         f"--citylearn-python: {a_file} is not an executable file"),
    ]
    for argv, message in cases:
        assert script.main(argv) == 2, argv
        assert capsys.readouterr().err.strip() == message
    assert not (a_file.parent / "benchmark.json").exists()


def test_cli_argparse_errors_are_one_line(capsys):
    script = _script()
    with pytest.raises(SystemExit) as exc:
        script.main(["--plan", "foo"])
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("--plan: invalid choice: 'foo' (choose from ") and "'auto', 'cpu', 'gpu'" in line
    assert line.endswith("; see python scripts/benchmark.py --help")
    with pytest.raises(SystemExit):
        script.main(["--bogus"])
    assert capsys.readouterr().err.strip() == "unrecognized arguments: --bogus; see python scripts/benchmark.py --help"


def test_the_benchmark_measures_without_the_persistent_compilation_cache(tmp_path):
    """Compile times are compilations: a JAX_COMPILATION_CACHE_DIR of the user's is not read."""
    import os
    import subprocess
    import sys

    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('b', {str(ROOT / 'scripts' / 'benchmark.py')!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "import jax\n"
            "print(jax.config.jax_enable_compilation_cache)\n")
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_COMPILATION_CACHE"}
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False"]
