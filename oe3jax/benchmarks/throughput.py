"""Throughput and utilisation measurements: the numbers ``scripts/benchmark.py`` reports.

Every measurement compiles first (timed separately), makes one warm-up call, then repeats the
timed call a few times and reports the median, min and max wall-clock time, with
``block_until_ready`` before each clock reading. Nothing here asserts a speed.

Reading order:

1. :func:`machine_info`, :func:`Timing` and :func:`time_repeats`: the common plumbing.
2. :func:`env_throughput`: vmapped random stepping of the JAX environment in one ``lax.scan``
   per call, with actions either drawn fresh from ``jax.random`` every step or read from a
   pre-sampled pool (the second isolates the environment); :func:`reference_throughput`: the
   NumPy reference stepped in a Python loop.
3. :func:`matmul_flops`: this machine's dense float32 matmul FLOP/s, the yardstick of
   utilisation; :func:`hlo_flops`: the FLOPs of a compiled XLA program with every loop body
   multiplied by its trip count (XLA's own ``cost_analysis()`` counts a loop body once).
4. :func:`train_throughput`: one algorithm's update chunk at its default configuration:
   compile time, env steps/s, gradient steps/s (SAC) and FLOP/s as a fraction of the matmul
   FLOP/s; :func:`checkpoint_cost`: checkpoint size on disk and time lost to saving.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from oe3jax.simulation.env import batched_step


# --------------------------------------------------------------------------------------------
# Machine and timing plumbing
# --------------------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the machine was)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS, package versions and JAX devices."""
    cpuinfo = _read("/proc/cpuinfo")
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, flags=re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read("/proc/meminfo"), flags=re.M)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": models[0].strip() if models else platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "gymnax", "numpy")},
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_device_kind": jax.devices()[0].device_kind,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclasses.dataclass
class Timing:
    """Seconds of each timed repeat (after compile and warm-up)."""

    compile_s: float
    repeats_s: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.repeats_s)

    def rate(self, work: float) -> dict[str, float]:
        """``work`` per second: median, min and max over the repeats (min time = max rate)."""
        return {
            "median": work / self.median_s,
            "min": work / max(self.repeats_s),
            "max": work / min(self.repeats_s),
        }


