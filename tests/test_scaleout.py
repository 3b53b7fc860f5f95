"""Scaling out: the seed axis sharded over devices, checkpoints across device counts.

Several devices are forced on the CPU (``--xla_force_host_platform_device_count=4``) in a
subprocess, since JAX fixes its devices when it starts; this process keeps its single device.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import runner_fixtures as rf
from oe3jax.schema import ConfigError
from oe3jax.training.checkpoint import Checkpoints, read_meta

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SEEDS = ["--seeds", "4"]
HALF = ["--total-steps", "64"]  # checkpoints at 16 and 32 steps per env, of 64 at the end


def forced_env(devices: int) -> dict[str, str]:
    """The environment of a subprocess with ``devices`` forced CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                        "--xla_cpu_enable_concurrency_optimized_scheduler=false")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def four_devices(code: str, timeout: int = 600) -> str:
    """Run ``code`` with 4 forced CPU devices; its stdout, or the failure with its stderr."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=forced_env(4))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


SHARDED_RUNS = """
import json, sys
import jax, numpy as np
import runner_fixtures as rf
from oe3jax.schema import ConfigError

out = {{"devices": jax.device_count()}}
four = ["--seeds", "4", "--set", "parallel.devices=4"]
(a,) = rf.train({tmp!r} + "/four", four)
out["state_devices"] = sorted({{len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(a.state)}})
np.savez({tmp!r} + "/four.npz", *[np.asarray(x) for x in jax.tree_util.tree_leaves(a.state)])
# 4 -> 2 devices: a run saved on 4 devices at 32 steps per env, resumed on 2, ends as run "four"
rf.train({tmp!r} + "/half4", four + ["--total-steps", "64"])
(r,) = rf.train({tmp!r} + "/half4", ["--seeds", "4", "--set", "parallel.devices=2"])
rf.assert_same_bits(a.state, r.state)
out["rows_equal"] = rf.read_rows(rf.Path({tmp!r}) / "four") == rf.read_rows(rf.Path({tmp!r}) / "half4")
# 1 -> 4: the run saved by the one-device parent at 32 steps per env resumed on 4 devices
(q,) = rf.train({tmp!r} + "/half1", four)
np.savez({tmp!r} + "/half1.npz", *[np.asarray(x) for x in jax.tree_util.tree_leaves(q.state)])
out["half1_devices"] = len(jax.tree_util.tree_leaves(q.state)[0].sharding.device_set)
try:
    rf.train({tmp!r} + "/three", ["--seeds", "3", "--set", "parallel.devices=4"])
except ConfigError as exc:
    out["three"] = str(exc)
# null devices: as many of the 4 as divide 3 seeds
(t,) = rf.train({tmp!r} + "/three_auto", ["--seeds", "3", "--total-steps", "16"])
out["three_auto_devices"] = sorted({{len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(t.state)}})
# the environments of each run split over 4 devices (data parallel) against one device
envs = ["--seeds", "2", "--set", "dummy.num_envs=4"]
(e4,) = rf.train({tmp!r} + "/envs4", envs + ["--set", "parallel.axis=envs"])
(e1,) = rf.train({tmp!r} + "/envs1", envs + ["--set", "parallel.devices=1"])
out["envs_obs_devices"] = len(e4.state.obs.sharding.device_set)
out["envs_obs_shard"] = list(e4.state.obs.addressable_shards[0].data.shape)
out["envs_params_replicated"] = e4.state.params["w"].sharding.is_fully_replicated
np.savez({tmp!r} + "/envs4.npz", *[np.asarray(x) for x in jax.tree_util.tree_leaves(e4.state)])
np.savez({tmp!r} + "/envs1.npz", *[np.asarray(x) for x in jax.tree_util.tree_leaves(e1.state)])
out["envs_rows"] = [[r["reward_avg"], r["actor_loss"]] for r in rf.read_rows(rf.Path({tmp!r}) / "envs4")]
out["envs_rows1"] = [[r["reward_avg"], r["actor_loss"]] for r in rf.read_rows(rf.Path({tmp!r}) / "envs1")]
try:
    rf.train({tmp!r} + "/envs2", ["--set", "parallel.axis=envs", "--set", "parallel.devices=4"])
except ConfigError as exc:
    out["envs_two"] = str(exc)
