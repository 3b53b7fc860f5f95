"""The gradient step of every learner, with the precision policy.

One policy for every algorithm and precision:

1. the loss is multiplied by the dynamic loss scale (float16; identity otherwise) and
   differentiated; the gradients are divided by the scale, in float32 (:func:`scaled_grad`);
2. the optimizer computes the new parameters and optimizer state;
3. if any gradient or the loss is not finite, the step changes nothing: parameters and optimizer
   state are kept, and the step is counted as skipped; the loss scale halves on such a step and
   grows after a run of finite ones (float16 only) (:func:`keep_if_finite`).

:func:`gradient_step` is the whole sequence for one loss and one optimizer (PPO, A2C). SAC's step
updates critics, actor and temperature one after the other on three losses; it uses the same
:func:`scaled_grad` for each and one :func:`keep_if_finite` for the whole step.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax

from oe3jax.learning.precision import LossScaler, LossScaleState, all_finite, select_tree

T = TypeVar("T")
LossFn = Callable[[Any], tuple[jax.Array, Any]]


def scaled_grad(
    loss_fn: LossFn, scaler: LossScaler, loss_scale: LossScaleState, params: Any
) -> tuple[Any, jax.Array, Any]:
    """``(grads, loss, aux)`` of ``loss_fn(params) -> (loss, aux)``, differentiated through the loss scale.

    The gradients are those of the unscaled loss (float32 under float16); ``loss`` is unscaled.
    """

    def scaled(p: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        loss, aux = loss_fn(p)
        return scaler.scale_loss(loss_scale, loss), (loss, aux)

    grads, (loss, aux) = jax.grad(scaled, has_aux=True)(params)
    return scaler.unscale(loss_scale, grads), loss, aux


def optimizer_step(tx: optax.GradientTransformation, grads: Any, params: Any, opt_state: Any) -> tuple[Any, Any]:
    """``(params, opt_state)`` after one optimizer update with ``grads``."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def keep_if_finite(
    finite: jax.Array, stepped: T, kept: T, scaler: LossScaler, loss_scale: LossScaleState
) -> tuple[T, LossScaleState, jax.Array]:
    """``(stepped or kept, next loss scale, skipped)``: ``kept`` unless ``finite``.

    ``skipped`` is a float32 0/1 for the metrics; the loss scale adapts to ``finite``.
    """
    chosen = select_tree(finite, stepped, kept)
    return chosen, scaler.adjust(loss_scale, finite), (~finite).astype(jnp.float32)


def gradient_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    scaler: LossScaler,
    params: Any,
    opt_state: Any,
    loss_scale: LossScaleState,
) -> tuple[Any, Any, LossScaleState, jax.Array, Any]:
    """One optimizer step on ``loss_fn(params) -> (loss, aux)``, skipped when not finite.

    Returns ``(params, opt_state, loss_scale, skipped, aux)``; ``skipped`` is a float32 0/1.
    """
    grads, loss, aux = scaled_grad(loss_fn, scaler, loss_scale, params)
    stepped = optimizer_step(tx, grads, params, opt_state)
    finite = all_finite((grads, loss))
    (params, opt_state), loss_scale, skipped = keep_if_finite(finite, stepped, (params, opt_state), scaler, loss_scale)
    return params, opt_state, loss_scale, skipped, aux
