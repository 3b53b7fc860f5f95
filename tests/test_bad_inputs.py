"""Bad configuration files, command lines and output paths end in one clear line, never a traceback.

Cheap checks first (the YAML loader, integer bounds, memory and path checks, evaluate.py's
arguments); the evaluate.py cases that need a trained run share one smoke run per module.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dummy_algo
from oe3jax.schema import (
    BUFFER_SIZE_MAX, INT32_MAX, MAX_CONFIG_BYTES, SEED_MAX, TOTAL_STEPS_MAX, ConfigError, Field, load_yaml,
    parse_assignment, resolve,
)
from oe3jax.training import resources
from oe3jax.training.cli import main as train_main

ROOT = Path(__file__).resolve().parent.parent
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "running as root: permission bits do not stop root's writes, so no unwritable directory can be made"


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    return _one_line(str(info.value))


def _yaml(tmp_path: Path, content: str | bytes, name: str = "c.yaml") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------------------------
# Configuration files
# --------------------------------------------------------------------------------------------

def test_config_path_that_is_no_file(tmp_path):
    assert _refused(load_yaml, str(tmp_path)) == f"--config: {tmp_path} is a directory, not a YAML file"
    assert _refused(load_yaml, "") == "--config: expected the path of a YAML file, got an empty string"
    assert _refused(load_yaml, str(tmp_path / "none.yaml")) == f"--config: file not found: {tmp_path / 'none.yaml'}"


@pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)
def test_config_unreadable(tmp_path):
    path = _yaml(tmp_path, "algo: ppo\n")
    os.chmod(path, 0)
    assert _refused(load_yaml, path) == f"--config: {path}: cannot be read (permission denied)"


def test_config_not_utf8_names_the_byte(tmp_path):
    path = _yaml(tmp_path, b"algo: ppo\n# caf\xe9\n")
    assert _refused(load_yaml, path) == f"--config: {path} is not UTF-8 text: byte 0xe9 at offset 15 (line 2)"


def test_config_too_large(tmp_path):
    path = _yaml(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\nalgo: ppo\n")
    assert _refused(load_yaml, path).endswith("is larger than 1024 KiB; a configuration is a few kB of YAML")


def test_config_duplicate_key_names_key_and_lines(tmp_path):
    path = _yaml(tmp_path, "seeds: 1\nppo:\n  lr: 0.1\n  lr: 0.2\n")
    assert _refused(load_yaml, path) == f"--config: {path} line 4: duplicate key 'lr' (first at line 3)"


def test_config_keys_must_be_names(tmp_path):
    path = _yaml(tmp_path, "algo: ppo\n1: 2\n")
    assert _refused(load_yaml, path).startswith(f"--config: {path} line 2: key 1 is not a name")
    path = _yaml(tmp_path, "ppo:\n  on: 1\n")  # YAML 1.1 reads on as true
    assert _refused(load_yaml, path).startswith(f"--config: {path} line 2: key True is not a name")


def test_config_alias_bomb_is_refused(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = _yaml(tmp_path, "\n".join(lines) + "\n")  # 9**9 strings once expanded
    assert _refused(load_yaml, path) == (
        f"--config: {path} line 1: anchors and aliases (&a, *a) are not accepted in a configuration; "
        "write the value out"
    )
    path = _yaml(tmp_path, "a: {<<: {x: 1}, y: 2}\n")
    assert _refused(load_yaml, path).endswith("line 1: merge keys (<<) are not accepted in a configuration")


@pytest.mark.parametrize("content, message", [
    ("a: 1\n b: 2\n", "line 2: not valid YAML (mapping values are not allowed here)"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "line 1: nested more than 16 levels deep"),
    ("a: 1\x00\n", "line 1: not valid YAML (control character #x0000 is not allowed)"),
    ("a: 1" + "0" * 5000 + "\n", ": a number of more than 4300 digits"),
    ("a: !!python/object:os.system {}\n", "line 1: not valid YAML (could not determine a constructor"),
    ("- 1\n- 2\n", " must hold a mapping of keys, got list"),
])
def test_config_malformed_names_the_line(tmp_path, content, message):
    path = _yaml(tmp_path, content)
    assert message in _refused(load_yaml, path)


def test_the_shipped_configs_still_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert isinstance(load_yaml(str(path)), dict)


def test_set_values_are_read_as_strictly(tmp_path):
    assert _refused(parse_assignment, "ppo={1: 2, a: 3}").startswith("--set ppo column 2: key 1 is not a name")
    assert _refused(parse_assignment, "x=[1, &a 2, *a]").startswith("--set x column 5: anchors and aliases")
    assert _refused(parse_assignment, "c={every: 1, every: 2}") == "--set c column 12: duplicate key 'every' (first at column 2)"
    assert _refused(parse_assignment, "ppo..lr=1").endswith("expected dotted key names such as ppo.lr, got an empty name")
    assert _refused(parse_assignment, "seed=1" + "0" * 5000) == "--set seed: a number of more than 4300 digits"
    assert parse_assignment("ppo.lr=3e-4") == ("ppo.lr", 3e-4)


def test_mixed_keys_in_a_section_are_named_not_compared():
    spec = {"ppo": {"lr": Field(0.1, float)}}
    assert _refused(resolve, spec, {"ppo": {1: 2, "a": 3}}) == "ppo.1: a key must be a name; accepted keys in ppo: lr"
    assert _refused(resolve, spec, {2: 1, "x": 3}).startswith("2: a key must be a name; accepted keys in the top level")


@pytest.mark.parametrize("argv_tail, start", [
    (["--config", "DIR"], "error: --config: DIR is a directory"),
    (["--config", "BYTES"], "error: --config: BYTES is not UTF-8 text"),
    (["--config", "MIXED"], "error: --config: MIXED line 2: key 1 is not a name"),
    (["--config", "DUP"], "error: --config: DUP line 2: duplicate key 'seeds'"),
    (["--set", "dummy={1: 2, lr: 3}"], "error: --set dummy column 2: key 1 is not a name"),
    (["--set", "x=&a [1]"], "error: --set x column 1: anchors and aliases (&a, *a) are not accepted"),
    (["--set", "dummy.num_envs=1e12"], "error: dummy.num_envs: expected an integer in [1, 2147483647], got 1000000000000.0"),
    (["--run-dir", ""], "error: --run-dir: expected a directory path, got an empty string"),
])
def test_train_exits_2_with_one_line(tmp_path, capsys, argv_tail, start):
    names = {
        "DIR": str(tmp_path),
        "BYTES": _yaml(tmp_path, b"seeds: 1\n\xff\n", "bytes.yaml"),
        "MIXED": _yaml(tmp_path, "seeds: 1\n1: 2\n", "mixed.yaml"),
        "DUP": _yaml(tmp_path, "seeds: 1\nseeds: 2\n", "dup.yaml"),
    }
    argv_tail = [names.get(a, a) for a in argv_tail]
    start = " ".join(names.get(w, w) for w in start.split(" "))
    rc = train_main(["--algo", "dummy", "--scenario", "pendulum", "--run-dir", str(tmp_path / "r"), *argv_tail],
                    dummy_algo.components())
    assert rc == 2
    assert _one_line(capsys.readouterr().err).startswith(start)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------
# Integer bounds
# --------------------------------------------------------------------------------------------

SPEC = {  # the bounds of the run's top-level keys
    "seed": Field(0, int, low=0, high=SEED_MAX),
    "seeds": Field(1, int, low=1),
    "total_steps": Field(1000, int, low=1, high=TOTAL_STEPS_MAX),
    "eval": {"seed": Field(0, int, low=0, high=SEED_MAX)},
    "sac": {"buffer_size": Field(100, int, low=1, high=BUFFER_SIZE_MAX)},
}


@pytest.mark.parametrize("user, message", [
    ({"seed": 2**32}, "seed: expected an integer in [0, 4294967295], got 4294967296"),
    ({"seed": 2**70}, "seed: expected an integer in [0, 4294967295], got 1180591620717411303424"),
    ({"seeds": 2**31}, "seeds: expected an integer in [1, 2147483647], got 2147483648"),
    ({"total_steps": 10**30}, "total_steps: expected an integer in [1, 2147483647], got 1000000000000000000000000000000"),
    ({"total_steps": 1e30}, "total_steps: expected an integer in [1, 2147483647], got 1e+30"),
    ({"eval": {"seed": -1}}, "eval.seed: expected an integer in [0, 4294967295], got -1"),
    ({"sac": {"buffer_size": 10**11}}, "sac.buffer_size: expected an integer in [1, 1073741824], got 100000000000"),
])
def test_integer_bounds_of_the_program(user, message):
    assert _refused(resolve, SPEC, user) == message


def test_largest_accepted_integers():
    cfg = resolve(SPEC, {"seed": SEED_MAX, "total_steps": TOTAL_STEPS_MAX, "seeds": INT32_MAX,
                         "sac": {"buffer_size": BUFFER_SIZE_MAX}})
    assert (cfg["seed"], cfg["total_steps"], cfg["seeds"]) == (2**32 - 1, 2**31 - 1, 2**31 - 1)
    assert Field(1, list, item=int, low=1).accepted() == "a list of integers in [1, 2147483647]"
    assert Field(1.0, float, low=0.0).accepted() == "a number in [0, inf]"


def test_seed_range_of_a_study():
    resources.check_seed_range({"seed": SEED_MAX - 2, "seeds": 3})
    assert _refused(resources.check_seed_range, {"seed": SEED_MAX - 2, "seeds": 4}).startswith(
        f"seeds: expected at most 3 with seed {SEED_MAX - 2}"
    )


def test_step_counters_fit_int32():
    cfg = {"algo": "sac", "total_steps": TOTAL_STEPS_MAX, "sac": {"gradient_steps": 1}}
    resources.check_step_counts(cfg, TOTAL_STEPS_MAX, 1, 1)
    # 2**31 - 1 steps rounded up to whole updates of 8 env steps: one more update than fits
    assert _refused(resources.check_step_counts, cfg, TOTAL_STEPS_MAX // 8 + 1, 8, 1) == (
        "total_steps: 2,147,483,647 rounded up to whole updates of 8 env steps is 2,147,483,648, more than "
        "the int32 step counters hold; expected total_steps at most 2,147,483,640"
    )
    assert _refused(resources.check_step_counts, cfg, 1, 2**30, 4).startswith(
        "sac.num_envs: one update takes 4,294,967,296 env steps (1,073,741,824 envs x 4)"
    )
    cfg = {"algo": "sac", "total_steps": 10**6, "sac": {"gradient_steps": 10**4}}
    assert _refused(resources.check_step_counts, cfg, 10**6, 1, 1).startswith(
        "sac.gradient_steps: 1,000,000 updates x 10,000 gradient steps exceed the int32 gradient-step counter"
    )


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def test_check_memory_names_the_allocation():
    resources.check_memory(10, "x", available=10)
    line = _refused(resources.check_memory, 2 * 10**9, "sac.buffer_size: the replay buffer", "use less",
                    available=10**9)
    assert line == "sac.buffer_size: the replay buffer needs 2.00 GB but this machine has 1.00 GB available; use less"
    line = _refused(resources.check_memory, 10**400, "seeds: the train state", available=10**9)
    assert "needs 1.000e+391 GB" in line  # no float overflow


def test_host_memory_is_read():
    avail = resources.host_available_memory()
    assert avail is None or avail > 0
    if Path("/proc/meminfo").is_file():
        assert avail is not None


@pytest.fixture(scope="module")
def sac_setup():
    from oe3jax.training import config

    comps = config.default_components()
    algo = config.load_algo(comps, "sac")

    def make(**sac):
        cfg = config.resolve_config("sac", comps, sets=[f"sac.{k}={v}" for k, v in sac.items()],
                                    flags={"scenario": "iquitos-38"})
        env, params = comps.make_env(cfg["scenario"], **cfg["env"])
        return cfg, env, params

    return algo, make


def test_replay_buffer_larger_than_memory_names_the_largest_that_fits(sac_setup):
    algo, make = sac_setup
    cfg, env, params = make(buffer_size=10**9)
    available = 3 * 10**9
    line = _refused(resources.check_train_memory, algo, env, params, cfg, copies=2, available=available)
    assert line.startswith("sac.buffer_size: the train state (1 seed x ")
    largest = int(line.split("the largest sac.buffer_size that fits is ")[1].split()[0].replace(",", ""))
    fits, over = (resources.state_nbytes(algo, env, params, make(buffer_size=n)[0]) for n in (largest, largest + 1))
    assert 2 * fits <= available < 2 * over
    # the largest value the schema accepts, with many seeds: exact integers, one line
    cfg, env, params = make(buffer_size=BUFFER_SIZE_MAX)
    cfg = {**cfg, "seeds": 1000}
    line = _refused(resources.check_train_memory, algo, env, params, cfg, copies=1, available=10**8)
    assert "no sac.buffer_size fits with 1,000 seeds; use fewer --seeds" in line


def test_many_seeds_larger_than_memory(tmp_path):
    from oe3jax.training import config

    comps = dummy_algo.components()
    cfg = config.resolve_config("dummy", comps, flags={"scenario": "pendulum", "seeds": 10**6})
    env, params = comps.make_env("pendulum")
    algo = config.load_algo(comps, "dummy")
    per_seed = resources.state_nbytes(algo, env, params, cfg)
    line = _refused(resources.check_train_memory, algo, env, params, cfg, copies=1, available=per_seed * 1000)
    assert line.startswith("seeds: the train state (1,000,000 seeds x ") and line.endswith("use at most 1,000 seeds")
    resources.check_train_memory(algo, env, params, {**cfg, "seeds": 1000}, copies=1, available=per_seed * 1000)


# --------------------------------------------------------------------------------------------
# Output paths
# --------------------------------------------------------------------------------------------

def test_run_dir_that_is_a_file_or_under_one(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _refused(resources.check_writable_dir, afile) == f"--run-dir: {afile} is a file, not a directory"
    assert _refused(resources.check_writable_dir, afile / "a" / "b", "--out") == (
        f"--out: cannot create {afile / 'a' / 'b'}: {afile} is a file, not a directory"
    )
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    assert _refused(resources.check_writable_dir, link) == f"--run-dir: {link} is a broken symbolic link"
    long = tmp_path / ("n" * 300)
    assert _refused(resources.check_writable_dir, long) == f"--run-dir: cannot use {long} (File name too long)"
    assert _refused(resources.check_writable_dir, tmp_path / "new" / long.name).endswith(
        "a name in it is longer than 255 bytes"
    )


def test_run_dir_creatable_leaves_nothing_behind(tmp_path):
    before = sorted(tmp_path.iterdir())
    assert resources.check_writable_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    resources.check_writable_dir(tmp_path, rename=True)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)
def test_run_dir_in_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    (ro / "run").mkdir(parents=True)
    ro.chmod(0o555)
    try:
        assert _refused(resources.check_writable_dir, ro / "new") == (
            f"--run-dir: cannot write {ro / 'new'}: {ro} is not writable (permission denied)"
        )
        resources.check_writable_dir(ro / "run")  # an existing writable run directory is fine ...
        assert "is not writable" in _refused(resources.check_writable_dir, ro / "run", rename=True)  # ... not --fresh
    finally:
        ro.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_run_dir_where_nothing_can_be_created():
    """Under /proc nothing can be created, not even by root."""
    assert _refused(resources.check_writable_dir, "/proc/oe3jax-run").startswith(
        "--run-dir: cannot write /proc/oe3jax-run: "
    )


def test_output_file_paths(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _refused(resources.check_writable_file, tmp_path, "--markdown") == f"--markdown: {tmp_path} is a directory, not a file"
    assert _refused(resources.check_writable_file, afile / "t.md", "--markdown") == (
        f"--markdown: cannot create {afile / 't.md'}: {afile} is a file, not a directory"
    )
    assert resources.check_writable_file(tmp_path / "new" / "t.md", "--markdown") == tmp_path / "new" / "t.md"


# --------------------------------------------------------------------------------------------
# scripts/evaluate.py
# --------------------------------------------------------------------------------------------

def _evaluate_module():
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluate(capsys, argv) -> tuple[int, str]:
    rc = _evaluate_module().main([str(a) for a in argv])
    return rc, _one_line(capsys.readouterr().err)


def test_evaluate_bad_arguments(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rule = ["--policy", "rule", "--scenario", "iquitos-38", "--hours", "24"]
    cases = [
        ([tmp_path / "none"], f"error: run_dir: {tmp_path / 'none'} does not exist (expected a run or checkpoint directory)"),
        ([*rule, "--out", afile], f"error: --out: {afile} is a file, not a directory"),
        ([*rule, "--out", ""], "error: --out: expected a directory path, got an empty string"),
        ([*rule, "--out", tmp_path, "--markdown", " "], "error: --markdown: expected a file path, got an empty string"),
        ([*rule, "--out", afile / "sub"], f"error: --out: cannot create {afile / 'sub'}: {afile} is a file, not a directory"),
        ([*rule, "--out", tmp_path, "--markdown", tmp_path], f"error: --markdown: {tmp_path} is a directory, not a file"),
        ([*rule, "--out", tmp_path, "--seed", 2**40], "error: --seed: expected an integer in [0, 4294967295] (a uint32 seed), got 1099511627776"),
        (["--policy", "rule", "--out", tmp_path, "--hours", 10**12], "error: --hours: expected an integer in [1, 87600], got 1000000000000"),
        (["--policy", "best", "--out", tmp_path], "error: --policy: unknown policy 'best'; accepted: uncontrolled, rule, optimal"),
    ]
    run = tmp_path  # an existing directory: the options are checked before anything is loaded
    cases += [
        ([run, "--eval-seeds", 0], "error: --eval-seeds: expected an integer in [1, 1,000] (each seed is one "
                                   "condition per weather year), got 0"),
        ([run, "--eval-seeds", 10**8], "error: --eval-seeds: expected an integer in [1, 1,000] (each seed is one "
                                       "condition per weather year), got 100000000"),
        ([run, "--first-eval-seed", -1], "error: --first-eval-seed: expected an integer in [0, 4294967286] so that "
                                         "the last of 10 seeds is a uint32 seed, got -1"),
        ([run, "--seed", 3], "error: --seed: applies to --policy; with run directories the arrival seeds are "
                             "--first-eval-seed S onwards (--eval-seeds N of them)"),
        ([run, "--policy", "rule"], "error: --policy: evaluates baselines alone; with run directories every "
                                    "baseline is evaluated beside the runs (leave --policy out)"),
        ([run, "--hours", 9000], "error: --hours: expected an integer in [1, 8760] with run directories "
                                 "(conditions are episodes from 1 January), got 9000"),
        ([*rule, "--years", "syn1"], "error: --years: applies to run directories; give RUN_DIR... or leave --years out"),
    ]
    for argv, message in cases:
        assert _evaluate(capsys, argv) == (2, message)
    rc, line = _evaluate(capsys, [run, "--years", "1999"])
    assert rc == 2 and line.startswith("error: --years: unknown weather year '1999'; accepted: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "smoke"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", "configs/smoke.yaml",
         "--set", "eval.enabled=false", "--run-dir", str(run)],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )
    return run


def test_evaluate_policy_of_another_scenario(trained_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(trained_run), "--scenario", "iquitos-128",
         "--hours", "24", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2
    line = [l for l in proc.stderr.splitlines() if l.startswith("error:") or "Traceback" in l]
    assert line == [
        f"error: --scenario: the policy in {trained_run} was trained on 'iquitos-38' (177 observations, 39 actions) "
        "and cannot act on 'iquitos-128' (537 observations, 129 actions); evaluate it on 'iquitos-38' or a "
        "scenario of the same size"
    ]


def test_evaluate_statistics_of_a_run(trained_run, tmp_path, capsys):
    import jax

    from oe3jax import load_policy
    from oe3jax.evaluation.kpis import policy_kpis

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    argv = [run, "--eval-seeds", 2, "--hours", 24, "--no-optimal", "--out", tmp_path / "all"]
    assert _evaluate_module().main([str(a) for a in argv]) == 0
    capsys.readouterr()
    for where in (run / "evaluation", tmp_path / "all"):
        report = json.loads((where / "statistics.json").read_text())
        text = (where / "statistics.md").read_text()
        assert report["arrival_seeds"] == [1000, 1001] and report["years"] == [None] and report["hours"] == 24
        assert report["command"] == "python scripts/evaluate.py " + " ".join(str(a) for a in argv)
        assert report["agents"] == ["ppo"] and list(report["baselines"]) == ["uncontrolled", "rule", "greedy", "ratchet"]
        assert np.shape(report["values"]["ppo"]["co2_kg"]) == (1, 2)
        assert report["kpis"]["co2_kg"]["policies"]["ppo"]["n_conditions"] == 2
        assert f"Made by `{report['command']}`" in text and "2 arrival seeds (1000-1001)" in text
        assert "training seeds 0" in text and "Strongest baseline: **" in text
    # the agent's value of a condition, through the single-episode path (a vmapped network may sum
    # its float32 products in another order: equal to float32 precision)
    alone = policy_kpis(load_policy(run), key=jax.random.key(1001), hours=24)
    assert report["values"]["ppo"]["co2_kg"][0][1] == pytest.approx(alone["co2_kg"], rel=1e-6)
    assert report["values"]["rule"]["vehicles_arrived"][0][1] == alone["vehicles_arrived"]


def test_evaluate_damaged_checkpoint_exits_1(trained_run, tmp_path, capsys):
    run = tmp_path / "damaged"
    shutil.copytree(trained_run, run)
    steps = sorted((run / "checkpoints" / "ppo").iterdir(), key=lambda d: int(d.name))
    (steps[-1] / "meta" / "metadata").write_text("garbage")
    rc, line = _evaluate(capsys, [run, "--hours", "24", "--out", tmp_path / "out"])
    # evaluate.py takes paths, not step=: the advice is the previous complete checkpoint's path
    assert rc == 1 and line == (f"error: checkpoint: step {steps[-1].name} at {steps[-1]} is damaged: its metadata "
                                f"cannot be read (JSONDecodeError: Expecting value: line 1 column 1 (char 0)); give "
                                f"{steps[-2]} instead to use the previous complete checkpoint")
    for meta in (run / "checkpoints" / "ppo").glob("*/meta/metadata"):
        meta.write_text("garbage")
    rc, line = _evaluate(capsys, [run, "--hours", "24", "--out", tmp_path / "out"])
    assert rc == 1
    assert line.startswith("error: checkpoint: ") and "is damaged" in line


def test_a_scenario_error_keeps_the_quotes_of_its_value():
    import dataclasses
    from oe3jax.training.config import make_run_env

    def make_env(scenario, **overrides):
        if "unit" in overrides:
            raise ValueError(f"scenario {scenario!r}: pv_profile.unit: expected one of 'kW', 'kWh', got 'MW'")
        raise KeyError("scenario: no preset 'x'")

    comps = dataclasses.replace(dummy_algo.components(), make_env=make_env)
    cfg = {"scenario": "s", "env": {}, "scenario_overrides": {"unit": "MW"}}
    assert _refused(make_run_env, cfg, comps) == (
        "scenario_overrides: scenario 's': pv_profile.unit: expected one of 'kW', 'kWh', got 'MW'")
    assert _refused(make_run_env, {**cfg, "scenario_overrides": {}}, comps) == "scenario: no preset 'x'"


def test_baselines_markdown_names_the_evening_peak_as_the_tables_do():
    from oe3jax.evaluation.compare import _TABLE_ROWS
    from oe3jax.simulation.env import EVENING_PEAK_LABEL

    header = _evaluate_module().markdown_header("python scripts/evaluate.py --policy rule")
    assert f"Peak import {EVENING_PEAK_LABEL} is the evening peak." in header
    assert "18-22 h" not in header and EVENING_PEAK_LABEL == "18:00-21:59"
    assert f"peak import {EVENING_PEAK_LABEL} (kW)" in [row[1] for row in _TABLE_ROWS]
