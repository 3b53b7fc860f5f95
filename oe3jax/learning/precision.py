"""Precision policy: network compute dtype and dynamic loss scaling for float16.

Parameters and optimizer states are always stored in float32; only the networks' *compute*
dtype follows the configured precision (Flax ``dtype`` vs ``param_dtype``). Log-probabilities,
advantages, targets and losses stay float32.

float16 has a narrow exponent range, so small gradients underflow to zero in the backward pass.
Dynamic loss scaling multiplies the loss by a large ``scale`` before differentiation, divides the
gradients by it afterwards, and adapts the scale: it halves after a step whose gradients are not
finite (overflow) and doubles after ``growth_interval`` finite steps in a row. The scale lives in
the train state as a small pytree (:class:`LossScaleState`) so it is vmapped over seeds and
checkpointed with the rest.

For float32 and bfloat16 the same API is the identity: no scaling, the scale never changes.
Skipping a non-finite step is not a matter of precision: :mod:`oe3jax.learning.gradient` skips and
counts it in every precision.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

PRECISIONS = ("float32", "bfloat16", "float16")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> jnp.dtype:
    """The network compute dtype for a precision name (one of :data:`PRECISIONS`)."""
    if name not in _DTYPES:
        raise ValueError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {name!r}")
    return jnp.dtype(_DTYPES[name])


@struct.dataclass
class LossScaleState:
    """The dynamic loss scale (float32 scalar) and the count of finite steps since it last changed."""

    scale: jax.Array
    good_steps: jax.Array


def all_finite(tree: Any) -> jax.Array:
    """True (a bool scalar) when every element of every leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.array(True)
    return jnp.stack(leaves).all()


def select_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """``on_true`` where the scalar ``pred`` holds, else ``on_false`` (leaf by leaf, same structure)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


@dataclasses.dataclass(frozen=True)
class LossScaler:
    """Static settings of the loss scaling; the changing part is a :class:`LossScaleState`.

    ``dynamic`` is True for float16 only. With ``dynamic=False`` every method is the identity.
    """

    dynamic: bool
    initial_scale: float = 2.0**15
    growth_interval: int = 2000
    factor: float = 2.0
    min_scale: float = 1.0
    max_scale: float = 2.0**24

    def init(self) -> LossScaleState:
        scale = self.initial_scale if self.dynamic else 1.0
        return LossScaleState(scale=jnp.asarray(scale, jnp.float32), good_steps=jnp.asarray(0, jnp.int32))

    def scale_loss(self, state: LossScaleState, loss: jax.Array) -> jax.Array:
        """The loss multiplied by the current scale (identity unless dynamic)."""
        if not self.dynamic:
            return loss
        return loss * state.scale.astype(loss.dtype)

    def unscale(self, state: LossScaleState, grads: Any) -> Any:
        """Gradients of the scaled loss divided by the scale, in float32 (identity unless dynamic)."""
        if not self.dynamic:
            return grads
        inv = 1.0 / state.scale
        return jax.tree.map(lambda g: g.astype(jnp.float32) * inv, grads)

    def adjust(self, state: LossScaleState, finite: jax.Array) -> LossScaleState:
        """The next scale: halve on overflow, double after ``growth_interval`` finite steps."""
        if not self.dynamic:
            return state
        grow = finite & (state.good_steps + 1 >= self.growth_interval)
        scale = jnp.where(
            finite,
            jnp.where(grow, jnp.minimum(state.scale * self.factor, self.max_scale), state.scale),
            jnp.maximum(state.scale / self.factor, self.min_scale),
        )
        good = jnp.where(finite & ~grow, state.good_steps + 1, 0).astype(jnp.int32)
        return LossScaleState(scale=scale.astype(jnp.float32), good_steps=good)


def make_loss_scaler(precision: str, **overrides: Any) -> LossScaler:
    """The loss scaler for a precision: dynamic for float16, identity otherwise."""
    compute_dtype(precision)  # validates the name
    return LossScaler(dynamic=precision == "float16", **overrides)