print("RESULT " + json.dumps(out))
"""


def _leaves(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _close(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def forced(tmp_path_factory):
    """``(tmp, out)``: the runs of :data:`SHARDED_RUNS` in a 4-device subprocess, and what it found;
    the one-device half of "1 -> 4" is saved here first."""
    tmp = tmp_path_factory.mktemp("forced")
    rf.train(tmp / "half1", SEEDS + HALF)
    assert Checkpoints(tmp / "half1/checkpoints/dummy", read_only=True).steps() == [16, 32]
    text = four_devices(SHARDED_RUNS.format(tmp=str(tmp)))
    return tmp, json.loads(text.split("RESULT ", 1)[1])


def test_seed_axis_sharded_over_four_devices(forced):
    """4 seeds sharded over 4 devices; a checkpoint saved on 4 devices and resumed on 2 ends with
    the same bits and rows as the run on 4; 4 -> 1 and 1 -> 4 resume with every digest checked;
    seeds that do not divide over the devices are one line naming ``seeds``."""
    tmp_path, out = forced
    assert out["devices"] == 4 and out["rows_equal"] and out["state_devices"] == [4] and out["half1_devices"] == 4
    assert out["three"].startswith("seeds: 3 cannot be sharded over the 4 devices") and "\n" not in out["three"]
    assert out["three_auto_devices"] == [3]  # parallel.devices null: the devices that divide the seeds

    # the sharded run against the same seeds on this process's one device: the same numbers
    # (the partitioned program may round a few operations differently, see README "Scaling out")
    (one,) = rf.train(tmp_path / "one", SEEDS)
    four = _leaves(tmp_path / "four.npz")
    _close(four, jax.tree_util.tree_leaves(one.state))
    _close(_leaves(tmp_path / "half1.npz"), four)

    # 4 -> 1: the 4-device checkpoint, every array's digest checked, resumed on one device
    ckpt = tmp_path / "half4/checkpoints/dummy"
    assert read_meta(ckpt / "32")["config"]["parallel"]["devices"] == 4
    (resumed,) = rf.train(tmp_path / "half4", SEEDS + ["--resume-from", "32"])
    _close(jax.tree_util.tree_leaves(resumed.state), four)
    Checkpoints(ckpt, read_only=True).verify(64)


def test_data_parallel_envs_train_like_one_device(forced):
    """Each run's 4 environments split over 4 devices (parameters on every device) train like the
    same global batch on one device; a num_envs that does not divide is one line naming it."""
    tmp_path, out = forced
    assert out["envs_obs_devices"] == 4 and out["envs_obs_shard"] == [2, 1, 3] and out["envs_params_replicated"]
    _close(_leaves(tmp_path / "envs4.npz"), _leaves(tmp_path / "envs1.npz"))
    np.testing.assert_allclose(np.asarray(out["envs_rows"], float), np.asarray(out["envs_rows1"], float), rtol=1e-4)
    assert out["envs_two"].startswith("dummy.num_envs: 2 environments cannot be sharded over the 4 devices")


PROCESS = """
import sys
from oe3jax.training import distributed
# before the tests' dummy algorithm is imported: gymnax starts JAX on import
distributed.initialize("127.0.0.1:{port}", 2, {pid})
import runner_fixtures as rf
rf.train({run_dir!r}, ["--seeds", "4", "--distributed"] + {extra!r})
"""


def _two_processes(run_dir: Path, extra: list[str]) -> list[str]:
    """Train in two local processes of 2 forced CPU devices each (loopback only); their stdouts
    (without the connection lines of gloo, the CPU collectives' library)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS.format(port=port, pid=pid, run_dir=str(run_dir),
                                                                    extra=extra)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=forced_env(2))
             for pid in (0, 1)]
    outs = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr[-3000:]
        # blank lines dropped too: Gloo's log, split between writes, can leave one on process 1's stdout
        outs.append("".join(line for line in stdout.splitlines(keepends=True) if line.strip() and not _gloo_log(line)))
    return outs


def _gloo_log(line: str) -> bool:
    """A line of the Gloo library's own connection log (printed by its C++ side on stdout of every
    process, at times split over two lines: "[Gloo] Rank 1 is connected to 3 peer ranks." and
    "Expected number of connected peer ranks is : 3")."""
    return line.startswith("[Gloo]") or "peer ranks" in line


def test_two_processes_train_and_checkpoint_together(forced):
    """Two processes (2 devices each, jax.distributed over loopback) train 4 seeds, save, resume
    from their sharded checkpoint and end with the bits of the 4-device run; only process 0
    prints and writes; the checkpoint loads in this one-device process, digests checked."""
    tmp_path, _ = forced
    run_dir = tmp_path / "dist"
    first = _two_processes(run_dir, HALF)
    assert "steps" in first[0] and first[1] == ""
    second = _two_processes(run_dir, [])
    assert "resuming from" in second[0] and second[1] == ""
    assert rf.read_rows(run_dir) == rf.read_rows(tmp_path / "four")  # each row written once, as on 4 devices
    ckpt = Checkpoints(run_dir / "checkpoints/dummy", read_only=True)
    assert ckpt.steps() == [32, 48, 64]
    meta = ckpt.verify(64)
    assert meta["final"] and meta["csv_rows"] == 16

    def digests(run: Path) -> dict:
        return json.loads((run / "checkpoints/dummy/64/meta/metadata").read_text())["state_arrays"]

    assert digests(run_dir) == digests(tmp_path / "four")
def test_devices_checked_against_what_jax_sees(tmp_path):
    with pytest.raises(ConfigError, match=r"^parallel.devices: 2 devices asked for but JAX sees 1 \(cpu\)"):
        rf.train(tmp_path / "run", ["--set", "parallel.devices=2"])
    with pytest.raises(ConfigError, match=r"^parallel.devices: expected"):
        rf.train(tmp_path / "run", ["--set", "parallel.devices=0"])