def time_repeats(call: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls, each waited for with ``block_until_ready``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        out.append(time.perf_counter() - t0)
    return out


def _calls_for(seconds_per_call: float, min_repeat_s: float) -> int:
    """Calls per timed repeat so that a repeat lasts at least ``min_repeat_s``."""
    return max(1, math.ceil(min_repeat_s / max(seconds_per_call, 1e-6)))


# --------------------------------------------------------------------------------------------
# 1. Environment throughput
# --------------------------------------------------------------------------------------------

ACTION_MODES = ("fresh", "pool", "obs")
ACTION_MODE_HELP = {
    "fresh": "uniform actions drawn with jax.random (threefry) inside the scan, every step and env",
    "pool": "actions read from a pre-sampled pool of random action vectors, indexed by step and env "
            "(isolates the environment)",
    "obs": "the observation consumed as a policy would: each action is a pool action plus a fixed linear "
           "map of the observation (every socket's features drive its socket's action, every global "
           "feature the battery's), so the next step waits for this step's whole observation",
}


def _obs_policy(env: Any, obs_dim: int, act_dim: int, scale: float = 0.1) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``policy(obs, pool_action) -> action`` for the ``obs`` mode: a fixed, cheap linear map.

    With an :class:`~oe3jax.simulation.env.ObsLayout` (``n_global`` features, then ``n_sockets x
    n_socket_features``) the battery action reads every global feature and socket i's action its own
    features (about two FLOPs per observation feature); otherwise every action reads the mean of the
    observation. Weights are fixed random numbers of mean zero, scaled so that the term stays small.
    """
    layout = getattr(env, "obs_layout", None)
    rng = np.random.default_rng(7)
    if layout is not None and layout.size == obs_dim and layout.n_sockets + 1 == act_dim:
        g, n, f = layout.n_global, layout.n_sockets, layout.n_socket_features
        w_glob = jnp.asarray(rng.normal(size=g) * scale / g, jnp.float32)
        w_sock = jnp.asarray(rng.normal(size=f) * scale / f, jnp.float32)

        def policy(obs: jax.Array, pool_action: jax.Array) -> jax.Array:
            # written out as products and adds (not dots or reductions), so that XLA fuses them into
            # elementwise loops: on CPU a [n, 4] x [4] dot or sum costs more than the step's physics
            battery = sum(obs[..., j] * w_glob[j] for j in range(g))
            per_socket = obs[..., g:].reshape(obs.shape[:-1] + (n, f))
            sockets = sum(per_socket[..., j] * w_sock[j] for j in range(f))
            # the battery's term, then the sockets', joined as columns ([.., 1 + n, 1]): XLA's CPU
            # backend copies a join along the minor axis of [envs, 1 + n] as a pass of its own
            term = jnp.concatenate([battery[..., None, None], sockets[..., None]], axis=-2)[..., 0]
            return jnp.clip(pool_action + term, -1.0, 1.0)
    else:
        def policy(obs: jax.Array, pool_action: jax.Array) -> jax.Array:
            return jnp.clip(pool_action + scale * jnp.mean(obs, axis=-1, keepdims=True), -1.0, 1.0)
    return policy


def tile_pool(pool: jax.Array, num_envs: int, stride: int) -> jax.Array:
    """The action pool repeated along its rows as often as :func:`pool_rows` reads past its end."""
    pool_size = pool.shape[0]
    return jnp.tile(pool, (-(-(pool_size + (num_envs - 1) * stride) // pool_size), 1))


def pool_rows(tiled: jax.Array, t: jax.Array, num_envs: int, stride: int, pool_size: int) -> jax.Array:
    """Rows ``(i * stride + t) % pool_size`` of the pool, ``i < num_envs``, from its :func:`tile_pool`:
    a strided slice, which XLA fuses into the actions' loop (a gather of the rows was a pass of its own)."""
    return jax.lax.dynamic_slice_in_dim(tiled, t % pool_size, (num_envs - 1) * stride + 1)[::stride]


def make_rollout(env: Any, env_params: Any, num_envs: int, num_steps: int, mode: str,
                 pool_size: int = 1024) -> tuple[Callable, tuple]:
    """A jittable ``rollout(*args) -> args`` stepping ``num_envs`` envs for ``num_steps`` steps.

    Each step steps every environment with :func:`~oe3jax.simulation.env.batched_step` (``env.step``
    over the environments, auto-reset included, one PRNG key per env split from the carry). The carry keeps the last observations and a sum of rewards, so XLA cannot
    drop the observation or reward computation; in mode ``obs`` the actions are computed from the
    carried observations (see :data:`ACTION_MODE_HELP`). Returns the function and its first arguments.
    """
    if mode not in ACTION_MODES:
        raise ValueError(f"mode: expected one of {', '.join(ACTION_MODES)}, got {mode!r}")
    act_dim = int(env.action_space(env_params).shape[0])
    obs_dim = int(env.observation_space(env_params).shape[0])
    policy = _obs_policy(env, obs_dim, act_dim) if mode == "obs" else None
    step = batched_step(env)
    # env i reads pool rows i*stride + t (mod pool size): different rows across envs and steps
    stride = max(1, pool_size // max(num_envs, 1)) if num_envs < pool_size else 1

    def rollout(key, env_state, obs, reward_sum, t0, pool):
        def body(carry, t):
            key, env_state, obs, reward_sum = carry
            key, k_act, k_env = jax.random.split(key, 3)
            if mode == "fresh":
                actions = jax.random.uniform(k_act, (num_envs, act_dim), jnp.float32, -1.0, 1.0)
            else:
                actions = pool_rows(pool, t, num_envs, stride, pool_size)
                if policy is not None:
                    actions = policy(obs, actions)
            obs, env_state, reward, _, _, _ = step(jax.random.split(k_env, num_envs), env_state, actions, env_params)
            return (key, env_state, obs, reward_sum + jnp.sum(reward)), None

        steps = t0 + jnp.arange(num_steps, dtype=jnp.int32)
        (key, env_state, obs, reward_sum), _ = jax.lax.scan(body, (key, env_state, obs, reward_sum), steps)
        return key, env_state, obs, reward_sum, t0 + num_steps, pool

    key, k_reset, k_pool = jax.random.split(jax.random.key(0), 3)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, num_envs), env_params)
    pool = jax.random.uniform(k_pool, (pool_size, act_dim), jnp.float32, -1.0, 1.0)
    pool = tile_pool(pool, num_envs, stride)
    args = (key, env_state, obs, jnp.float32(0.0), jnp.int32(0), pool)
    return rollout, args


