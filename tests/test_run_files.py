"""The run directory survives kills, full disks and a second process; scenario overrides and the
run's environment settings reach the environment, config.yaml, the resume check and the evaluation."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

import dummy_algo
import runner_fixtures as rf
from oe3jax.training import files, progress
from oe3jax.training.cli import main, run
from oe3jax.training.files import RunDirBusy, RunLock


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return rf.baseline(tmp_path_factory)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------------ the CSV
def test_csv_rewrite_never_truncates_the_only_copy(base, tmp_path, monkeypatch):
    """A kill while the CSV is cut back to the checkpoint's rows leaves the old file whole."""
    base_dir, _ = base
    run_dir = rf.copy_run(base_dir, tmp_path / "run")
    csv_path = run_dir / "progress" / "dummy_progress.csv"
    before = csv_path.read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing the new file and renaming it

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        progress.ProgressCSV(csv_path, keep_rows=3)
    monkeypatch.undo()
    assert csv_path.read_text() == before
    assert not [p for p in csv_path.parent.iterdir() if p.name.endswith(".tmp")]  # no litter
    kept = progress.ProgressCSV(csv_path, keep_rows=3)
    assert kept.rows == 3 and csv_path.read_text().splitlines() == before.splitlines()[:4]


def test_full_disk_while_appending_is_one_line(tmp_path, monkeypatch, capsys):
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        if "a" in mode and str(path).endswith("_progress.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full, raising=False)
    argv = rf.ARGV + ["--run-dir", str(tmp_path / "r")]
    assert main(argv, dummy_algo.components()) == 1
    line = _one_error_line(capsys)
    assert line.startswith("error: cannot append to ") and "dummy_progress.csv: no space left on device" in line
    assert "intact" in line


def test_full_disk_writing_config_is_one_line(tmp_path, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.tempfile, "mkstemp", full)
    assert main(rf.ARGV + ["--run-dir", str(tmp_path / "r")], dummy_algo.components()) == 1
    line = _one_error_line(capsys)
    assert line.startswith("error: cannot write ") and "config.yaml: no space left on device" in line


def test_a_run_file_that_is_a_directory_is_named_without_blaming_the_disk(tmp_path, capsys):
    (tmp_path / "a" / ".lock").mkdir(parents=True)
    assert main(rf.ARGV + ["--run-dir", str(tmp_path / "a")], dummy_algo.components()) == 1
    assert _one_error_line(capsys) == (
        f"error: cannot open the run directory's lock file {tmp_path / 'a' / '.lock'}: Is a directory; the "
        "checkpoints and progress rows saved before are intact: correct that path and rerun the same command to resume")
    (tmp_path / "b" / "progress" / "dummy_progress.csv").mkdir(parents=True)
    assert main(rf.ARGV + ["--run-dir", str(tmp_path / "b")], dummy_algo.components()) == 1
    line = _one_error_line(capsys)
    assert line.startswith("error: cannot write ") and "dummy_progress.csv: Is a directory;" in line
    assert line.endswith("correct that path and rerun the same command to resume")
    csv_dir = tmp_path / "c.csv"
    csv_dir.mkdir()
    with pytest.raises(files.StorageError, match=r"^cannot read .*c\.csv: Is a directory$"):
        progress.ProgressCSV(csv_dir, keep_rows=3, warn=sys.stdout)
    assert capsys.readouterr().out == ""  # not reported as missing


_TRAIN_DUMMY = """
import sys
sys.path.insert(0, sys.argv[1])
import dummy_algo, runner_fixtures as rf
from oe3jax.training.cli import main
sys.exit(main(rf.ARGV + ["--run-dir", sys.argv[2]], dummy_algo.components()))
"""


def test_a_checkpoint_directory_that_cannot_be_made_ends_the_process(tmp_path):
    """The step's directory fails to be made: one line, and the process exits (Orbax's commit
    threads no longer wait 20 minutes for a directory that will never exist)."""
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "dummy").write_text("in the way")
    proc = subprocess.run([sys.executable, "-c", _TRAIN_DUMMY, str(Path(__file__).parent), str(run_dir)],
                          capture_output=True, text=True, timeout=240)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, proc.stderr[-3000:]
    assert err[0].startswith(f"error: checkpoint: saving step 16 in {run_dir / 'checkpoints' / 'dummy'} failed: "
                             "Not a directory") and err[0].endswith("; no earlier checkpoint exists")


