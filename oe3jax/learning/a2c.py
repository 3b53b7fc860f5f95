"""Advantage Actor-Critic (synchronous, A2C) as one XLA program per chunk of updates.

One update: collect ``num_steps`` steps of ``num_envs`` environments, compute advantages
(GAE(lambda); ``gae_lambda = 1`` gives the classic n-step returns, bootstrapped from the value of
the observation after the last step and, for a truncated episode, of its true final
observation), then ONE gradient step on the whole trajectory:

    -mean(log_prob * advantage) + vf_coef * 0.5 * mean((V - target)^2) - ent_coef * entropy,

after global gradient-norm clipping, with RMSprop or Adam. No ratio or value clipping.

Collecting, GAE, the normaliser, the learning-rate schedule and acting are shared with PPO
(:mod:`oe3jax.learning.onpolicy`); the precision policy is :mod:`oe3jax.learning.gradient`'s: a step
with a non-finite loss or gradient changes nothing and is counted in ``nonfinite_skips``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from oe3jax.learning import gradient, onpolicy
from oe3jax.learning.onpolicy import Batch, OnPolicyState
from oe3jax.schema import Field

NAME = "a2c"

CONFIG_SPEC: dict[str, Field] = {
    **onpolicy.config_spec(num_envs=16, num_steps=16, lr=7e-4, gae_lambda=1.0, norm_adv=False),
    "optimizer": Field("rmsprop", str, choices=("rmsprop", "adam")),
    "opt_eps": Field(1e-5, float, low=0.0, low_open=True, help="epsilon of RMSprop / Adam"),
    "rmsprop_decay": Field(0.99, float, low=0.0, high=1.0, high_open=True,
                           help="RMSprop moving-average decay (used with optimizer: rmsprop)"),
}

SWEEPABLE = onpolicy.SWEEPABLE


def _section(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``a2c`` section (it has no relations between keys to check)."""
    return cfg[NAME]


def _optimizer(c: Mapping[str, Any]) -> optax.GradientTransformation:
    return onpolicy.make_optimizer(c["optimizer"], c["lr"], c["max_grad_norm"], c["opt_eps"], c["rmsprop_decay"])


def _make_learn(setup: onpolicy.LearnSetup) -> onpolicy.LearnFn:
    """A2C's learning step: one :func:`gradient.gradient_step` on the whole batch."""
    c, nets, tx, scaler = setup.algo_cfg, setup.nets, setup.tx, setup.scaler

    def loss_fn(params: Any, b: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        logp, entropy, value = nets.log_prob_entropy_value(params, b.obs, b.u)
        adv = b.advantage
        if c["norm_adv"]:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        actor_loss = -jnp.mean(logp * adv)
        critic_loss = 0.5 * jnp.mean((value - b.target) ** 2)
        entropy = jnp.mean(entropy)
        total = actor_loss + c["vf_coef"] * critic_loss - c["ent_coef"] * entropy
        return total, {"actor_loss": actor_loss, "critic_loss": critic_loss, "entropy": entropy}

    def learn(key: jax.Array, state: OnPolicyState, batch: Batch) -> tuple[OnPolicyState, dict[str, jax.Array]]:
        del key
        params, opt_state, loss_scale, skipped, aux = gradient.gradient_step(
            lambda p: loss_fn(p, batch), tx, scaler, state.params, state.opt_state, state.loss_scale
        )
        # A skipped step reports zero losses, as PPO's minibatch statistics do.
        metrics = {**{k: jnp.where(skipped > 0, 0.0, v) for k, v in aux.items()}, "nonfinite_skips": skipped}
        return state.replace(params=params, opt_state=opt_state, loss_scale=loss_scale), metrics

    return learn


_ON_POLICY = onpolicy.OnPolicy(NAME, _section, _optimizer, _make_learn)
env_steps_per_update = _ON_POLICY.env_steps_per_update
init = _ON_POLICY.init
make_update_chunk = _ON_POLICY.make_update_chunk
make_policy = _ON_POLICY.make_policy
policy_params = onpolicy.policy_params
