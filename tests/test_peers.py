"""The peers benchmark's plumbing: its evaluation against the project's own, and its place in
results/benchmark.{json,md} beside the other sections. Speeds are never checked."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from oe3jax.benchmarks.peers import YearEvaluator
from oe3jax.control import baselines
from oe3jax.evaluation.kpis import episode_kpis

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluator():
    return YearEvaluator("iquitos-38", seed=3, hours=48)


def test_host_stepped_evaluation_is_the_projects_own(evaluator):
    """A NumPy policy stepped on the host and replayed as a schedule scores what the same policy,
    written in JAX, scores through the jitted evaluation on the same arrivals."""
    n = evaluator.env.n_sockets
    unc = evaluator.kpis(lambda obs: np.r_[0.0, np.ones(n)])
    for key in ("co2_kg", "ev_delivered_kwh", "grid_import_kwh", "vehicles_arrived", "return"):
        assert unc[key] == pytest.approx(evaluator.uncontrolled[key], rel=1e-6, abs=1e-6), key
    # closed loop: the battery follows the hour feature of the observation, sockets at half power
    cos_h = 1  # cos(2 pi h / 24) is the second feature

    def numpy_policy(obs):
        return np.r_[-1.0 if obs[cos_h] < 0 else 0.5, np.full(n, 0.5)]

    def jax_policy(obs, state, params):
        return jnp.concatenate([jnp.where(obs[cos_h] < 0, -1.0, 0.5)[None], jnp.full(n, 0.5)])

    mine = evaluator.kpis(numpy_policy)
    theirs = episode_kpis(evaluator.env, evaluator.params, jax_policy, evaluator.key, 48)
    for key in ("co2_kg", "ev_delivered_kwh", "bess_discharge_kwh", "bess_charge_kwh", "return"):
        assert mine[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-6), key
    assert mine["bess_discharge_kwh"] > 0 and mine["ev_delivered_kwh"] < unc["ev_delivered_kwh"]


def test_judge_against_the_baselines(evaluator):
    unc, rule = evaluator.uncontrolled, evaluator.rule
    assert rule["co2_kg"] < unc["co2_kg"]  # the rule's battery saves grid energy over two days
    verdict = evaluator.judge(unc)
    assert verdict["uncontrolled_reached"] and not verdict["rule_reached"]
    assert verdict["ev_frac_of_uncontrolled"] == 1.0 and verdict["co2_t"] == unc["co2_kg"] / 1000
    assert evaluator.judge(rule)["rule_reached"]
    # less CO2 by charging too little is no success
    starved = {**rule, "ev_delivered_kwh": 0.97 * unc["ev_delivered_kwh"]}
    assert not evaluator.judge(starved)["uncontrolled_reached"]
    assert evaluator.judge({**rule, "ev_delivered_kwh": 0.98 * unc["ev_delivered_kwh"]})["rule_reached"]


def test_peers_section_is_read_modify_written(tmp_path, monkeypatch):
    script = _script()
    block = {"sections": {"env": {"numpy-wrapper": {"skipped": True, "error": "not measured"}}},
             "commands": {"env": "python scripts/benchmark.py --peers env"}, "torch_threads": 1}
    # the peers block goes in beside the other sections, which stay as they are
    (tmp_path / "benchmark.json").write_text(json.dumps({"command": "x", "sections": {"env": {"error": "E"}}}))
    script._write_peers(tmp_path, block)
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    assert doc["sections"] == {"env": {"error": "E"}} and doc["command"] == "x" and doc["peers"] == block
    assert "## Peers" in (tmp_path / "benchmark.md").read_text()

    # the other sections' run keeps the peers block
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(script, "run_env", boom)
    assert script.main(["--quick", "--sections", "env", "--out", str(tmp_path)]) == 1
    doc = json.loads((tmp_path / "benchmark.json").read_text())
    assert doc["sections"]["env"]["error"] == "RuntimeError: boom" and doc["peers"] == block
    md = (tmp_path / "benchmark.md").read_text()
    assert "FAILED: RuntimeError: boom" in md and "## Peers" in md and "skipped: not measured" in md


def test_peers_without_the_extra_is_one_line(tmp_path, capsys):
    script = _script()
    assert script.main(["--peers", "env,nope", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("--peers: unknown section 'nope'; accepted: env, train, quality "
                                               "(comma-separated), or none for all")
    if importlib.util.find_spec("stable_baselines3") is not None:
        pytest.skip("Stable-Baselines3 is installed: the install hint is not shown")
    assert script.main(["--peers", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "--peers: the peers benchmark needs the optional extra: pip install 'oe3jax[peers]'"
    assert not (tmp_path / "benchmark.json").exists()


def test_our_training_rate_runs_cold_and_counts_loaded_chunks_as_compilation(monkeypatch):
    """The project's trainer is measured without the persistent compilation cache (the user's
    cache neither speeds it up nor is written), and both log forms of a chunk count as compilation."""
    import subprocess
    import types

    from oe3jax.benchmarks import peers

    seen = []
    stdout = ("[a2c] compiled a chunk of 2 updates x 256 env steps x 1 run(s) in 6.5 s\n"
              "[a2c] loaded a chunk of 1 updates x 256 env steps x 1 run(s) from the compilation cache in 1.0 s\n"
              "[a2c]          512/512 steps (100.0%)  2,048 steps/s  ETA 0:00:00  reward -0.07\n")

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        return types.SimpleNamespace(returncode=0, stdout=stdout, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    row = peers.ours_train_rate("a2c", 512)
    (cmd,) = seen
    assert "compile.cache=null" in cmd and cmd[cmd.index("compile.cache=null") - 1] == "--set"
    assert row["compile_s"] == 7.5 and row["steps"] == 512 and row["env_steps_per_s"] == pytest.approx(2048)
    assert "compile.cache=null" in row["command"]
