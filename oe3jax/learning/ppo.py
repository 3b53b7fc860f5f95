"""Proximal Policy Optimization (clipped surrogate) as one XLA program per chunk of updates.

One update: roll out ``num_envs`` environments for ``num_steps`` steps with the stochastic
policy, compute GAE(lambda) advantages (bootstrapping truncated episodes from their true final
observation), then ``update_epochs`` passes over the batch in ``num_minibatches`` shuffled
minibatches, each an Adam step on

    clipped surrogate + vf_coef * value loss (optionally clipped) - ent_coef * entropy,

after global gradient-norm clipping. With ``target_kl`` set, the remaining minibatch steps of
the update are skipped once a minibatch's approximate KL divergence (``mean(r - 1 - log r)``)
exceeds it, before its step is applied. The learning rate is constant or decays linearly to 0
at ``total_steps``. Rewards are multiplied by ``reward_scale`` for learning only.

Precision: parameters and Adam state float32; networks compute in ``cfg["precision"]``;
log-probabilities, advantages, targets and losses float32; float16 scales the loss dynamically.
In every precision a minibatch step with a non-finite loss or gradient changes nothing and is
counted in the ``nonfinite_skips`` metric (:mod:`oe3jax.learning.gradient`).

Collecting, GAE, the train state and acting are shared with A2C (:mod:`oe3jax.learning.onpolicy`);
this module holds the PPO loss and its minibatch epochs.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from oe3jax.learning import gradient, onpolicy
from oe3jax.learning.onpolicy import Batch, OnPolicyState
from oe3jax.learning.precision import select_tree
from oe3jax.schema import ConfigError, Field

NAME = "ppo"

CONFIG_SPEC: dict[str, Field] = {
    **onpolicy.config_spec(num_envs=16, num_steps=256, lr=3e-4, gae_lambda=0.95, ent_coef=0.0),
    "update_epochs": Field(4, int, low=1, help="passes over each rollout"),
    "num_minibatches": Field(8, int, low=1, help="minibatches per pass; must divide num_envs * num_steps"),
    "clip_eps": Field(0.2, float, low=0.0, low_open=True, help="surrogate clipping range"),
    "clip_value": Field(False, bool, help="clip the value update around the behaviour value"),
    "vf_clip": Field(0.2, float, low=0.0, low_open=True, help="value clipping range (with clip_value)"),
    "target_kl": Field(None, float, low=0.0, low_open=True, optional=True,
                       help="stop the update's remaining minibatch steps above this approx-KL; null: off"),
}

ADAM_EPS = 1e-5

SWEEPABLE = (*onpolicy.SWEEPABLE, "clip_eps", "vf_clip")


def _section(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``ppo`` section, with its cross-key relations checked."""
    c = cfg[NAME]
    batch = c["num_envs"] * c["num_steps"]
    if batch % c["num_minibatches"]:
        raise ConfigError(
            f"{NAME}.num_minibatches: must divide num_envs * num_steps = {batch}, got {c['num_minibatches']}"
        )
    return c


def _optimizer(c: Mapping[str, Any]) -> optax.GradientTransformation:
    return onpolicy.make_optimizer("adam", c["lr"], c["max_grad_norm"], ADAM_EPS)


