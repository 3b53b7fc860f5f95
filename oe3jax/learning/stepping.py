"""Stepping ``num_envs`` environments at once, with episode accounting, and PRNG key helpers.

Every learner holds a batch of environments in its train state (their states and last
observations) and steps them together with :func:`~oe3jax.simulation.env.batched_step` (the env's
``step_batch`` where it has one, else ``jax.vmap(env.step)``). :func:`step_envs` does one
such step and also keeps the running return of each environment and sums the totals of the
episodes that end at that step, from the environment's ``info["totals"]`` (the EV park reports
its return, CO2, grid import and unmet energy there; an environment without totals reports its
running return and zeros). The episode metric names are
:data:`oe3jax.learning.EPISODE_TOTALS`'s.

Observations, rewards and returns come out as float32. ``final_obs`` is the observation that
ended each step *before* any auto-reset (gymnax's ``info["final_observation"]``): a truncated
episode bootstraps from it.

The train states hold PRNG key *data* (``jax.random.key_data``, uint32); :func:`as_key` turns it,
a typed key or an integer seed into a typed key.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from oe3jax.learning import EPISODE_TOTALS
from oe3jax.simulation.env import batched_step

_F32 = jnp.float32


def as_key(key: Any) -> jax.Array:
    """A typed PRNG key from a typed key, raw uint32 key data, or an integer seed."""
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.ndim == 0:
        return jax.random.key(key)
    return jax.random.wrap_key_data(key)


def reset_envs(env: Any, env_params: Any, key: jax.Array, num_envs: int) -> tuple[jax.Array, Any]:
    """``(obs [num_envs, obs_dim] float32, env_states)`` of ``num_envs`` freshly reset environments."""
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), env_params)
    return obs.astype(_F32), env_state


@struct.dataclass
class EnvStep:
    """One step of all environments (leading axis ``num_envs``), after auto-reset."""

    obs: jax.Array          # next observations (the first of a new episode where one ended), float32
    env_state: Any
    reward: jax.Array       # float32
    terminated: jax.Array   # bool: a real end of the task
    done: jax.Array         # bool: terminated or truncated
    final_obs: jax.Array    # the observation that ended the step, before any auto-reset, float32
    ep_return: jax.Array    # running returns, 0 where an episode ended at this step
    episode: dict[str, jax.Array]  # sums over the episodes that ended at this step (float32 scalars)


def episode_sums(done: jax.Array, returns: jax.Array, totals: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``episodes``, ``ep_return`` and the :data:`EPISODE_TOTALS` metrics, summed over the ended episodes.

    ``returns`` are the episode returns of the environments, ``totals`` their ``info["totals"]``
    (possibly empty: a total the environment does not report sums to 0).
    """
    ended = done.astype(_F32)
    sums = {"episodes": jnp.sum(ended), "ep_return": jnp.sum(ended * returns.astype(_F32))}
    for total, metric in EPISODE_TOTALS.items():
        sums[metric] = jnp.sum(ended * totals[total].astype(_F32)) if total in totals else jnp.asarray(0.0, _F32)
    return sums


def step_envs(
    env: Any, env_params: Any, key: jax.Array, env_state: Any, action: jax.Array, ep_return: jax.Array
) -> EnvStep:
    """Step every environment once with ``action`` (env units) and do the episode accounting.

    ``ep_return`` is the running return of each environment before the step.
    """
    keys = jax.random.split(key, action.shape[0])
    obs, env_state, reward, terminated, truncated, info = batched_step(env)(keys, env_state, action, env_params)
    reward = reward.astype(_F32)
    done = jnp.logical_or(terminated, truncated)
    running = ep_return + reward
    totals = info.get("totals", {})
    returns = totals["return"] if "return" in totals else running
    return EnvStep(
        obs=obs.astype(_F32),
        env_state=env_state,
        reward=reward,
        terminated=terminated,
        done=done,
        final_obs=info["final_observation"].astype(_F32),
        ep_return=jnp.where(done, 0.0, running),
        episode=episode_sums(done, returns, totals),
    )
