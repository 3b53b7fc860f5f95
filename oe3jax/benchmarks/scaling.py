"""Scaling over devices: env stepping and PPO training on the first N devices, in this process.

``scripts/benchmark.py --scaling`` runs :func:`measure` once per device count, each in its own
process (JAX fixes its devices when it starts; on a CPU the devices are forced with
``--xla_force_host_platform_device_count``), and writes ``results/scaling.{json,md}``.

- env stepping: ``num_envs`` environments (random actions from a pool, :func:`throughput.make_rollout`)
  with the environment axis split over the devices (``NamedSharding``); the same global number
  of environments on every device count;
- PPO training: the default PPO run's update chunk for ``seeds`` seeds, the seed axis split over
  the devices as ``scripts/train.py`` does (:mod:`oe3jax.training.devices`); the same global
  work on every device count.

Forced CPU devices share the machine's cores: their rows show that the sharded programs run and
what the partitioning costs, not a speed-up.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from oe3jax.benchmarks import throughput as bench


def env_scaling(devices: int, *, scenario: str, num_envs: int, env_steps_per_call: int,
                repeats: int) -> dict[str, Any]:
    """Env steps/s of ``num_envs`` environments split over the first ``devices`` devices."""
    from oe3jax.simulation.env import make_env

    env, env_params = make_env(scenario)
    num_steps = bench.steps_per_call(num_envs, env_steps_per_call)
    rollout, args = bench.make_rollout(env, env_params, num_envs, num_steps, "pool")
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("envs",))
    split, whole = NamedSharding(mesh, PartitionSpec("envs")), NamedSharding(mesh, PartitionSpec())
    # (key, env_state, obs, reward_sum, t0, pool): env states and observations split by environment
    shardings = (whole, jax.tree_util.tree_map(lambda _: split, args[1]), split, whole, whole, whole)
    args = jax.device_put(args, shardings)
    t0 = time.perf_counter()
    compiled = jax.jit(rollout, in_shardings=shardings, out_shardings=shardings).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(compiled(*args))  # warm-up

    def repeat() -> Any:
        nonlocal state
        state = compiled(*state)
        return state

    timing = bench.Timing(compile_s, bench.time_repeats(repeat, repeats))
    return {"devices": devices, "num_envs": num_envs, "steps_per_call": num_steps, "compile_s": round(compile_s, 3),
            "repeat_s": [round(t, 4) for t in timing.repeats_s],
            "env_steps_per_s": timing.rate(num_steps * num_envs),
            "reward_finite": bool(np.isfinite(float(state[3])))}


def ppo_scaling(devices: int, *, seeds: int, overrides: Mapping[str, Any], max_env_steps_per_chunk: int,
                repeats: int) -> dict[str, Any]:
    """Env steps/s (all seeds) of the PPO update chunk with ``seeds`` seeds over ``devices`` devices."""
    from oe3jax import learning
    from oe3jax.training.config import default_components, load_algo, make_run_env
    from oe3jax.training.devices import placement

    comps = default_components()
    cfg, source = bench.resolve_algo_config("ppo", {**overrides, "seeds": seeds, "parallel.devices": devices}, comps)
    algo = load_algo(comps, "ppo")
    env, env_params = make_run_env(cfg, comps)
    num_envs, steps = (int(v) for v in algo.env_steps_per_update(cfg))
    updates = max(1, max_env_steps_per_chunk // (num_envs * steps))
    where = placement(cfg)
    init = learning.init_seeds(algo, env, env_params, cfg)
    keys = learning.seed_keys(cfg)
    state = jax.block_until_ready(where.jit_init(init, keys)(keys))
    t0 = time.perf_counter()
    compiled = where.jit_chunk(learning.rows_chunk(algo, env, env_params, cfg, updates), state).lower(state).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state)  # warm-up
    jax.block_until_ready(state)

    def repeat() -> Any:
        nonlocal state, metrics
        state, metrics = compiled(state)
        return state

    timing = bench.Timing(compile_s, bench.time_repeats(repeat, repeats))
    return {"devices": devices, "seeds": seeds, "config": source, "num_envs": num_envs, "chunk_updates": updates,
            "compile_s": round(compile_s, 3), "repeat_s": [round(t, 4) for t in timing.repeats_s],
            "env_steps_per_s": timing.rate(seeds * updates * num_envs * steps),
            "metrics_finite": bool(all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(metrics)))}


def measure(devices: int, plan: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Both measurements on the first ``devices`` devices of this process."""
    out: dict[str, Any] = {"devices": devices, "platform": jax.devices()[0].platform,
                           "device_kind": jax.devices()[0].device_kind, "devices_seen": jax.device_count()}
    out["env"] = env_scaling(devices, **plan["env"])
    log(f"[scaling] {devices} device(s): env {out['env']['env_steps_per_s']['median']:,.0f} steps/s")
    out["ppo"] = ppo_scaling(devices, **plan["ppo"])
    log(f"[scaling] {devices} device(s): ppo {out['ppo']['env_steps_per_s']['median']:,.0f} env steps/s")
    return out
