"""The persistent compilation cache (``compile.cache``) and the chunk programs compiled ahead."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oe3jax.schema import ConfigError
from oe3jax.training.loop import chunk_sizes
from oe3jax.training.resources import compile_cache_dir

ROOT = Path(__file__).resolve().parent.parent


def test_chunk_sizes_end_at_the_total_with_boundaries_at_multiples_of_the_chunk():
    assert chunk_sizes(0, 7, 3) == [3, 3, 1]
    assert chunk_sizes(3, 7, 3) == [3, 1]
    assert chunk_sizes(4, 7, 3) == [2, 1]      # resumed between boundaries: back on them after 2
    assert chunk_sizes(0, 6, 3) == [3, 3]
    assert chunk_sizes(7, 7, 3) == []
    assert chunk_sizes(0, 2, 5) == [2]


def test_cache_directory_of_each_setting(tmp_path):
    assert compile_cache_dir(None) is None
    assert compile_cache_dir(str(tmp_path / "c")) == tmp_path / "c"
    assert compile_cache_dir("~/x") == Path.home() / "x"
    assert compile_cache_dir("auto", {"JAX_COMPILATION_CACHE_DIR": "/j", "XDG_CACHE_HOME": "/x"}) == Path("/j")
    assert compile_cache_dir("auto", {"XDG_CACHE_HOME": "/x"}) == Path("/x/oe3jax/jax")
    assert compile_cache_dir("auto", {}) == Path.home() / ".cache" / "oe3jax" / "jax"
    with pytest.raises(ConfigError, match="^compile.cache: expected 'auto', a directory or null"):
        compile_cache_dir(" ")
    # a blank variable is an unset one (not a directory named by spaces in the working directory)
    assert compile_cache_dir("auto", {"JAX_COMPILATION_CACHE_DIR": " ", "XDG_CACHE_HOME": "/x"}) == Path("/x/oe3jax/jax")


# JAX reads JAX_COMPILATION_CACHE_DIR itself and opens that cache at its first compilation, which
# importing the package already makes: compile.cache must still decide where programs go.
_OVERRIDE = r"""
import sys
import jax, jax.numpy as jnp
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.jit(lambda x: x + 1)(jnp.ones(3))  # JAX opens the cache of JAX_COMPILATION_CACHE_DIR here
from oe3jax.training.resources import use_compile_cache
ours = sys.argv[1]
use_compile_cache({"compile": {"cache": ours, "cache_max_gib": 1.0}})
def first_program(x):
    return x * 3
jax.jit(first_program)(jnp.ones(5))
use_compile_cache({"compile": {"cache": None, "cache_max_gib": 1.0}})
def second_program(x):
    return x * 5
jax.jit(second_program)(jnp.ones(7))
"""


def test_compile_cache_decides_even_when_jax_opened_its_own(tmp_path):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(theirs)}
    env.pop("JAX_ENABLE_COMPILATION_CACHE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", _OVERRIDE, str(ours)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = lambda d: sorted(p.name for p in d.iterdir()) if d.is_dir() else []  # noqa: E731
    assert any(n.startswith("jit__lambda") for n in names(theirs))  # JAX's own cache was in use before
    assert {n.split("-")[0] for n in names(ours) if "program" in n} == {"jit_first_program"}
    # null: no cache at all, not JAX_COMPILATION_CACHE_DIR's
    assert not any("program" in n for n in names(theirs))


def test_a_file_as_cache_is_one_line_error(tmp_path, capsys):
    from oe3jax.training.cli import main

    (tmp_path / "f").write_text("x")
    rc = main(["--algo", "ppo", "--run-dir", str(tmp_path / "r"), "--set", f"compile.cache={tmp_path / 'f'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: compile.cache: {tmp_path / 'f'} is a file, not a directory"]
    assert not (tmp_path / "r").exists()


# One process per run, each reporting its compilation-cache hits (jax.monitoring) and writing its
# final policy parameters: 3 PPO updates of 16 env steps, chunks of 2 updates then 1.
_RUN = r"""
import json, sys
import jax, jax.monitoring, numpy as np
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None)
from oe3jax.training.cli import main
from oe3jax.training.policy import load_policy
run_dir, cache = sys.argv[1], sys.argv[2]
rc = main(["--algo", "ppo", "--scenario", "iquitos-38", "--total-steps", "48", "--run-dir", run_dir,
           "--set", "network.kind=mlp", "--set", "network.hidden_sizes=[16]", "--set", "env.episode_hours=24",
           "--set", "ppo.num_envs=2", "--set", "ppo.num_steps=8", "--set", "ppo.num_minibatches=2",
           "--set", "ppo.update_epochs=1", "--set", "checkpoint.every=16", "--set", "eval.enabled=false",
           "--set", "log.print_every_s=0", "--set", f"compile.cache={cache}"])
leaves = jax.tree.leaves(load_policy(run_dir).params)
np.savez(run_dir + ".npz", *[np.asarray(x) for x in leaves])
print(json.dumps({"rc": rc, "hits": len(hits)}))
"""


def _train(run_dir: Path, cache: str) -> tuple[dict, list[np.ndarray], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", _RUN, str(run_dir), cache], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(str(run_dir) + ".npz") as z:
        params = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
    return report, params, proc.stdout


def test_a_second_run_loads_its_programs_from_the_cache_and_ends_with_the_same_bits(tmp_path):
    cache = tmp_path / "cache"
    first, p1, out1 = _train(tmp_path / "a", str(cache))
    assert first["rc"] == 0 and first["hits"] == 0
    assert "compiled a chunk of 2 updates" in out1
    assert "compiled a chunk of 1 updates" in out1 and "(in the background)" in out1
    written = sorted(p.name for p in cache.iterdir())
    assert any("chunk" in name for name in written)
    assert "from the compilation cache" not in out1
    second, p2, out2 = _train(tmp_path / "b", str(cache))
    assert second["rc"] == 0 and second["hits"] >= 2  # both chunk programs at least
    assert "loaded a chunk of 2 updates" in out2 and "loaded a chunk of 1 updates" in out2
    assert "compiled a chunk" not in out2 and out2.count("from the compilation cache") == 2
    off, p3, _ = _train(tmp_path / "c", "null")
    assert off["hits"] == 0
    assert len(p1) == len(p2) == len(p3) > 0
    for a, b, c in zip(p1, p2, p3):
        assert a.dtype == b.dtype == c.dtype and a.shape == b.shape == c.shape
        assert a.tobytes() == b.tobytes() == c.tobytes()


def test_a_cache_size_beyond_the_bound_is_one_line_error(tmp_path, capsys):
    from oe3jax.training.cli import main

    rc = main(["--algo", "ppo", "--run-dir", str(tmp_path / "r"), "--set", "compile.cache_max_gib=1e300"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: compile.cache_max_gib: expected a number in [0.01, 1e+06], got 1e+300"]
    assert not (tmp_path / "r").exists()