def steps_per_call(num_envs: int, env_steps_per_call: int, min_steps: int = 8) -> int:
    """Scan length so that one call makes about ``env_steps_per_call`` env steps."""
    return max(min_steps, env_steps_per_call // max(num_envs, 1))


def env_throughput(
    env: Any, env_params: Any, num_envs: int, mode: str, *, env_steps_per_call: int = 65_536,
    repeats: int = 3, min_repeat_s: float = 0.5,
) -> dict[str, Any]:
    """Env steps/s of ``num_envs`` vmapped environments with random actions (``mode``)."""
    num_steps = steps_per_call(num_envs, env_steps_per_call)
    rollout, args = make_rollout(env, env_params, num_envs, num_steps, mode)
    t0 = time.perf_counter()
    compiled = jax.jit(rollout).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(compiled(*args))  # warm-up
    calls = _calls_for(time.perf_counter() - t0, min_repeat_s)

    def repeat() -> Any:
        nonlocal state
        for _ in range(calls):
            state = compiled(*state)
        return state

    timing = Timing(compile_s, time_repeats(repeat, repeats))
    work = calls * num_steps * num_envs
    reward_sum = float(state[3])
    return {
        "num_envs": num_envs, "mode": mode, "steps_per_call": num_steps, "calls_per_repeat": calls,
        "env_steps_per_repeat": work, "compile_s": round(compile_s, 3),
        "repeat_s": [round(t, 4) for t in timing.repeats_s],
        "env_steps_per_s": timing.rate(work), "reward_finite": math.isfinite(reward_sum),
    }


#: The named scopes of ``EVChargingEnv.step`` (``jax.named_scope``), in step order, and what each holds.
STEP_STAGES = {
    "draw": "the step's random words (Threefry-2x32 of the env's key)",
    "sockets": "EV charging per socket (rating, energy still wanted)",
    "dispatch": "PV, mall load, battery, grid limit, energy update",
    "departures": "departures, unmet energy, vehicles served",
    "arrivals": "Poisson counts, free-socket ranks, new vehicles' needs and stays",
    "reward": "month peak, reward terms, flows",
    "totals": "the running episode totals",
    "auto_reset": "the next episodes' first states (built on steps where one ends), selected where one ended",
    "observation": "calendar, forecasts with their errors, park and per-socket features",
}
HARNESS_STAGE = "harness"  # outside env.step: per-env keys, actions, the scan's loop


def _op_stages(hlo_text: str, stages: Sequence[str]) -> dict[str, str]:
    """Each top-level HLO instruction (what the CPU runtime runs as one thunk) mapped to a stage:
    the first of ``stages`` among the named scopes of its op (for a fusion, of its root op, else of
    most of the ops fused into it), :data:`HARNESS_STAGE` for ops outside ``env.step``, or ``"other"``."""
    comps, _ = _hlo_computations(hlo_text)
    name_re = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=")
    op_re = re.compile(r'op_name="([^"]*)"')

    wrapped = re.compile(r"^[\w]+\((.*)\)$")  # a transform's wrapper of a scope: vmap(departures)

    def unwrap(part: str) -> str:
        while (m := wrapped.match(part)) is not None:
            part = m.group(1)
        return part

    def stage_of(op_name: str) -> str:
        parts = op_name.split("/")
        for part in parts:
            if unwrap(part) in stages:
                return unwrap(part)
        return "other" if any(p.startswith(("vmap(jit(_step", "jit(_step")) for p in parts) else HARNESS_STAGE

    out: dict[str, str] = {}
    for lines in comps.values():
        for line in lines:
            m = name_re.match(line)
            if not m:
                continue
            own = op_re.findall(line)
            stage = stage_of(own[0]) if own else None
            called = re.search(r"calls=%?([\w.\-]+)", line)
            if called and stage not in stages:  # the fusion's root says nothing: ask the ops fused into it
                votes: dict[str, int] = {}
                for inner in comps.get(called.group(1), []):
                    for op in op_re.findall(inner):
                        st = stage_of(op)
                        votes[st] = votes.get(st, 0) + 1
                named = {st: v for st, v in votes.items() if st in stages}
                if named or votes:
                    stage = max(named or votes, key=(named or votes).get)
            if stage is not None:
                out[m.group(1)] = stage
    return out


def step_stages(env: Any, env_params: Any, num_envs: int, mode: str = "obs", *, num_steps: int = 64,
                calls: int = 3, stages: Mapping[str, str] = STEP_STAGES, top: int = 0) -> dict[str, Any]:
    """Where the time of a vmapped step goes, from the XLA CPU profiler.

    The rollout of :func:`make_rollout` runs ``calls`` times under ``jax.profiler.trace``; each
    thunk the CPU runtime executes (a fusion, a copy, a loop, ...) is attributed to a stage by the
    named scope of its ops (:data:`STEP_STAGES`; a fusion that mixes stages goes to the stage of its
    root op, the value it writes). Reported per stage: microseconds per vmapped step (all ``num_envs``
    environments) and the share of the summed thunk time. Thunks of the two cores may overlap, so
    the sum can exceed the wall-clock time, which is reported beside it. ``top > 0`` adds the
    ``top`` most expensive thunks (name, stage, microseconds per step).
    """
    import gzip
    import json

    rollout, args = make_rollout(env, env_params, num_envs, num_steps, mode)
    compiled = jax.jit(rollout).lower(*args).compile()
    state = jax.block_until_ready(compiled(*args))
    ops = _op_stages(compiled.as_text(), tuple(stages))
    root = Path(tempfile.mkdtemp(prefix="oe3jax-bench-trace-"))
    try:
        with jax.profiler.trace(str(root), create_perfetto_trace=True):
            t0 = time.perf_counter()
            for _ in range(calls):
                state = compiled(*state)
            jax.block_until_ready(state)
            wall = time.perf_counter() - t0
        traces = sorted(root.rglob("*.trace.json.gz"))
        if not traces:
            raise RuntimeError("step_stages: the profiler wrote no trace")
        events = json.loads(gzip.decompress(traces[-1].read_bytes()))["traceEvents"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_stage: dict[str, float] = {}
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and e.get("name") in ops:
            st = ops[e["name"]]
            per_stage[st] = per_stage.get(st, 0.0) + float(e["dur"])  # microseconds
            per_op[e["name"]] = per_op.get(e["name"], 0.0) + float(e["dur"])
    total = sum(per_stage.values())
    steps = calls * num_steps
    order = [*stages, "other", HARNESS_STAGE]
    rows = [{"stage": st, "what": stages.get(st, "step ops outside the named stages" if st == "other"
                                              else "outside env.step: keys, actions, loop"),
             "us_per_step": per_stage[st] / steps, "share": per_stage[st] / total if total else 0.0}
            for st in order if st in per_stage]
    out = {"num_envs": num_envs, "mode": mode, "steps": steps, "wall_us_per_step": 1e6 * wall / steps,
           "thunk_us_per_step": total / steps, "env_steps_per_s_traced": steps * num_envs / wall,
           "load_avg": load_average(), "stages": rows}
    if top:
        out["top_thunks"] = [{"name": name, "stage": ops[name], "us_per_step": us / steps}
                             for name, us in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]]
    return out


def reference_throughput(scenario: str, num_steps: int, seed: int = 0) -> dict[str, Any]:
    """Steps/s of the NumPy reference in a Python loop, random actions from a pre-sampled pool."""
    from oe3jax.simulation.reference import ReferenceEnv

    ref = ReferenceEnv(scenario, seed=seed)
    rng = np.random.default_rng(seed)
    pool = rng.uniform(-1.0, 1.0, (min(num_steps, 1024), ref.n_actions))
    ref.reset()
    for i in range(min(10, num_steps)):  # warm-up
        ref.step(pool[i % len(pool)])
    ref.reset()
    t0 = time.perf_counter()
    reward_sum = 0.0
    for i in range(num_steps):
        _, reward, terminated, truncated, _ = ref.step(pool[i % len(pool)])
        reward_sum += reward
        if terminated or truncated:
            ref.reset()
    elapsed = time.perf_counter() - t0
    return {"scenario": scenario, "steps": num_steps, "seconds": elapsed,
            "env_steps_per_s": num_steps / elapsed, "reward_finite": math.isfinite(reward_sum)}


def env_section(scenarios: Sequence[str], num_envs_list: Sequence[int], *, modes: Sequence[str] = ACTION_MODES,
                env_steps_per_call: int = 65_536, repeats: int = 3, min_repeat_s: float = 0.5,
                reference_steps: int = 3000, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Vmapped throughput for every scenario, batch size and action mode, beside the reference."""
    from oe3jax.simulation.env import make_env

    out: dict[str, Any] = {"load_avg_start": load_average(), "modes": {m: ACTION_MODE_HELP[m] for m in modes},
                           "scenarios": {}}
    for scenario in scenarios:
        env, env_params = make_env(scenario)
        rows = []
        for mode in modes:
            for n in num_envs_list:
                row = env_throughput(env, env_params, n, mode, env_steps_per_call=env_steps_per_call,
                                     repeats=repeats, min_repeat_s=min_repeat_s)
                log(f"[env] {scenario} {mode:5s} {n:5d} envs: {row['env_steps_per_s']['median']:>12,.0f} steps/s "
                    f"(compile {row['compile_s']:.1f} s)")
                rows.append(row)
        ref = reference_throughput(scenario, reference_steps)
        log(f"[env] {scenario} NumPy reference loop: {ref['env_steps_per_s']:,.0f} steps/s")
        best = {}
        for mode in modes:
            mode_rows = [r for r in rows if r["mode"] == mode]
            top = max(mode_rows, key=lambda r: r["env_steps_per_s"]["median"])
            best[mode] = {"num_envs": top["num_envs"], "env_steps_per_s": top["env_steps_per_s"]["median"],
                          "ratio_to_reference": top["env_steps_per_s"]["median"] / ref["env_steps_per_s"]}
        out["scenarios"][scenario] = {
            "obs_dim": int(env.observation_space(env_params).shape[0]),
            "action_dim": int(env.action_space(env_params).shape[0]),
            "vmapped": rows, "reference": ref, "best": best,
        }
    out["load_avg_end"] = load_average()
    return out


# --------------------------------------------------------------------------------------------
# 2. FLOPs: the machine's matmul yardstick and the FLOPs of a compiled program
# --------------------------------------------------------------------------------------------

def matmul_flops(size: int, *, dtype: str = "float32", iters: int = 16, repeats: int = 3,
                 min_repeat_s: float = 0.3) -> dict[str, Any]:
    """Dense ``size x size`` matmul FLOP/s in ``dtype``: a jitted chain of ``iters`` products.

    The chain ``c <- tanh(c @ b)`` cannot be hoisted out of the loop; the tanh adds ``size^2``
    operations per ``2 size^3`` FLOPs, which are the only ones counted. The products run at JAX's
    default matmul precision, as the networks' do.
    """
    kb, kc = jax.random.split(jax.random.key(1))
    b = (jax.random.normal(kb, (size, size), jnp.float32) / math.sqrt(size)).astype(dtype)
    c = jax.random.normal(kc, (size, size), jnp.float32).astype(dtype)

    def chain(c, b):
        return jax.lax.fori_loop(0, iters, lambda i, x: jnp.tanh(x @ b), c)

    t0 = time.perf_counter()
    compiled = jax.jit(chain).lower(c, b).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(c, b))
    calls = _calls_for(time.perf_counter() - t0, min_repeat_s)

    def repeat() -> Any:
        x = c
        for _ in range(calls):
            x = compiled(x, b)
        return x

    timing = Timing(compile_s, time_repeats(repeat, repeats))
    flops = 2.0 * size**3 * iters * calls
    return {"size": size, "dtype": str(jnp.dtype(dtype)), "iters": iters, "calls_per_repeat": calls,
            "repeat_s": [round(t, 4) for t in timing.repeats_s],
            "flops_per_s": timing.rate(flops)}


_SHAPE = re.compile(r"^\(?\s*([a-z]+[0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$")
# Elementwise and reduction opcodes counted one operation per output element (as XLA's own
# HloCostAnalysis does for its "flops"); data movement (copy, slice, broadcast, ...) is free.
_ELEMENTWISE = frozenset({
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs", "compare", "select",
    "exponential", "exponential-minus-one", "log", "log-plus-one", "tanh", "logistic", "sqrt", "rsqrt", "cbrt",
    "power", "sine", "cosine", "tan", "atan2", "floor", "ceil", "round-nearest-even", "round-nearest-afz",
    "remainder", "sign", "clamp", "and", "or", "xor", "not", "shift-left", "shift-right-logical",
    "shift-right-arithmetic", "erf", "is-finite",
})


def _elements(shape_text: str) -> int:
    m = _SHAPE.match(shape_text.strip())
    if not m or not m.group(2):
        return 1
    return math.prod(int(d) for d in m.group(2).split(","))


def _dims(shape_text: str) -> list[int]:
    m = _SHAPE.match(shape_text.strip())
    return [int(d) for d in m.group(2).split(",")] if m and m.group(2) else []


def _hlo_computations(hlo_text: str) -> tuple[dict[str, list[str]], str | None]:
    """The instruction lines of each computation of an HLO module's text, and the ENTRY's name."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        if current is None:
            m = _COMPUTATION.match(line)
            if m and "=" not in line.split("{")[0].split("(")[0]:
                current = m.group(1)
                comps[current] = []
                if line.startswith("ENTRY"):
                    entry = current
        elif line.strip() == "}":
            current = None
        else:
            comps[current].append(line)
    return comps, entry


def hlo_flops(hlo_text: str) -> dict[str, Any]:
    """FLOPs of an optimised HLO module (``compiled.as_text()``), loops counted trip-count times.

    ``dot`` costs ``2 * output elements * contracted size``; elementwise arithmetic and reduce
    cost one per element. A ``while`` body counts ``known_trip_count`` times (once, and listed in
    ``unknown_trip_counts``, when XLA does not know it); a ``conditional`` counts its most
    expensive branch; fusions and calls count their computation once per call.
    """
    comps, entry = _hlo_computations(hlo_text)
    if entry is None:
        raise ValueError("hlo_flops: no ENTRY computation in the HLO text")

    # operand shapes are not printed inline in optimised HLO: map instruction names to shapes
    shapes: dict[str, str] = {}
    name_re = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+[a-z][\w\-]*\(")
    for lines in comps.values():
        for line in lines:
            m = name_re.match(line)
            if m:
                shapes[m.group(1)] = m.group(2)

    unknown: list[str] = []
    memo: dict[str, tuple[float, float]] = {}

    def cost(name: str) -> tuple[float, float]:
        if name in memo:
            return memo[name]
        memo[name] = (0.0, 0.0)  # guards against recursion
        dot_total, elem_total = 0.0, 0.0
        for line in comps.get(name, []):
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            out_shape, op, rest = m.group(1), m.group(2), m.group(3)
            if op == "dot":
                operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
                lhs_dims = _dims(shapes.get(operands[0], "")) if operands else []
                contract = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", rest)
                k = math.prod(lhs_dims[int(i)] for i in contract.group(1).split(",") if i) if contract and lhs_dims else 1
                dot_total += 2.0 * _elements(out_shape) * k
            elif op in _ELEMENTWISE:
                elem_total += _elements(out_shape)
            elif op == "reduce":
                operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
                n_in = len(operands) // 2 or 1
                elem_total += sum(_elements(shapes.get(o, "")) for o in operands[:n_in])
            if op == "while":
                body = re.search(r"body=%?([\w.\-]+)", rest)
                trips = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', rest)
                n = int(trips.group(1)) if trips else 1
                if not trips:
                    unknown.append(body.group(1) if body else "?")
                if body:
                    d, e = cost(body.group(1))
                    dot_total += n * d
                    elem_total += n * e
            elif op == "conditional":
                branches = re.search(r"branch_computations=\{([^}]*)\}", rest)
                names = re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else []
                names += [g for g in re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", rest)]
                if names:
                    d, e = max((cost(b) for b in names), key=lambda de: de[0] + de[1])
                    dot_total += d
                    elem_total += e
            else:
                for called in re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", rest):
                    if op == "reduce" or op in ("scatter", "sort", "map", "reduce-window", "select-and-scatter"):
                        continue  # the reduction region: counted per element above (or not at all)
                    d, e = cost(called)
                    dot_total += d
                    elem_total += e
        memo[name] = (dot_total, elem_total)
        return memo[name]

    dot, elem = cost(entry)
    return {"dot_flops": dot, "elementwise_flops": elem, "flops": dot + elem, "unknown_trip_counts": unknown}


def xla_cost_flops(compiled: Any) -> float | None:
    """XLA's own ``cost_analysis()`` FLOPs (a dict in current jax, a list of dicts in older ones).

    XLA counts every loop body ONCE, so for a program made of scans this is the cost of one
    iteration of each loop, not of the whole program.
    """
    try:
        ca = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float(ca["flops"]) if isinstance(ca, Mapping) and "flops" in ca else None


# --------------------------------------------------------------------------------------------
# 3. Training throughput and checkpoints
# --------------------------------------------------------------------------------------------

def resolve_algo_config(name: str, overrides: Mapping[str, Any] | None = None,
                        comps: Any = None) -> tuple[dict[str, Any], str]:
    """The algorithm's default run configuration, as ``scripts/train.py --algo NAME`` resolves it.

    The code's defaults (:mod:`oe3jax.training.defaults`), then ``overrides`` (dotted keys, as
    ``--set``). ``comps`` are the training components (default: the project's). Returns the
    config and a description of where it came from.
    """
    from oe3jax.training.config import default_components, resolve_config

    comps = comps if comps is not None else default_components()
    sets = [f"{k}={_yaml_value(v)}" for k, v in (overrides or {}).items()]
    cfg = resolve_config(name, comps, sets=sets)
    source = f"default {name} run (oe3jax.training.defaults)"
    if overrides:
        source += " + " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    return cfg, source


def _yaml_value(v: Any) -> str:
    import json

    return json.dumps(v)


def _num_leaves_bytes(tree: Any) -> int:
    return int(sum(np.dtype(x.dtype).itemsize * math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _learning_from(cfg: Mapping[str, Any]) -> int:
    """Env steps (per seed) before an algorithm starts its gradient steps (SAC's learning_starts)."""
    c = cfg.get(cfg["algo"], {})
    if "learning_starts" in c:
        return max(int(c["learning_starts"]), int(c.get("batch_size", 0)))
    return 0


@dataclasses.dataclass
class Program:
    """One algorithm's compiled update chunk (one seed, vmapped like the runner) and its state."""

    name: str
    cfg: dict[str, Any]
    source: str
    algo: Any
    env: Any
    env_params: Any
    num_envs: int
    steps_per_env: int
    runner_chunk_updates: int
    chunk_updates: int
    compile_s: float
    compiled: Any
    state: Any
    comps: Any = None  # the runner components it was built with (kept alive for the cache key)

    @property
    def env_steps_per_update(self) -> int:
        return self.num_envs * self.steps_per_env

    def run(self, calls: int = 1) -> Any:
        """Run ``calls`` chunks from the current state, wait for them, and keep the new state."""
        metrics = None
        for _ in range(calls):
            self.state, metrics = self.compiled(self.state)
        jax.block_until_ready(self.state)
        return metrics


_PROGRAMS: dict[tuple, Program] = {}


def build_program(name: str, *, overrides: Mapping[str, Any] | None = None,
                  max_env_steps_per_chunk: int | None = 1024, comps: Any = None,
                  log: Callable[[str], None] = print) -> Program:
    """Resolve the default config, init one seed and compile a chunk (cached per arguments).

    The runner's chunk is the updates of one checkpoint interval; for timing, the chunk is capped
    at ``max_env_steps_per_chunk`` env steps (at least one update), which changes the scan length
    but not the program's body, so compile time and per-update cost are those of the runner's.
    """
    from oe3jax.learning import init_seeds, seed_keys
    from oe3jax.training.config import default_components, load_algo, make_run_env

    comps = comps if comps is not None else default_components()
    cache_key = (name, repr(sorted((overrides or {}).items())), max_env_steps_per_chunk, id(comps.get_algo))
    if cache_key in _PROGRAMS:
        return _PROGRAMS[cache_key]
    cfg, source = resolve_algo_config(name, overrides, comps)
    cfg["seeds"] = 1
    algo = load_algo(comps, name)
    env, env_params = make_run_env(cfg, comps)
    num_envs, steps_per_env = (int(v) for v in algo.env_steps_per_update(cfg))
    per_update = num_envs * steps_per_env
    runner_chunk = cfg["log"]["chunk_updates"] or math.ceil(cfg["checkpoint"]["every"] / steps_per_env)
    chunk_updates = runner_chunk
    if max_env_steps_per_chunk is not None:
        chunk_updates = max(1, min(runner_chunk, max_env_steps_per_chunk // per_update))
    state = jax.jit(init_seeds(algo, env, env_params, cfg))(seed_keys(cfg))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    chunk = algo.make_update_chunk(env, env_params, cfg, chunk_updates)
    compiled = jax.jit(jax.vmap(chunk)).lower(state).compile()
    compile_s = time.perf_counter() - t0
    log(f"[train] {name}: compiled a chunk of {chunk_updates} updates x {per_update} env steps in {compile_s:.1f} s")
    prog = Program(name, cfg, source, algo, env, env_params, num_envs, steps_per_env, runner_chunk, chunk_updates,
                   compile_s, compiled, state, comps)
    _PROGRAMS[cache_key] = prog
    return prog


def train_throughput(name: str, *, overrides: Mapping[str, Any] | None = None,
                     max_env_steps_per_chunk: int | None = 1024, repeats: int = 3, min_repeat_s: float = 0.0,
                     peak_flops_per_s: float | None = None, comps: Any = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compile time and throughput of one algorithm's update chunk at its default configuration.

    For an algorithm with ``learning_starts`` the warm-up runs chunks until the gradient steps
    have started, so the timed chunks include them. FLOPs come from :func:`hlo_flops` of the
    compiled chunk; ``peak_flops_per_s`` (from :func:`matmul_flops`) gives the utilisation.
    """
    prog = build_program(name, overrides=overrides, max_env_steps_per_chunk=max_env_steps_per_chunk, comps=comps,
                         log=log)
    cfg = prog.cfg
    per_chunk = prog.chunk_updates * prog.env_steps_per_update
    starts = _learning_from(cfg)
    warm_calls = 1 + (math.ceil(starts / per_chunk) if starts else 0)
    t0 = time.perf_counter()
    metrics = prog.run(warm_calls)
    warm_s = time.perf_counter() - t0
    calls = _calls_for(warm_s / warm_calls, min_repeat_s) if min_repeat_s > 0 else 1

    def repeat() -> Any:
        nonlocal metrics
        metrics = prog.run(calls)
        return prog.state

    timing = Timing(prog.compile_s, time_repeats(repeat, repeats))
    updates = calls * prog.chunk_updates
    env_steps = updates * prog.env_steps_per_update
    flops = hlo_flops(prog.compiled.as_text())
    row: dict[str, Any] = {
        "algo": name, "config": prog.source, "scenario": cfg["scenario"], "precision": cfg["precision"],
        "network": cfg["network"], "algo_config": cfg[name],
        "num_envs": prog.num_envs, "steps_per_env_per_update": prog.steps_per_env,
        "runner_chunk_updates": prog.runner_chunk_updates, "chunk_updates": prog.chunk_updates,
        "warmup_calls": warm_calls, "calls_per_repeat": calls, "compile_s": round(prog.compile_s, 3),
        "repeat_s": [round(t, 4) for t in timing.repeats_s],
        "env_steps_per_s": timing.rate(env_steps),
        "updates_per_s": timing.rate(updates),
        "train_state_bytes": _num_leaves_bytes(prog.state),
        "flops_per_chunk": flops["flops"], "dot_flops_per_chunk": flops["dot_flops"],
        "flops_per_env_step": flops["flops"] / per_chunk,
        "unknown_trip_counts": flops["unknown_trip_counts"],
        "xla_cost_analysis_flops_loop_bodies_once": xla_cost_flops(prog.compiled),
        "metrics_finite": bool(all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(metrics))),
    }
    row["flops_per_s"] = flops["flops"] * calls / timing.median_s
    row["dot_flops_per_s"] = flops["dot_flops"] * calls / timing.median_s
    if peak_flops_per_s:
        row["flops_fraction_of_matmul"] = row["flops_per_s"] / peak_flops_per_s
        row["dot_flops_fraction_of_matmul"] = row["dot_flops_per_s"] / peak_flops_per_s
    c = cfg[name]
    if "gradient_steps" in c:
        row["gradient_steps_per_s"] = timing.rate(updates * int(c["gradient_steps"]))
        row["batch_size"] = int(c["batch_size"])
    buffer = getattr(prog.state, "buffer", None)
    if buffer is not None:
        row["replay_buffer_bytes"] = _num_leaves_bytes(buffer)
        if hasattr(prog.algo, "buffer_nbytes"):
            obs_dim = int(prog.env.observation_space(prog.env_params).shape[0])
            act_dim = int(prog.env.action_space(prog.env_params).shape[0])
            nbytes, line = prog.algo.buffer_nbytes(cfg, obs_dim, act_dim)
            row["replay_buffer_bytes_declared"], row["replay_buffer_line"] = int(nbytes), str(line)
    log(f"[train] {name}: {row['env_steps_per_s']['median']:,.0f} env steps/s, "
        f"{row['flops_per_s'] / 1e9:.2f} GFLOP/s" + (
            f" ({100 * row['flops_fraction_of_matmul']:.1f} % of matmul)" if peak_flops_per_s else ""))
    return row


def _with_full_buffer(state: Any) -> Any:
    """The state with its replay buffer's filled slots repeated over the whole capacity, or None.

    Checkpoint size depends on how full the buffer is (empty slots are zeros, which compress);
    this gives the size and save time of a long run's checkpoint without running it.
    """
    buffer = getattr(state, "buffer", None)
    if buffer is None or not hasattr(buffer, "data") or not hasattr(buffer, "size"):
        return None
    capacity = int(buffer.capacity)
    filled = max(1, int(np.min(np.asarray(buffer.size))))
    index = jnp.arange(capacity) % filled
    data = jax.tree.map(lambda x: jnp.take(x, index, axis=1), buffer.data)  # axis 0: seeds
    full = buffer.replace(data=data, size=jnp.full_like(buffer.size, capacity))
    return state.replace(buffer=full)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def checkpoint_cost(name: str, *, overrides: Mapping[str, Any] | None = None, saves: int = 2,
                    max_env_steps_per_chunk: int | None = 1024, workdir: str | None = None,
                    comps: Any = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Checkpoint size on disk and training time lost to saving, synchronous vs asynchronous.

    - sync: ``saves`` saves with ``async_save=False``; each ``save()`` blocks until written, and
      all of that time is lost to training.
    - async: ``saves`` times: ``save()`` (returns once the arrays are copied to host memory),
      then one training chunk while the write goes on in the background, then ``wait()``.
      Lost per save = that interval minus a chunk alone (timed just before); it includes the
      slowdown of the chunk by the concurrent write, which competes for the same cores.
    - ``async_write_s``: a save followed at once by ``wait()``, the background write's duration.
    """
    from oe3jax.training.checkpoint import Checkpoints

    prog = build_program(name, overrides=overrides, max_env_steps_per_chunk=max_env_steps_per_chunk, comps=comps,
                         log=log)
    full_row: dict[str, Any] | None = None
    prog.run(1)  # the state is warm and past any start-up phase after train_throughput
    meta = {"algo": name, "benchmark": True}
    root = Path(tempfile.mkdtemp(prefix="oe3jax-bench-ckpt-", dir=workdir))
    step = [0]

    def next_step() -> int:
        step[0] += prog.chunk_updates * prog.steps_per_env
        return step[0]

    try:
        sync = Checkpoints(root / "sync", max_to_keep=saves + 1, async_save=False)
        sync_s = []
        for _ in range(saves):
            t0 = time.perf_counter()
            sync.save(next_step(), prog.state, meta)
            sync.wait()
            sync_s.append(time.perf_counter() - t0)
        size = _dir_bytes(sync.step_dir(step[0]))
        sync.close()

        chunk_alone = time_repeats(lambda: prog.run(1) or prog.state, 1)[0]
        asy = Checkpoints(root / "async", max_to_keep=saves + 2, async_save=True)
        blocking, interval = [], []
        for _ in range(saves):
            t0 = time.perf_counter()
            asy.save(next_step(), prog.state, meta)
            blocking.append(time.perf_counter() - t0)
            prog.run(1)
            asy.wait()
            interval.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        asy.save(next_step(), prog.state, meta)
        asy.wait()
        write_s = time.perf_counter() - t0
        size_async = _dir_bytes(asy.step_dir(step[0]))
        asy.close()

        full = _with_full_buffer(prog.state)
        if full is not None:  # a replay buffer: its size on disk grows as it fills (zeros compress)
            fill = float(np.max(np.asarray(prog.state.buffer.size))) / full.buffer.capacity
            ckf = Checkpoints(root / "full", max_to_keep=1, async_save=False)
            t0 = time.perf_counter()
            ckf.save(next_step(), full, meta)
            ckf.wait()
            full_s = time.perf_counter() - t0
            full_row = {"buffer_fill_measured": fill, "checkpoint_bytes_on_disk": _dir_bytes(ckf.step_dir(step[0])),
                        "sync_save_s": full_s}
            ckf.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    row = {
        "algo": name, "config": prog.source, "saves": saves, "chunk_updates": prog.chunk_updates,
        "state_bytes": _num_leaves_bytes(prog.state), "checkpoint_bytes_on_disk": size,
        "checkpoint_bytes_on_disk_async": size_async,
        "chunk_alone_s": round(chunk_alone, 4),
        "sync_save_s": [round(t, 4) for t in sync_s],
        "async_save_call_s": [round(t, 4) for t in blocking],
        "async_interval_s": [round(t, 4) for t in interval],
        "async_write_s": round(write_s, 4),
        "lost_per_save_s": {"sync": statistics.median(sync_s),
                            "async": statistics.median(interval) - chunk_alone},
    }
    if full_row is not None:
        row["full_buffer"] = full_row
        log(f"[checkpoint] {name}: buffer {100 * full_row['buffer_fill_measured']:.1f} % full when measured; with "
            f"every slot filled: {full_row['checkpoint_bytes_on_disk'] / 2**20:.1f} MiB, sync save "
            f"{full_row['sync_save_s']:.2f} s")
    log(f"[checkpoint] {name}: {size / 2**20:.1f} MiB on disk; lost per save "
        f"sync {row['lost_per_save_s']['sync']:.3f} s, async {row['lost_per_save_s']['async']:.3f} s "
        f"(blocking save() {statistics.median(blocking):.3f} s, chunk {chunk_alone:.3f} s)")
    return row


__all__ = [
    "ACTION_MODES", "HARNESS_STAGE", "STEP_STAGES", "Timing", "checkpoint_cost", "env_section", "env_throughput", "hlo_flops", "load_average",
    "machine_info", "make_rollout", "Program", "build_program", "matmul_flops", "reference_throughput", "resolve_algo_config",
    "step_stages", "time_repeats", "train_throughput", "xla_cost_flops",
]
