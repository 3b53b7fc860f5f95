"""A replay buffer of single transitions, as pure functions over a pytree state.

The whole buffer is a :class:`BufferState` (arrays only), so it lives inside the jitted train
state, is vmapped over seeds with the rest of it and is saved whole with every checkpoint.

- ``init``: fixed capacity, zero-filled storage, nothing allocated afterwards.
- ``add``: a batch of ``n`` transitions (one per vectorized environment) written at
  ``pos, pos + 1, ..., pos + n - 1`` modulo the capacity; the oldest transitions are overwritten.
- ``sample``: ``batch_size`` indices drawn uniformly (with replacement) from the filled slots
  with ``jax.random.randint``: the cost is O(batch_size), never O(capacity).
- Observations may be stored in bfloat16 or float16 to halve the memory; ``sample`` returns
  them as float32.

A transition stores the TRUE next observation (on an auto-reset step, the final observation of
the episode, not the first one of the next) and ``terminated`` (a real end of the task); a time
limit is not a termination, so the learner keeps bootstrapping through it.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

OBS_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class Transition(NamedTuple):
    """One transition, or a batch of them along a leading axis."""

    obs: jax.Array  # (..., obs_dim)
    action: jax.Array  # (..., act_dim)
    reward: jax.Array  # (...,)
    next_obs: jax.Array  # (..., obs_dim), the true next observation
    terminated: jax.Array  # (...,) bool: the episode really ended (not a time limit)


@struct.dataclass
class BufferState:
    """Storage with a leading capacity axis, the next write position and the filled size."""

    data: Transition
    pos: jax.Array  # int32 scalar: slot of the next write
    size: jax.Array  # int32 scalar: number of filled slots, at most the capacity

    @property
    def capacity(self) -> int:
        return int(self.data.reward.shape[-1])


def init(capacity: int, obs_dim: int, act_dim: int, obs_dtype: str = "float32") -> BufferState:
    """An empty buffer of ``capacity`` transitions; observations stored as ``obs_dtype``."""
    if capacity < 1:
        raise ValueError(f"buffer capacity: expected an integer >= 1, got {capacity}")
    if obs_dtype not in OBS_DTYPES:
        raise ValueError(f"buffer obs dtype: expected one of {', '.join(OBS_DTYPES)}, got {obs_dtype!r}")
    store = OBS_DTYPES[obs_dtype]
    data = Transition(
        obs=jnp.zeros((capacity, obs_dim), store),
        action=jnp.zeros((capacity, act_dim), jnp.float32),
        reward=jnp.zeros((capacity,), jnp.float32),
        next_obs=jnp.zeros((capacity, obs_dim), store),
        terminated=jnp.zeros((capacity,), jnp.bool_),
    )
    return BufferState(data=data, pos=jnp.int32(0), size=jnp.int32(0))


def add(state: BufferState, batch: Transition) -> BufferState:
    """Write a batch of ``n`` transitions (leading axis ``n <= capacity``), wrapping around."""
    capacity = state.data.reward.shape[0]
    n = batch.reward.shape[0]
    if n > capacity:
        raise ValueError(f"buffer: cannot add {n} transitions at once to a buffer of capacity {capacity}")
    idx = (state.pos + jnp.arange(n, dtype=jnp.int32)) % capacity
    data = jax.tree.map(lambda store, new: store.at[idx].set(new.astype(store.dtype)), state.data, batch)
    return BufferState(
        data=data,
        pos=(state.pos + n) % capacity,
        size=jnp.minimum(state.size + n, capacity),
    )


def can_sample(state: BufferState, batch_size: int = 1) -> jax.Array:
    """Whether the buffer holds at least ``batch_size`` transitions (a bool scalar)."""
    return state.size >= batch_size


def sample(state: BufferState, key: jax.Array, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly with replacement from the filled slots.

    Observations come back as float32. On an empty buffer the result is the zero-filled slot 0;
    callers gate learning with :func:`can_sample`.
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    picked = jax.tree.map(lambda store: store[idx], state.data)
    return picked._replace(obs=picked.obs.astype(jnp.float32), next_obs=picked.next_obs.astype(jnp.float32))


def nbytes(state: BufferState) -> int:
    """Bytes held by the buffer (all arrays, counters included)."""
    return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(state)))


def nbytes_for(capacity: int, obs_dim: int, act_dim: int, obs_dtype: str = "float32") -> int:
    """Bytes a buffer of this shape would hold, computed without allocating it."""
    return nbytes(jax.eval_shape(lambda: init(capacity, obs_dim, act_dim, obs_dtype)))


def describe(capacity: int, obs_dim: int, act_dim: int, obs_dtype: str = "float32") -> str:
    """A one-line memory report, e.g. ``replay buffer: 200,000 x (2 x 533 obs x 4 B + ...) = 0.86 GB``."""
    obs_bytes = jnp.dtype(OBS_DTYPES[obs_dtype]).itemsize
    total = nbytes_for(capacity, obs_dim, act_dim, obs_dtype)
    return (
        f"replay buffer: {capacity:,} x (2 x {obs_dim} obs x {obs_bytes} B + {act_dim} actions x 4 B"
        f" + reward 4 B + terminated 1 B) = {total / 1e9:.2f} GB"
    )
