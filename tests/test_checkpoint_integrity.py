"""Checkpoint integrity: nothing damaged loads, and every checkpoint failure is one line on stderr.

The first tests use :class:`Checkpoints` directly on a small tree whose largest array is big enough
to get its own data file (no compile, fractions of a second); the last ones run the command line
and ``load_policy`` in subprocesses on the tiny dummy run and read their whole stderr.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import runner_fixtures as rf
from oe3jax.training.checkpoint import (
    CheckpointError,
    Checkpoints,
    DamagedCheckpoint,
    ResumeMismatch,
    complete_steps,
    read_meta,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _tree(scale: float = 1.0) -> dict:
    return {
        "params": {"w": jnp.arange(16_384, dtype=jnp.float32) * scale / 7.0, "b": jnp.ones(3)},
        "opt": {"mu": jnp.linspace(0.0, scale, 4096), "count": jnp.int32(5)},
        "key": jnp.arange(2, dtype=jnp.uint32),
    }


@pytest.fixture
def saved(tmp_path):
    """A directory with complete steps 1 and 2 (async saves), and the trees saved in them."""
    trees = {1: _tree(1.0), 2: _tree(2.0)}
    ckpts = Checkpoints(tmp_path / "c", max_to_keep=3, async_save=True)
    for step, tree in trees.items():
        ckpts.save(step, tree, {"step": step, "csv_rows": 3 * step})
    ckpts.close()
    return tmp_path / "c", trees


def _same_bits(a, b) -> None:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.reshape(-1).view(np.uint8).tobytes() == y.reshape(-1).view(np.uint8).tobytes()


def _restore(directory: Path, step: int, like: dict):
    ckpts = Checkpoints(directory, read_only=True, async_save=False)
    try:
        return ckpts.restore(step, like)
    finally:
        ckpts.close()


def _largest_data_file(step_dir: Path) -> Path:
    data = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(data, key=lambda p: p.stat().st_size)


def _edit_mid_file(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid] = raw[mid] ^ 0x01 if how == "flip one bit" else (raw[mid] + 0x5A) % 256
    path.write_bytes(bytes(raw))


def test_round_trip_is_verified_and_exact(saved):
    directory, trees = saved
    assert complete_steps(directory) == [1, 2]
    _same_bits(_restore(directory, 2, trees[2]), trees[2])
    assert read_meta(directory / "2") == {"step": 2, "csv_rows": 6}
    ckpts = Checkpoints(directory, read_only=True, async_save=False)
    assert ckpts.verify(2) == {"step": 2, "csv_rows": 6}  # without an abstract tree
    ckpts.close()


@pytest.mark.parametrize("how", ["flip one bit", "change one byte"])
def test_changed_data_file_is_damaged_naming_the_step(saved, how):
    directory, trees = saved
    _edit_mid_file(_largest_data_file(directory / "2"), how)
    with pytest.raises(DamagedCheckpoint, match=r"step 2 at .*/2 is damaged: .*--resume-from 1 ") as info:
        _restore(directory, 2, trees[2])
    assert "\n" not in str(info.value) and info.value.step == 2 and info.value.previous == 1
    _same_bits(_restore(directory, 1, trees[1]), trees[1])  # the previous step is intact


def test_edited_metadata_is_damaged(saved):
    directory, trees = saved
    path = directory / "2" / "meta" / "metadata"
    meta = json.loads(path.read_text())
    meta["csv_rows"] = 3
    path.write_text(json.dumps(meta))
    with pytest.raises(DamagedCheckpoint, match="step 2 at .* is damaged: its metadata differs from its recorded"):
        read_meta(directory / "2")
    with pytest.raises(DamagedCheckpoint, match="step 2 at .* is damaged"):
        _restore(directory, 2, trees[2])


def test_metadata_without_digests_is_damaged(saved):
    directory, trees = saved
    path = directory / "2" / "meta" / "metadata"
    path.write_text(json.dumps({"step": 2, "csv_rows": 6}))
    with pytest.raises(DamagedCheckpoint, match="its metadata carries no digests"):
        _restore(directory, 2, trees[2])


def test_deleted_state_metadata_is_damaged_not_a_config_change(saved):
    directory, trees = saved
    (directory / "2" / "state" / "_METADATA").unlink()
    with pytest.raises(DamagedCheckpoint, match="step 2 at .* is damaged"):
        _restore(directory, 2, trees[2])
    ckpts = Checkpoints(directory, read_only=True, async_save=False)
    with pytest.raises(DamagedCheckpoint, match="step 2 at .* is damaged"):
        ckpts.verify(2)
    ckpts.close()


def test_any_missing_file_is_damaged_or_harmless(saved, tmp_path):
    """Deleting any one file of a finished step never loads other values and is never taken for
    a configuration change: the restore raises DamagedCheckpoint, or (for a file the restore does
    not read) gives back exactly what was saved."""
    directory, trees = saved
    files = sorted(p.relative_to(directory) for p in (directory / "2").rglob("*") if p.is_file())
    assert len(files) > 5
    damaged = []
    for k, rel in enumerate(files):
        copy = tmp_path / f"copy{k}"
        shutil.copytree(directory, copy)
        (copy / rel).unlink()
        try:
            out = _restore(copy, 2, trees[2])
        except DamagedCheckpoint:
            damaged.append(str(rel))
            continue
        _same_bits(out, trees[2])
    assert "2/state/_METADATA" in damaged and "2/meta/metadata" in damaged


def test_another_layout_is_still_a_config_change(saved):
    directory, trees = saved
    other = dict(trees[2], params={"w": jnp.zeros(8), "b": jnp.ones(3)})
    with pytest.raises(ResumeMismatch, match="params/w is float32\\[16384\\] in the checkpoint"):
        _restore(directory, 2, other)


def _replay(capacity: int, adds: int, seeds: int = 2):
    """A replay buffer per seed (vmapped, as the runner holds it) after ``adds`` batches of 3
    transitions of random data, beside another leaf."""
    from oe3jax.learning import buffer as rb

    def one(key):
        buf = rb.init(capacity, 5, 2)
        for k in jax.random.split(key, adds):
            x = jax.random.normal(k, (3, 5))
            buf = rb.add(buf, rb.Transition(x, x[:, :2], x[:, 0], x + 1.0, x[:, 1] > 0))
        return buf

    return {"replay": jax.vmap(one)(jax.random.split(jax.random.key(3), seeds)), "w": jnp.arange(4.0)}


@pytest.mark.parametrize("adds", [1, 4, 7])  # 3 and 12 of 20 slots filled; 21 transitions wrap around
def test_replay_buffer_saved_up_to_its_filled_slots_and_restored_exactly(tmp_path, adds):
    tree = _replay(20, adds)
    filled = min(3 * adds, 20)
    tail = np.asarray(tree["replay"].data.obs)[:, filled:]
    assert tail.size == 0 or not tail.any()  # the slots never written are zeros
    ckpts = Checkpoints(tmp_path / "c", async_save=True)
    ckpts.save(1, tree, {})
    ckpts.close()
    full = json.loads((tmp_path / "c/1/meta/metadata").read_text())
    assert full["state_arrays"]["replay/data/obs"]["shape"] == [2, filled, 5]
    assert full["state_arrays"]["w"]["shape"] == [4]
    assert full.get("compacted", {}) == ({} if filled == 20 else {
        "replay/data/obs": [2, 20, 5], "replay/data/action": [2, 20, 2], "replay/data/reward": [2, 20],
        "replay/data/next_obs": [2, 20, 5], "replay/data/terminated": [2, 20]})
    assert "compacted" not in read_meta(tmp_path / "c/1")  # an integrity field, like the digests
    _same_bits(_restore(tmp_path / "c", 1, jax.eval_shape(lambda: tree)), tree)
    Checkpoints(tmp_path / "c", read_only=True, async_save=False).verify(1)  # as saved, digests checked


def test_compacted_replay_buffer_of_another_capacity_is_a_config_change(tmp_path):
    ckpts = Checkpoints(tmp_path / "c", async_save=False)
    ckpts.save(1, _replay(20, 2), {})
    ckpts.close()
    with pytest.raises(ResumeMismatch, match=r"replay/data/\w+ is \w+\[2, 20(, \d)?\] in the checkpoint but "
                                             r"\w+\[2, 30(, \d)?\] with this configuration"):
        _restore(tmp_path / "c", 1, jax.eval_shape(lambda: _replay(30, 2)))


def test_resume_from_an_earlier_step(saved):
    directory, trees = saved
    ckpts = Checkpoints(directory, max_to_keep=3, async_save=False)
    assert ckpts.resume_step() == 2 and ckpts.resume_step(1) == 1
    with pytest.raises(CheckpointError, match=r"--resume-from 5: no complete checkpoint .* steps: 1, 2"):
        ckpts.resume_step(5)
    moved = ckpts.discard_after(1)
    assert [p.name.split(".")[0] for p in moved] == ["2"] and all(p.is_dir() for p in moved)
    assert ckpts.steps() == [1] and complete_steps(directory) == [1]
    ckpts.save(2, trees[1], {"step": 2})  # the step can be saved again
    ckpts.close()
    _same_bits(_restore(directory, 2, trees[1]), trees[1])


ENOSPC_SCRIPT = """
import errno, sys
sys.path[:0] = [{tests!r}, {root!r}]
from etils import epath