def _make_learn(setup: onpolicy.LearnSetup) -> onpolicy.LearnFn:
    """PPO's learning step: ``update_epochs`` passes over the batch in ``num_minibatches`` shuffled
    minibatches, each one :func:`gradient.gradient_step` (stopped early above ``target_kl``)."""
    c, nets, tx, scaler = setup.algo_cfg, setup.nets, setup.tx, setup.scaler
    n_mb = c["num_minibatches"]
    target_kl = c["target_kl"]
    stat_keys = ("actor_loss", "critic_loss", "entropy", "approx_kl", "clip_frac")

    def loss_fn(params: Any, mb: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        logp, entropy, value = nets.log_prob_entropy_value(params, mb.obs, mb.u)
        log_ratio = logp - mb.log_prob
        ratio = jnp.exp(log_ratio)
        adv = mb.advantage
        if c["norm_adv"]:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - c["clip_eps"], 1.0 + c["clip_eps"]) * adv)
        actor_loss = -jnp.mean(surrogate)
        if c["clip_value"]:
            clipped = mb.value + jnp.clip(value - mb.value, -c["vf_clip"], c["vf_clip"])
            critic_loss = 0.5 * jnp.mean(jnp.maximum((value - mb.target) ** 2, (clipped - mb.target) ** 2))
        else:
            critic_loss = 0.5 * jnp.mean((value - mb.target) ** 2)
        entropy = jnp.mean(entropy)
        total = actor_loss + c["vf_coef"] * critic_loss - c["ent_coef"] * entropy
        aux = {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "entropy": entropy,
            "approx_kl": jax.lax.stop_gradient(jnp.mean(ratio - 1.0 - log_ratio)),
            "clip_frac": jax.lax.stop_gradient(jnp.mean((jnp.abs(ratio - 1.0) > c["clip_eps"]).astype(jnp.float32))),
        }
        return total, aux

    def minibatch_step(carry, mb: Batch):
        params, opt_state, loss_scale, stop, sums = carry

        def run(_):
            p, o, ls, skipped, aux = gradient.gradient_step(
                lambda q: loss_fn(q, mb), tx, scaler, params, opt_state, loss_scale
            )
            exceeded = jnp.asarray(False) if target_kl is None else aux["approx_kl"] > target_kl
            p, o, ls = select_tree(exceeded, (params, opt_state, loss_scale), (p, o, ls))
            counted = (1.0 - skipped) * (1.0 - exceeded.astype(jnp.float32))
            new_sums = {k: sums[k] + jnp.where(skipped > 0, 0.0, aux[k]) for k in stat_keys}
            new_sums["evaluated"] = sums["evaluated"] + (1.0 - skipped)
            new_sums["applied"] = sums["applied"] + counted
            new_sums["nonfinite_skips"] = sums["nonfinite_skips"] + skipped
            return p, o, ls, jnp.logical_or(stop, exceeded), new_sums

        return jax.lax.cond(stop, lambda _: carry, run, None), None

    def epoch(carry, key):
        batch = carry[-1]
        batch_size = batch.obs.shape[0]
        perm = jax.random.permutation(key, batch_size)
        mbs = jax.tree.map(lambda x: x[perm].reshape(n_mb, batch_size // n_mb, *x.shape[1:]), batch)
        inner, _ = jax.lax.scan(minibatch_step, carry[:-1], mbs)
        return (*inner, carry[-1]), None

    def learn(key: jax.Array, state: OnPolicyState, batch: Batch) -> tuple[OnPolicyState, dict[str, jax.Array]]:
        zero = jnp.asarray(0.0, jnp.float32)
        sums = {k: zero for k in (*stat_keys, "evaluated", "applied", "nonfinite_skips")}
        carry = (state.params, state.opt_state, state.loss_scale, jnp.asarray(False), sums, batch)
        (params, opt_state, loss_scale, _, sums, _), _ = jax.lax.scan(
            epoch, carry, jax.random.split(key, c["update_epochs"])
        )
        n = jnp.maximum(sums["evaluated"], 1.0)
        metrics = {k: sums[k] / n for k in stat_keys}
        metrics["minibatch_steps"] = sums["applied"]
        metrics["nonfinite_skips"] = sums["nonfinite_skips"]
        return state.replace(params=params, opt_state=opt_state, loss_scale=loss_scale), metrics

    return learn


_ON_POLICY = onpolicy.OnPolicy(NAME, _section, _optimizer, _make_learn)
env_steps_per_update = _ON_POLICY.env_steps_per_update
init = _ON_POLICY.init
make_update_chunk = _ON_POLICY.make_update_chunk
make_policy = _ON_POLICY.make_policy
policy_params = onpolicy.policy_params