def test_sweep_members_train_in_one_program_like_runs_alone(tmp_path):
    """Two learning rates x two seeds compile one chunk program; each member's rows carry its
    value, and its state is that of the same value swept alone or set as a plain key."""
    import io

    out = io.StringIO()
    (swept,) = rf.train(tmp_path / "sweep", ["--seeds", "2", "--sweep", "dummy.lr=0.01,0.03"], out=out)
    assert out.getvalue().count("compiled a chunk") == 1
    rows = rf.read_rows(tmp_path / "sweep")
    assert len(rows) == 4 * 4  # 4 chunks x 2 members x 2 seeds
    assert [(r["member"], r["dummy.lr"], r["seed"]) for r in rows[:4]] == [
        ("0", "0.01", "0"), ("0", "0.01", "1"), ("1", "0.03", "0"), ("1", "0.03", "1")]
    assert [float(r["lr"]) for r in rows[:4]] == pytest.approx([0.01, 0.01, 0.03, 0.03])

    # XLA may compile the 4-row and the 2-row programs with other vector widths (fused
    # multiply-adds or not), so the same numbers, not always the same bits
    (alone,) = rf.train(tmp_path / "alone", ["--seeds", "2", "--sweep", "dummy.lr=0.03"])
    member = jax.tree_util.tree_map(lambda x: x[2:], swept.state)
    _close(jax.tree_util.tree_leaves(member), jax.tree_util.tree_leaves(alone.state))
    assert [float(r["reward_avg"]) for r in rf.read_rows(tmp_path / "alone")] == pytest.approx(
        [float(r["reward_avg"]) for r in rows if r["member"] == "1"], rel=1e-5)

    (plain,) = rf.train(tmp_path / "plain", ["--seeds", "2", "--set", "dummy.lr=0.03"])
    _close(jax.tree_util.tree_leaves(member.train), jax.tree_util.tree_leaves(plain.state))
    first = np.asarray(swept.state.train.params["w"])
    assert not np.allclose(first[0], first[2])  # the members learned differently

    # load_policy takes a row of the sweep: member 1, seed index 1 is row 3
    import dummy_algo
    from oe3jax import load_policy

    policy = load_policy(tmp_path / "sweep", seed=3, components=dummy_algo.components())
    assert policy.seed == 1
    rf.assert_same_bits(policy.params, jax.tree_util.tree_map(lambda x: x[3], swept.state.train.params))


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "dummy.num_envs=2,4"], "sweep.dummy.num_envs: not a hyperparameter that dummy sweeps; accepted: dummy.lr"),
    (["--sweep", "dummy.lr=0.01,-1"], "sweep.dummy.lr: expected"),
    (["--sweep", "dummy.lr="], "--sweep 'dummy.lr=': expected key=v1,v2,..."),
    (["--algo", "all", "--sweep", "dummy.lr=0.1"], "sweep: give it with one --algo, not all"),
])
def test_bad_sweeps_are_one_line(tmp_path, argv, message):
    with pytest.raises(ConfigError) as err:
        rf.train(tmp_path / "run", argv)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_sweep_evaluation_names_the_best_member_with_its_interval(tmp_path):
    import dummy_algo

    def evaluate(policies, **kwargs):  # the return of each policy: its seed, plus 1 for lr 0.03
        return {name: {"return": float(p.seed) + (1.0 if "dummy.lr=0.03" in name else 0.0)}
                for name, p in policies.items()}

    (result,) = rf.train(tmp_path / "run", ["--seeds", "2", "--total-steps", "32", "--sweep", "dummy.lr=0.01,0.03"],
                         comps=dummy_algo.components(evaluate))
    sweep = result.evaluation["sweep"]
    assert [m["hyperparameters"] for m in sweep["members"]] == [{"dummy.lr": 0.01}, {"dummy.lr": 0.03}]
    assert [m["mean"] for m in sweep["members"]] == [0.5, 1.5] and sweep["best"] == 1
    low, high = sweep["members"][1]["ci"]
    assert 1.0 <= low <= 1.5 <= high <= 2.0
    assert "| 1 (best) | dummy.lr=0.03 | 1.5 |" in (tmp_path / "run/evaluation/dummy.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "127.0.0.1:1234"], "--coordinator, --num-processes and --process-id need --distributed"),
    (["--distributed", "--num-processes", "2", "--process-id", "2"],
     "--process-id: expected 0 to 1 (--num-processes 2), got 2"),
    (["--distributed", "--num-processes", "0"], "--num-processes: expected 1 or more, got 0"),
])
def test_bad_distributed_flags_are_one_line(tmp_path, argv, message):
    """Checked before jax.distributed.initialize is called (this process stays single)."""
    with pytest.raises(ConfigError) as err:
        rf.train(tmp_path / "run", argv)
    assert str(err.value) == message
    assert jax.process_count() == 1