# ------------------------------------------------------------------------------------ the lock
_HOLD = """
import sys, time
from oe3jax.training.files import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_second_process_gets_one_line_naming_the_holder(tmp_path, capsys):
    run_dir = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(rf.ARGV + ["--run-dir", str(run_dir)], dummy_algo.components()) == 2
        line = _one_error_line(capsys)
        assert line.startswith(f"error: run directory {run_dir} is in use by process {holder.pid} ")
        assert not (run_dir / "config.yaml").exists() and not (run_dir / "checkpoints").exists()
        with pytest.raises(RunDirBusy):  # --fresh cannot move a directory in use either
            run(rf.ARGV + ["--run-dir", str(run_dir), "--fresh"], dummy_algo.components(), out=io.StringIO())
        assert run_dir.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the lock of the killed process: no stale lock
    with RunLock(run_dir):
        pass


# ------------------------------------------------------------------------------------ evaluation
def test_truncated_evaluation_is_redone(tmp_path):
    calls = []

    def evaluate(policies, **kwargs):
        calls.append(sorted(policies))
        return {name: {"co2_kg": 1.0} for name in policies}

    run_dir = tmp_path / "ev"
    argv = ["--algo", "dummy", "--scenario", "pendulum", "--total-steps", "16", "--run-dir", str(run_dir),
            "--set", "dummy.num_envs=1", "--set", "checkpoint.async=false"]
    comps = dummy_algo.components(evaluate)
    run(argv, comps, out=io.StringIO())
    path = run_dir / "evaluation" / "dummy.json"
    whole = path.read_text()
    out = io.StringIO()
    assert run(argv, comps, out=out) == [] and "already trained and evaluated" in out.getvalue()
    path.write_text(whole[: len(whole) // 2])  # cut off mid-write
    again = run(argv, comps, out=io.StringIO())
    assert len(again) == 1 and len(calls) == 2 and json.loads(path.read_text()) == json.loads(whole)


# ------------------------------------------------------------------------------------ overrides
def test_scenario_overrides_reach_env_config_and_resume(tmp_path):
    run_dir = tmp_path / "ov"
    argv = rf.ARGV + ["--run-dir", str(run_dir), "--set", "scenario_overrides.g=3.5", "--total-steps", "32"]
    (result,) = run(argv, dummy_algo.components(), out=io.StringIO())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["scenario_overrides"] == {"g": 3.5}
    from oe3jax import load_policy

    policy = load_policy(run_dir, components=dummy_algo.components())
    assert float(policy.env_params.g) == 3.5


def test_unknown_scenario_override_is_one_line(tmp_path, capsys):
    argv = rf.ARGV + ["--run-dir", str(tmp_path / "r"), "--set", "scenario_overrides.mass=3"]
    assert main(argv, dummy_algo.components()) == 2
    assert _one_error_line(capsys).startswith("error: scenario_overrides: ")
    assert not (tmp_path / "r").exists()


def test_ev_scenario_overrides_from_yaml_and_the_run_reward_reach_the_evaluation(tmp_path):
    """A run's env settings and scenario overrides are those its evaluation uses."""
    from oe3jax.control import baselines
    from oe3jax.evaluation.compare import evaluate_with_baselines
    from oe3jax.evaluation.kpis import episode_kpis
    from oe3jax.learning.policy import Policy
    from oe3jax.simulation.env import make_env
    from oe3jax.training.config import default_components, make_run_env, resolve_config, user_config

    preset = tmp_path / "site.yaml"
    preset.write_text("scenario: iquitos-38\nscenario_overrides:\n  capacity_kwh: 3400\n"
                      "  tariff_per_kwh: [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, "
                      "0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6, 0.6, 0.6, 0.3]\n"
                      "env: {reward: cost_focus, episode_hours: 48, random_start: true}\n")
    comps = default_components()
    cfg = resolve_config("ppo", comps, user_config(str(preset)))
    env, params = make_run_env(cfg, comps)
    assert float(params.capacity_kwh) == 3400.0 and env.scenario.tariff_per_kwh[18] == 0.6
    # a policy trained there, here simply the uncontrolled actions
    n = env.scenario.n_sockets
    policy = Policy(algo="ppo", step=0, config=cfg, scenario="iquitos-38", seed=0, params=None,
                    apply=lambda p, obs: jax.numpy.concatenate([jax.numpy.zeros(1), jax.numpy.ones(n)]),
                    env=env, env_params=params)
    res = evaluate_with_baselines({"seed 0": policy}, seed=3, hours=72, optimal=False)
    # the same policy scored independently in the run's environment (year from 1 January)
    own_env, own_params = make_env("iquitos-38", reward="cost_focus", capacity_kwh=3400,
                                   tariff_per_kwh=env.scenario.tariff_per_kwh)
    expect = episode_kpis(own_env, own_params, baselines.uncontrolled, jax.random.key(3), 72)
    default = episode_kpis(*make_env("iquitos-38"), baselines.uncontrolled, jax.random.key(3), 72)
    for column in ("seed 0", "uncontrolled"):
        assert res[column]["return"] == pytest.approx(expect["return"], rel=1e-6)
        assert res[column]["cost"] == pytest.approx(expect["cost"], rel=1e-6)
    assert abs(expect["return"] - default["return"]) > 1e-3 and abs(expect["cost"] - default["cost"]) > 1.0


