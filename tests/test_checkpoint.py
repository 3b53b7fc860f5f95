"""Checkpoints: exact resume after a real SIGKILL, cut-off and damaged saves, mismatched resumes."""
from __future__ import annotations

import json
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import dummy_algo
import runner_fixtures as rf
from oe3jax.training.checkpoint import CheckpointError, Checkpoints, ResumeMismatch, complete_steps, read_meta
from oe3jax.training.cli import main

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return rf.baseline(tmp_path_factory)


KILL_SCRIPT = """
import os, signal, sys
sys.path[:0] = [{tests!r}, {root!r}]
import dummy_algo, runner_fixtures as rf

def kill_after(algo, step):
    if step >= 32:  # the second checkpoint of 4 is complete on disk: die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)

rf.train({run_dir!r}, on_checkpoint=kill_after)
"""


def test_sigkill_then_resume_is_bit_identical(base, tmp_path):
    base_dir, base_result = base
    run_dir = tmp_path / "killed"
    code = KILL_SCRIPT.format(tests=str(TESTS), root=str(ROOT), run_dir=str(run_dir))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert complete_steps(run_dir / "checkpoints" / "dummy") == [16, 32]
    assert len(rf.read_rows(run_dir)) == 2 * rf.SEEDS
    (resumed,) = rf.train(run_dir)
    rf.assert_same_bits(resumed.state, base_result.state)
    assert rf.read_rows(run_dir) == rf.read_rows(base_dir)


def test_cut_off_save_falls_back_to_last_complete(base, tmp_path):
    """A save killed mid-write leaves Orbax's temporary directory: the previous step is used,
    the CSV is cut back to that step's rows, and training ends exactly where it would have."""
    base_dir, base_result = base
    run_dir = rf.copy_run(base_dir, tmp_path / "run")
    final = run_dir / "checkpoints" / "dummy" / "64"
    final.rename(final.with_name("64.orbax-checkpoint-tmp-1700000000"))
    (resumed,) = rf.train(run_dir)
    rf.assert_same_bits(resumed.state, base_result.state)
    assert rf.read_rows(run_dir) == rf.read_rows(base_dir)
    assert complete_steps(run_dir / "checkpoints" / "dummy") == [32, 48, 64]
    assert not [p for p in (run_dir / "checkpoints" / "dummy").iterdir() if "tmp" in p.name]


def test_damaged_checkpoint_is_an_error_not_a_fresh_start(base, tmp_path, capsys):
    base_dir, _ = base
    run_dir = rf.copy_run(base_dir, tmp_path / "run")
    data = [p for p in (run_dir / "checkpoints" / "dummy" / "64" / "state").rglob("*")
            if p.is_file() and p.parent.name == "d"]
    assert data
    for p in data:
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    rows_before = (run_dir / "progress" / "dummy_progress.csv").read_text()
    argv = rf.ARGV + ["--run-dir", str(run_dir), "--total-steps", "192"]  # would continue training
    assert main(argv, dummy_algo.components()) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint: ") and "64 is damaged" in err[0]
    assert (run_dir / "progress" / "dummy_progress.csv").read_text() == rows_before
    # damaged metadata
    (run_dir / "checkpoints" / "dummy" / "64" / "meta" / "metadata").write_text("{not json")
    assert main(argv, dummy_algo.components()) == 1
    assert "64 is damaged: its metadata cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scenario", "pendulum-heavy"], "resume: scenario is 'pendulum' in the checkpoint"),
        (["--set", "network.hidden=4"], "resume: network.hidden is 0 in the checkpoint"),
        (["--set", "env.episode_len=48"], "resume: env.episode_len is 24 in the checkpoint"),
        (["--set", "dummy.lr=0.5"], "resume: dummy.lr is 0.01 in the checkpoint"),
        (["--seeds", "2"], "resume: seeds is 3 in the checkpoint"),
        (["--set", "scenario_overrides.g=9.0"], "resume: scenario_overrides.g is '(absent)' in the checkpoint"),
    ],
)
def test_mismatched_resume_names_the_difference(base, capsys, extra, message):
    base_dir, _ = base
    before = sorted(p.name for p in (base_dir / "checkpoints" / "dummy").iterdir())
    assert main(rf.ARGV + ["--run-dir", str(base_dir)] + extra, dummy_algo.components()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: " + message), err
    assert "--fresh" in err[0]
    assert sorted(p.name for p in (base_dir / "checkpoints" / "dummy").iterdir()) == before


def test_changed_scenario_data_is_detected(base):
    base_dir, _ = base
    comps = dummy_algo.components()

    def heavier(scenario, **kw):
        env, params = dummy_algo.make_env(scenario, **kw)
        return env, params.replace(g=9.81)

    comps = type(comps)(**{**comps.__dict__, "make_env": heavier})
    from oe3jax.training.cli import run

    with pytest.raises(ResumeMismatch, match="scenario data of 'pendulum' differ"):
        run(rf.ARGV + ["--run-dir", str(base_dir)], comps)


def test_fresh_moves_the_old_run_aside(base, tmp_path):
    base_dir, _ = base
    run_dir = rf.copy_run(base_dir, tmp_path / "run")
    import io

    from oe3jax.training.cli import move_aside as _move_aside
    from oe3jax.training.config import resolve_config
    from oe3jax.training.loop import prepare

    _move_aside(run_dir, io.StringIO())
    olds = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(olds) == 1 and complete_steps(olds[0] / "checkpoints" / "dummy") == [32, 48, 64]
    assert not run_dir.exists()
    cfg = resolve_config("dummy", dummy_algo.components(), flags={"scenario": "pendulum"})
    assert prepare(cfg, run_dir, dummy_algo.components()).resume_step is None


def test_failed_save_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    tree = {"w": jnp.arange(4.0), "key": jnp.zeros((2,), jnp.uint32)}
    ckpts = Checkpoints(tmp_path / "c", max_to_keep=2, async_save=True)
    ckpts.save(1, tree, {"step": 1})
    ckpts.wait()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpts._manager, "save", no_space)
    with pytest.raises(CheckpointError, match=r"saving step 2 .* No space left on device.*earlier checkpoints are intact"):
        ckpts.save(2, tree, {"step": 2})
    monkeypatch.undo()
    assert ckpts.steps() == [1]
    restored = ckpts.restore(1, tree)
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(4.0))
    assert read_meta(tmp_path / "c" / "1") == {"step": 1}
    ckpts.close()


