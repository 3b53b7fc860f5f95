"""One whole episode in a single jitted ``lax.scan``: the primitive every evaluation builds on.

>>> trace = run_episode(env, params, act, jax.random.key(0))          # the full year

A policy here is any jittable ``act(obs, state, params) -> action`` (controllers read the env state
and params; a trained policy ignores them); :class:`Schedule` plays a fixed table of actions.

Key schedule: ``reset`` uses ``split(key)[0]``, step ``k`` uses ``split(split(key)[1], hours)[k]``.
The vehicle arrivals depend on these keys only, never on the actions, so two policies run with the
same key see exactly the same vehicles.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Act = Callable[[jax.Array, Any, Any], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A fixed schedule of actions, ``actions[k]`` at step ``k`` of the episode (shape ``(steps, 1 + n)``).

    Callable like any policy; :func:`run_episode` passes the table as an argument of one compiled
    program per (environment, length), so replaying many schedules compiles once.
    """

    actions: np.ndarray

    def __call__(self, obs: jax.Array, state: Any, params: Any) -> jax.Array:
        table = jnp.asarray(self.actions, jnp.float32)
        return table[jnp.minimum(state.k, table.shape[0] - 1)]


def _compiled_rollout(env: Any, act: Act | None, hours: int) -> Callable[..., Any]:
    """The cached program of :func:`_build_rollout`, shared by environments of equal scenarios."""
    try:  # an environment is fixed by its type and scenario (its arrays are in params)
        return _build_rollout(_EnvKey(type(env), env.scenario, env), act, hours)
    except TypeError:  # a scenario holding an unhashable profile spec: cache per object
        return _build_rollout(_EnvKey(type(env), id(env), env), act, hours)


@dataclasses.dataclass(frozen=True)
class _EnvKey:
    kind: type
    key: Any
    env: Any = dataclasses.field(compare=False, hash=False)


@functools.lru_cache(maxsize=32)
def _build_rollout(env_key: _EnvKey, act: Act | None, hours: int) -> Callable[..., Any]:
    """One jitted episode of ``hours`` steps; ``act=None`` plays the ``table`` argument instead."""
    env = env_key.env

    def run(params: Any, key: jax.Array, table: jax.Array | None) -> tuple[Any, Any, Any]:
        key_reset, key_steps = jax.random.split(key)
        obs, state = env.reset(key_reset, params)

        def body(carry, step_key):
            obs, state = carry
            action = table[state.k] if act is None else act(obs, state, params)
            obs2, state2, reward, _, info = env.step_env(step_key, state, action, params)
            out = {
                "t": state.t, "year": state.year, "month_peak_kw": state.month_peak_kw,
                "energy_kwh": state.energy_kwh, "occupied": state.occupied,
                "need_kwh": state.need_kwh, "hours_left": state.hours_left,
                "action": jnp.asarray(action, jnp.float32), "reward": reward,
                "flows": info["flows"], "vehicles": info["vehicles"],
            }
            return (obs2, state2), out

        (_, last), trace = jax.lax.scan(body, (obs, state), jax.random.split(key_steps, hours))
        final = {"energy_kwh": last.energy_kwh, "need_kwh": last.need_kwh}
        return state.totals, trace, (final, last.totals)

    return jax.jit(run)


def run_episode(env: Any, params: Any, act: Act, key: jax.Array, hours: int | None = None) -> dict[str, Any]:
    """Run one episode of ``hours`` steps (default: the params' episode length) under ``act``.

    Returns numpy arrays, one row per step: ``flows`` (the hour's energy flows, kWh), ``vehicles``
    (arrival/departure counts), ``reward``, ``action``, and the state *before* each step's action
    (``t``, ``year`` (the weather year's index in ``scenario.weather_years``), ``month_peak_kw``,
    ``energy_kwh``, ``occupied``, ``need_kwh``, ``hours_left``); plus ``initial_totals``
    (the episode totals right after reset: the first hour's arrivals), ``final`` (battery energy
    and per-socket need after the last step) and ``totals`` (the environment's own running
    totals after the last step, float32).

    The compiled program is cached per (env, act, hours): reuse the same ``act`` object to avoid
    recompiling; every :class:`Schedule` of a given length shares one program.
    """
    if hours is None:
        hours = int(params.max_steps_in_episode)
    if isinstance(hours, bool) or not isinstance(hours, int) or hours < 1:
        raise ValueError(f"hours: expected an integer >= 1, got {hours!r}")
    # the episode is exactly `hours` long: no truncation inside the rollout
    params = params.replace(max_steps_in_episode=jnp.asarray(hours, jnp.int32))
    if isinstance(act, Schedule):
        table = jnp.asarray(act.actions, jnp.float32)
        if table.ndim != 2 or table.shape[0] < hours:
            raise ValueError(f"Schedule.actions: expected shape (>= {hours}, n_actions), got {table.shape}")
        run = _compiled_rollout(env, None, hours)
        initial_totals, trace, (final, episode) = run(params, key, table[:hours])
    else:
        run = _compiled_rollout(env, act, hours)
        initial_totals, trace, (final, episode) = run(params, key, None)
    out = jax.tree.map(np.asarray, trace)
    out["initial_totals"] = {k: float(v) for k, v in initial_totals.items()}
    out["final"] = jax.tree.map(np.asarray, final)
    out["totals"] = {k: float(v) for k, v in episode.items()}
    return out


def session_starts(occupied: np.ndarray, hours_left: np.ndarray) -> np.ndarray:
    """Where a vehicle plugs in: ``(steps, n_sockets)`` booleans from a trace of socket states.

    ``occupied`` and ``hours_left`` are the states *before* each step (as :func:`run_episode`
    records them). A socket holds a new vehicle at step ``k`` when it is occupied and was free at
    ``k - 1`` or held a vehicle with one hour left (which departed at the end of ``k - 1``).
    """
    occupied = np.asarray(occupied, bool)
    hours_left = np.asarray(hours_left)
    prev_occ = np.vstack([np.zeros((1, occupied.shape[1]), bool), occupied[:-1]])
    prev_left = np.vstack([np.zeros((1, occupied.shape[1]), hours_left.dtype), hours_left[:-1]])
    return occupied & (~prev_occ | (prev_left == 1))