def test_csv_kept_rows_keep_their_header_and_line_endings(tmp_path):
    path = tmp_path / "p.csv"
    first = progress.ProgressCSV(path, 0)
    first.append([{"episode": 1, "step": 8, "reward_avg": 0.5}, {"episode": 2, "step": 16, "reward_avg": 0.25}])
    raw = path.read_bytes()
    warnings = io.StringIO()
    kept = progress.ProgressCSV(path, keep_rows=1, warn=warnings)
    assert warnings.getvalue() == "" and kept.rows == 1
    assert path.read_bytes() == b"".join(raw.splitlines(keepends=True)[:2])


def test_load_policy_seed_and_step_of_another_type_are_named(base):
    from oe3jax import load_policy

    run_dir, _ = base
    comps = dummy_algo.components()
    with pytest.raises(ValueError, match=r"^load_policy: seed: expected an index in \[0, 2\], got '0'$"):
        load_policy(run_dir, seed="0", components=comps)
    with pytest.raises(ValueError, match=r"^load_policy: seed: expected an index in \[0, 2\], got True$"):
        load_policy(run_dir, seed=True, components=comps)
    with pytest.raises(ValueError, match=r"^load_policy: step: expected an integer \(the name of a step directory\) "
                                         r"or None, got '32'$"):
        load_policy(run_dir, step="32", components=comps)
    policy = load_policy(run_dir, seed=np.int64(2), step=np.int32(32), components=comps)
    assert policy.step == 32 and policy.seed == policy.config["seed"] + 2


def test_an_output_under_a_file_names_the_file(tmp_path):
    (tmp_path / "evaluation").write_text("x")
    for target in (tmp_path / "evaluation" / "ppo.json", tmp_path / "evaluation" / "sub" / "ppo.md"):
        with pytest.raises(files.StorageError, match=rf"^cannot write {target}: {tmp_path / 'evaluation'} is a file, "
                                                     r"not a directory$"):
            files.atomic_write_text(target, "{}")
