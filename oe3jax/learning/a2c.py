"""Advantage Actor-Critic (synchronous, A2C) as one XLA program per chunk of updates.

One update: roll out ``num_envs`` environments for ``num_steps`` steps, compute advantages
(GAE(lambda); ``gae_lambda = 1`` gives the classic n-step returns, bootstrapped from the value of
the observation after the last step and, for a truncated episode, of its true final
observation), then ONE gradient step on the whole rollout:

    -mean(log_prob * advantage) + vf_coef * 0.5 * mean((V - target)^2) - ent_coef * entropy,

after global gradient-norm clipping, with RMSprop or Adam. No ratio or value clipping. The
rollout, normaliser, schedule and precision handling are those of PPO (:mod:`common`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from oe3jax.learning import common
from oe3jax.schema import Field
from oe3jax.learning.precision import make_loss_scaler

NAME = "a2c"

CONFIG_SPEC: dict[str, Field] = {
    **common.on_policy_spec(num_envs=16, num_steps=16, lr=7e-4, gae_lambda=1.0, norm_adv=False),
    "optimizer": Field("rmsprop", str, choices=("rmsprop", "adam")),
    "opt_eps": Field(1e-5, float, low=0.0, low_open=True, help="epsilon of RMSprop / Adam"),
    "rmsprop_decay": Field(0.99, float, low=0.0, high=1.0, high_open=True,
                           help="RMSprop moving-average decay (used with optimizer: rmsprop)"),
}


def _algo_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg[NAME]


def env_steps_per_update(cfg: dict[str, Any]) -> tuple[int, int]:
    c = _algo_cfg(cfg)
    return c["num_envs"], c["num_steps"]


def _optimizer(c: dict[str, Any]):
    return common.make_optimizer(c["optimizer"], c["lr"], c["max_grad_norm"], c["opt_eps"], c["rmsprop_decay"])


def init(key: jax.Array, env: Any, env_params: Any, cfg: dict[str, Any]) -> common.OnPolicyState:
    c = _algo_cfg(cfg)
    return common.init_on_policy(key, env, env_params, cfg, c, _optimizer(c))


def make_update_chunk(env: Any, env_params: Any, cfg: dict[str, Any], num_updates: int):
    c = _algo_cfg(cfg)
    nets = common.Networks(env, env_params, cfg)
    tx = _optimizer(c)
    scaler = make_loss_scaler(cfg["precision"])
    batch_size = c["num_envs"] * c["num_steps"]

    def loss_fn(params: Any, b: common.Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        logp, entropy, value = nets.evaluate(params, b.obs, b.u)
        adv = b.advantage
        if c["norm_adv"]:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        actor_loss = -jnp.mean(logp * adv)
        critic_loss = 0.5 * jnp.mean((value - b.target) ** 2)
        entropy = jnp.mean(entropy)
        total = actor_loss + c["vf_coef"] * critic_loss - c["ent_coef"] * entropy
        return total, {"actor_loss": actor_loss, "critic_loss": critic_loss, "entropy": entropy}

    def learn(key: jax.Array, state: common.OnPolicyState, batch: common.Batch):
        del key
        flat = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), batch)
        params, opt_state, loss_scale, skipped, aux = common.gradient_step(
            lambda p: loss_fn(p, flat), tx, scaler, state.params, state.opt_state, state.loss_scale
        )
        metrics = {**aux, "nonfinite_skips": skipped}
        return state.replace(params=params, opt_state=opt_state, loss_scale=loss_scale), metrics

    return common.make_chunk(env, env_params, cfg, c, NAME, num_updates, learn, nets)


def make_policy(env: Any, env_params: Any, cfg: dict[str, Any]):
    return common.make_policy(env, env_params, cfg, _algo_cfg(cfg))


def policy_params(state: common.OnPolicyState) -> dict[str, Any]:
    return common.policy_params(state)
