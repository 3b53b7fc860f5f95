"""Threefry-2x32 random words that XLA fuses, equal to ``jax.random.bits``'.

On CPU, ``jax.random.bits`` of a threefry key (JAX's default, in its partitionable mode, the
default since JAX 0.5) runs the cipher's 20 rounds as a loop of 5 iterations, each a separate pass
over the batch; under ``vmap`` over thousands of environments that loop took about a tenth of the
env's step. Written out as plain integer operations, the rounds fuse with their neighbours into
one elementwise loop. The words are bit for bit those of ``jax.random.bits`` (the tests compare
them); any other key type, or the non-partitionable mode, goes through ``jax.random`` itself.
(The same written-out rounds for ``jax.random.split`` in the benchmark's rollout were slower than
JAX's loop: XLA fused them into each consumer of the keys.)
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def fusable(key: Any) -> bool:
    """Whether this key's words can be computed here: a typed threefry key, partitionable mode."""
    try:
        impl = jax.random.key_impl(key)
    except (TypeError, ValueError):
        return False
    return str(impl) == "threefry2x32" and bool(jax.config.jax_threefry_partitionable)


def threefry(key_data: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds) of the counters ``(0, i)``, ``i = 0..n-1``, under the key
    ``key_data`` (uint32[2]): the two output words, uint32[n] each."""
    u32 = jnp.uint32
    k0, k1 = key_data[0], key_data[1]
    ks = (k0, k1, k0 ^ k1 ^ u32(_PARITY))
    x0 = jnp.zeros(n, u32) + ks[0]
    x1 = jnp.arange(n, dtype=u32) + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = (x1 << u32(r)) | (x1 >> u32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + u32(block + 1)
    return x0, x1


def bits(key: jax.Array, n: int) -> jax.Array:
    """``jax.random.bits(key, (n,), jnp.uint32)``: the two words of each counter XORed."""
    if not fusable(key):
        return jax.random.bits(key, (n,), jnp.uint32)
    x0, x1 = threefry(jax.random.key_data(key), n)
    return x0 ^ x1


__all__ = ["bits", "fusable", "threefry"]
