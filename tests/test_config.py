"""Configuration of a training run: resolution order and one-line errors naming the key."""
from __future__ import annotations

import pytest
import yaml

import dummy_algo
from oe3jax.schema import ConfigError
from oe3jax.training.cli import main, run
from oe3jax.training.config import requested_algo, resolve_config, user_config


def _error_line(capsys, argv, comps=None) -> str:
    rc = main(argv, comps or dummy_algo.components())
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


BASE = ["--algo", "dummy", "--scenario", "pendulum"]


def test_unknown_key_names_the_key(capsys, tmp_path):
    line = _error_line(capsys, BASE + ["--run-dir", str(tmp_path), "--set", "dummy.learning_rate=0.1"])
    assert line.startswith("error: dummy.learning_rate: unknown key")
    assert "lr" in line and "num_envs" in line  # the accepted keys are listed
    assert not (tmp_path / "config.yaml").exists()


def test_unknown_top_level_key_in_config_file(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("total_stepz: 10\n")
    line = _error_line(capsys, BASE + ["--config", str(path), "--run-dir", str(tmp_path / "r")])
    assert line.startswith("error: total_stepz: unknown key")


def test_wrong_type_names_the_key(capsys, tmp_path):
    line = _error_line(capsys, BASE + ["--run-dir", str(tmp_path), "--set", "checkpoint.async=maybe"])
    assert line == "error: checkpoint.async: expected a boolean, got 'maybe'"


def test_out_of_range_names_the_key_and_range(capsys, tmp_path):
    line = _error_line(capsys, BASE + ["--run-dir", str(tmp_path), "--seeds", "0"])
    assert line == "error: seeds: expected an integer in [1, 2147483647], got 0"
    line = _error_line(capsys, BASE + ["--run-dir", str(tmp_path), "--set", "dummy.lr=-1"])
    assert line.startswith("error: dummy.lr: expected a number in (0, inf]")


def test_unknown_algorithm_and_scenario(capsys, tmp_path):
    line = _error_line(capsys, ["--algo", "dqn", "--run-dir", str(tmp_path)])
    assert line.startswith("error: algo: expected one of 'dummy', 'dummy2', 'all'")
    line = _error_line(capsys, ["--algo", "dummy", "--scenario", "mars", "--run-dir", str(tmp_path)])
    assert line.startswith("error: scenario: unknown scenario 'mars'")


def test_other_algorithm_section_is_rejected_unless_all(capsys, tmp_path):
    line = _error_line(capsys, BASE + ["--run-dir", str(tmp_path), "--set", "dummy2.lr=0.1"])
    assert line.startswith("error: dummy2: unknown key")
    cfg = resolve_config("dummy", dummy_algo.components(), sets=["dummy2.lr=0.5"], sections=("dummy", "dummy2"))
    assert cfg["dummy2"]["lr"] == 0.5 and cfg["dummy"]["lr"] == 0.01


def test_resolution_order(tmp_path):
    """spec defaults < the algorithm's run defaults < --config < --set < flags."""
    run_defaults = {"total_steps": 100, "seeds": 2, "dummy": {"lr": 0.5, "num_envs": 2, "num_steps": 3}}
    user = tmp_path / "user.yaml"
    user.write_text("seeds: 3\ndummy: {lr: 0.25, num_envs: 5}\n")
    comps = dummy_algo.components()
    comps = type(comps)(**{**comps.__dict__, "run_defaults": lambda name: run_defaults})
    cfg = resolve_config(
        "dummy", comps, config_file=str(user), sets=["dummy.num_envs=7", "seeds=4", "dummy.lr=3e-4"],
        flags={"seeds": 6, "scenario": "pendulum", "total_steps": None},
    )
    assert cfg["total_steps"] == 100          # from the run defaults
    assert cfg["dummy"]["num_steps"] == 3     # from the run defaults
    assert cfg["dummy"]["num_envs"] == 7      # --set over --config
    assert cfg["dummy"]["lr"] == 3e-4         # --set, YAML-typed (3e-4 is a float)
    assert cfg["seeds"] == 6                  # the flag over --set
    assert cfg["scenario"] == "pendulum"
    assert cfg["seed"] == 0 and cfg["checkpoint"] == {"every": 500, "max_to_keep": 3, "async": True}


def test_algo_from_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algo: dummy2\n")
    comps = dummy_algo.components()
    assert requested_algo(None, user_config(str(path)), comps) == "dummy2"
    assert requested_algo(None, user_config(str(path), ["algo=dummy"]), comps) == "dummy"
    assert requested_algo("all", user_config(str(path), ["algo=dummy"]), comps) == "all"


def test_tensorboard_without_package_is_a_config_error():
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="^log.tensorboard: "):
            resolve_config("dummy", dummy_algo.components(), sets=["log.tensorboard=true"])
    else:
        pytest.skip("tensorboardX is installed")


def test_resolved_config_is_written(tmp_path, capsys):
    """A whole (tiny) run writes the fully resolved config, loadable and equal to the resolution."""
    argv = BASE + ["--run-dir", str(tmp_path), "--total-steps", "32", "--set", "dummy.num_envs=2",
                   "--set", "checkpoint.async=false"]
    results = run(argv, dummy_algo.components())
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written == resolve_config(
        "dummy", dummy_algo.components(), sets=["dummy.num_envs=2", "checkpoint.async=false"],
        flags={"scenario": "pendulum", "total_steps": 32},
    )
    assert results[0].updates == 2  # 32 steps / (2 envs x 8 steps)


def test_a_relative_profile_path_is_recorded_absolute(tmp_path, monkeypatch):
    """A profile file named relative to the current directory is recorded with its absolute path,
    so evaluating or resuming the run from another directory reads the same file."""
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config("dummy", dummy_algo.components(), sets=[
        "scenario_overrides.pv_profile.path=data/pv.csv", "scenario_overrides.pv_profile.column=kW",
        f"scenario_overrides.mall_profile.path={tmp_path / 'mall.csv'}", "scenario_overrides.mall_profile.column=kW"])
    assert cfg["scenario_overrides"]["pv_profile"] == {"path": str(tmp_path / "data" / "pv.csv"), "column": "kW"}
    assert cfg["scenario_overrides"]["mall_profile"]["path"] == str(tmp_path / "mall.csv")