def test_unusable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="checkpoint: "):
        ckpts = Checkpoints(blocker / "c")
        ckpts.save(1, {"w": jnp.zeros(2)}, {})
        ckpts.wait()
def test_resume_from_the_previous_step_after_damage(base, tmp_path, capsys):
    base_dir, base_result = base
    run_dir = rf.copy_run(base_dir, tmp_path / "run")
    ck = run_dir / "checkpoints" / "dummy"
    meta = json.loads((ck / "64" / "meta" / "metadata").read_text())
    meta["csv_rows"] = 1
    (ck / "64" / "meta" / "metadata").write_text(json.dumps(meta))
    assert main(rf.ARGV + ["--run-dir", str(run_dir)], dummy_algo.components()) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rerun with --resume-from 48" in err[0], err
    (resumed,) = rf.train(run_dir, ["--resume-from", "48"])
    rf.assert_same_bits(resumed.state, base_result.state)
    assert rf.read_rows(run_dir) == rf.read_rows(base_dir)
    assert complete_steps(ck) == [32, 48, 64]
    assert [p.name[:13] for p in ck.iterdir() if "discarded" in p.name] == ["64.discarded-"]
    assert main(rf.ARGV + ["--run-dir", str(run_dir), "--resume-from", "5"], dummy_algo.components()) == 1
    assert "no complete checkpoint of step 5" in capsys.readouterr().err


def test_a_key_added_since_the_checkpoint_counts_with_its_default(base):
    """A checkpoint written before a configuration key existed resumes when the key is at its
    default now (the run was trained with that value), and is refused when it is not."""
    from oe3jax.training.config import build_schema
    from oe3jax.training.loop import check_resume

    base_dir, _ = base
    where = base_dir / "checkpoints" / "dummy" / str(max(complete_steps(base_dir / "checkpoints" / "dummy")))
    meta = read_meta(where)
    schema = build_schema(dummy_algo.components(), ("dummy",))
    cfg = json.loads(json.dumps(meta["config"]))
    assert cfg["sweep"] == {} and cfg["scenario_overrides"] == {}  # the defaults
    older = {**meta, "config": {k: v for k, v in cfg.items() if k not in ("sweep", "scenario_overrides")}}
    check_resume(older, cfg, meta["fingerprint"], where, schema)
    with pytest.raises(ResumeMismatch, match=r"^resume: sweep\.dummy\.lr is '\(absent\)' in the checkpoint"):
        check_resume(older, {**cfg, "sweep": {"dummy.lr": [0.1, 0.2]}}, meta["fingerprint"], where, schema)