path_type = type(epath.Path("/"))
write_text = path_type.write_text

def full_disk(self, *args, **kwargs):  # the disk fills up during the save of step {step}
    if "/{step}.orbax-checkpoint-tmp" in str(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    return write_text(self, *args, **kwargs)

path_type.write_text = full_disk
{body}
"""

DIRECT_BODY = """
import jax.numpy as jnp
from oe3jax.training.checkpoint import CheckpointError, Checkpoints
tree = {{"w": jnp.arange(16384.0), "n": jnp.int32(1)}}
ckpts = Checkpoints({directory!r}, max_to_keep=3, async_save=True)
try:
    for step in (1, 2, 3):
        ckpts.save(step, tree, {{"step": step}})
    ckpts.wait()
except CheckpointError as exc:
    print(exc, file=sys.stderr)
finally:
    ckpts.close()
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_failed_async_save_is_reported_under_its_own_step(tmp_path):
    directory = tmp_path / "c"
    body = DIRECT_BODY.format(directory=str(directory))
    proc = _run(ENOSPC_SCRIPT.format(tests=str(TESTS), root=str(ROOT), step=2, body=body))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 0 and len(err) == 1, proc.stderr[-3000:]
    assert err[0].startswith("checkpoint: saving step 2 in ") and "failed: No space left on device" in err[0]
    assert "the earlier checkpoints are intact (step 1)" in err[0]
    assert complete_steps(directory) == [1]
    out = _restore(directory, 1, {"w": jnp.zeros(16384), "n": jnp.int32(0)})
    np.testing.assert_array_equal(np.asarray(out["w"]), np.arange(16384.0))


RUN_BODY = """
import dummy_algo, runner_fixtures as rf
from oe3jax.training.cli import main
sys.exit(main(rf.ARGV + ["--run-dir", {run_dir!r}], dummy_algo.components()))
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return rf.baseline(tmp_path_factory)


def test_full_disk_during_async_save_is_one_line_and_resume_is_exact(base, tmp_path):
    base_dir, base_result = base
    run_dir = tmp_path / "run"
    body = RUN_BODY.format(run_dir=str(run_dir))
    proc = _run(ENOSPC_SCRIPT.format(tests=str(TESTS), root=str(ROOT), step=48, body=body))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, proc.stderr[-3000:]
    assert err[0].startswith("error: checkpoint: saving step 48 in ")
    assert "No space left on device; the earlier checkpoints are intact (steps 16, 32)" in err[0]
    assert complete_steps(run_dir / "checkpoints" / "dummy") == [16, 32]
    (resumed,) = rf.train(run_dir)
    rf.assert_same_bits(resumed.state, base_result.state)
    assert rf.read_rows(run_dir) == rf.read_rows(base_dir)


DAMAGED_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
import dummy_algo, runner_fixtures as rf
from oe3jax.training.cli import main
for run_dir in {run_dirs!r}:
    code = main(rf.ARGV + ["--run-dir", run_dir, "--total-steps", "192"], dummy_algo.components())
    assert code == 1, code
"""


def _damage(run_dir: Path, how: str) -> None:
    step = run_dir / "checkpoints" / "dummy" / "64"
    if how == "manifest":
        _edit_mid_file(step / "state" / "manifest.ocdbt", "flip one bit")
    elif how == "csv_rows":
        path = step / "meta" / "metadata"
        meta = json.loads(path.read_text())
        meta["csv_rows"] -= rf.SEEDS
        path.write_text(json.dumps(meta))
    elif how == "state metadata":
        (step / "state" / "_METADATA").unlink()


DAMAGES = ["manifest", "csv_rows", "state metadata"]


def test_damaged_checkpoint_is_one_line_on_the_command_line(base, tmp_path):
    base_dir, _ = base
    run_dirs = []
    for k, how in enumerate(DAMAGES):
        run_dir = rf.copy_run(base_dir, tmp_path / f"run{k}")
        _damage(run_dir, how)
        run_dirs.append(str(run_dir))
    proc = _run(DAMAGED_SCRIPT.format(tests=str(TESTS), root=str(ROOT), run_dirs=run_dirs))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 0 and len(err) == len(DAMAGES), proc.stderr[-3000:]
    for line, run_dir in zip(err, run_dirs):
        assert line.startswith(f"error: checkpoint: step 64 at {run_dir}/checkpoints/dummy/64 is damaged: "), line
        assert line.endswith("rerun with --resume-from 48 to resume from the previous complete checkpoint, "
                             "or --fresh to start over"), line
    for run_dir in run_dirs:  # nothing was written: the progress rows are those of the checkpoint
        assert rf.read_rows(Path(run_dir)) == rf.read_rows(base_dir)


POLICY_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
import dummy_algo
from oe3jax import load_policy
from oe3jax.training.checkpoint import CheckpointError
for run_dir in {run_dirs!r}:
    try:
        policy = load_policy(run_dir, components=dummy_algo.components())
        print(policy.step)
    except CheckpointError as exc:
        print(exc, file=sys.stderr)
"""


def test_load_policy_is_quiet_and_refuses_damage_in_one_line(base, tmp_path):
    base_dir, _ = base
    run_dirs = [str(base_dir)]
    for k, how in enumerate(["manifest", "csv_rows"]):
        run_dir = rf.copy_run(base_dir, tmp_path / f"run{k}")
        _damage(run_dir, how)
        run_dirs.append(str(run_dir))
    proc = _run(POLICY_SCRIPT.format(tests=str(TESTS), root=str(ROOT), run_dirs=run_dirs))
    assert proc.returncode == 0 and proc.stdout.split() == ["64"], proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 2, proc.stderr[-3000:]  # the intact run printed nothing (no Orbax warning)
    for line, run_dir in zip(err, run_dirs[1:]):
        assert line.startswith(f"checkpoint: step 64 at {run_dir}/checkpoints/dummy/64 is damaged: "), line
        assert line.endswith("pass step=48 to load the previous complete checkpoint"), line


def test_damage_advice_for_the_command_line_the_api_and_paths(tmp_path):
    for step in (16, 32, 48):
        (tmp_path / str(step)).mkdir()
    damaged = DamagedCheckpoint(tmp_path / "48", "x")
    assert str(damaged).endswith("rerun with --resume-from 32 to resume from the previous complete checkpoint, "
                                 "or --fresh to start over")
    assert str(damaged.for_api()).endswith("pass step=32 to load the previous complete checkpoint")
    assert str(damaged.by_path()) == (f"checkpoint: step 48 at {tmp_path / '48'} is damaged: x; give {tmp_path / '32'} "
                                      "instead to use the previous complete checkpoint")
    assert str(DamagedCheckpoint(tmp_path / "16", "x").by_path()).endswith(
        "is damaged: x; no earlier complete checkpoint is left")



_COROUTINE = """
class _Pending:
    def __await__(self):
        yield


async def _read_array_index_and_device_put():
    try:
        await _Pending()
    finally:  # closed when collected: the read's error escapes as Orbax's does
        raise Exception("Encountered error while reading array index. See full TensorStore details: <bound method>")
"""


def test_orbax_coroutines_collected_after_a_failed_read_stay_off_stderr(tmp_path):
    """Whether Python reports an Orbax read coroutine that failed depends on when it is collected
    (it did in one run of five under load): the hook drops it; any other coroutine is reported."""
    script = f"""
import gc
from oe3jax.training import checkpoint
checkpoint._quiet()
for where in ("{tmp_path}/site-packages/orbax/checkpoint/_src/serialization/serialization.py", "{tmp_path}/mine.py"):
    space = {{}}
    exec(compile({_COROUTINE!r}, where, "exec"), space)
    task = space["_read_array_index_and_device_put"]()
    task.send(None)
    del task
    gc.collect()
print("done")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout == "done\n", proc.stderr[-3000:]
    assert proc.stderr.count("Exception ignored in") == 1 and "mine.py" in proc.stderr, proc.stderr
    assert "site-packages/orbax" not in proc.stderr
