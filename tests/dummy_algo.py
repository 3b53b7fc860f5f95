"""A tiny algorithm that follows the interface of ``oe3jax.learning`` (for runner and checkpoint tests).

A linear Gaussian policy on gymnax Pendulum, trained by plain SGD on a one-step policy gradient
(REINFORCE with the batch-mean reward as baseline). It learns little, but it is cheap to compile,
uses every part of the interface (PRNG key data, env states, counters, episode metrics), and its
parameters depend on every update, which is what exact-resume tests need. A small replay buffer
(``REPLAY_UPDATES`` updates' last transitions) is part of its state and its samples move the bias,
so a resume also has to restore a buffer that is not yet full (checkpoints save only its filled
slots).

``components()`` plugs it (as ``dummy`` and ``dummy2``) and a Pendulum ``make_env`` into the runner.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
from flax import struct

from oe3jax.learning import buffer as rb
from oe3jax.schema import Field
from oe3jax.training.config import Components

NAME = "dummy"

CONFIG_SPEC = {
    "num_envs": Field(4, int, low=1),
    "num_steps": Field(8, int, low=1),
    "lr": Field(0.01, float, low=0.0, low_open=True),
}
SWEEPABLE = ("lr",)
NETWORK_SPEC = {"hidden": Field(0, int, low=0)}
ENV_SPEC = {"episode_len": Field(200, int, low=1)}
SCENARIOS = {"pendulum": 1.0, "pendulum-heavy": 2.0}  # name -> pendulum mass
REPLAY_UPDATES = 6  # the replay buffer holds the last transitions of this many updates


def make_env(scenario: str, episode_len: int = 200, **overrides: Any) -> tuple[Any, Any]:
    """Pendulum of the scenario's mass; ``overrides`` replace Pendulum params (e.g. ``g``, ``m``)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: unknown scenario {scenario!r}; accepted: {', '.join(SCENARIOS)}")
    env, params = gymnax.make("Pendulum-v1")
    unknown = sorted(set(overrides) - set(params.__dataclass_fields__))
    if unknown:
        raise ValueError(f"scenario override {unknown[0]!r} is not a Pendulum parameter")
    return env, params.replace(max_steps_in_episode=episode_len, m=SCENARIOS[scenario], **overrides)


@struct.dataclass
class State:
    params: dict
    env_state: Any
    obs: jax.Array
    key: jax.Array  # uint32 key data
    ret: jax.Array  # running return per env
    updates: jax.Array
    replay: rb.BufferState  # each update's last transitions


def env_steps_per_update(cfg: dict) -> tuple[int, int]:
    return cfg[cfg["algo"]]["num_envs"], cfg[cfg["algo"]]["num_steps"]


def _mean(params: dict, obs: jax.Array) -> jax.Array:
    h = jnp.tanh(obs @ params["w1"]) if "w1" in params else obs
    return h @ params["w"] + params["b"]


def init(key: jax.Array, env: Any, env_params: Any, cfg: dict) -> State:
    num_envs, _ = env_steps_per_update(cfg)
    k_w, k_w1, k_env, k_next = jax.random.split(key, 4)
    hidden = cfg["network"]["hidden"]
    width = hidden or 3
    params = {"w": 0.1 * jax.random.normal(k_w, (width, 1)), "b": jnp.zeros(1), "log_std": jnp.zeros(1)}
    if hidden:
        params["w1"] = 0.5 * jax.random.normal(k_w1, (3, hidden))
    obs, env_state = jax.vmap(env.reset, (0, None))(jax.random.split(k_env, num_envs), env_params)
    replay = rb.init(REPLAY_UPDATES * num_envs, obs.shape[-1], 1)
    return State(params, env_state, obs, k_next, jnp.zeros(num_envs), jnp.zeros((), jnp.int32), replay)


def make_update_chunk(env: Any, env_params: Any, cfg: dict, num_updates: int):
    num_envs, num_steps = env_steps_per_update(cfg)
    lr = cfg[cfg["algo"]]["lr"]

    def update(state: State, _: Any) -> tuple[State, dict]:
        key, k_roll, k_replay = jax.random.split(state.key, 3)

        def step(carry, k):
            env_state, obs, ret = carry
            k_a, k_s = jax.random.split(k)
            noise = jax.random.normal(k_a, (num_envs, 1))
            act = _mean(state.params, obs) + jnp.exp(state.params["log_std"]) * noise
            obs2, env_state, r, term, trunc, _ = jax.vmap(env.step, (0, 0, 0, None))(
                jax.random.split(k_s, num_envs), env_state, act, env_params
            )
            done = jnp.logical_or(term, trunc)
            ret = ret + r
            ep_ret = jnp.where(done, ret, 0.0)
            ret = jnp.where(done, 0.0, ret)
            return (env_state, obs2, ret), (obs, act, r, done, ep_ret, obs2, term)

        (env_state, obs, ret), (b_obs, b_act, b_r, b_done, b_ep, b_next, b_term) = jax.lax.scan(
            step, (state.env_state, state.obs, state.ret), jax.random.split(k_roll, num_steps)
        )
        replay = rb.add(state.replay, rb.Transition(b_obs[-1], b_act[-1], b_r[-1], b_next[-1], b_term[-1]))
        replayed = rb.sample(replay, k_replay, num_envs)
        adv = (b_r - b_r.mean()) / (b_r.std() + 1e-6)

        def loss_fn(params):
            std = jnp.exp(params["log_std"])
            logp = -0.5 * jnp.sum(((b_act - _mean(params, b_obs)) / std) ** 2, -1) - params["log_std"].sum()
            return -jnp.mean(adv * logp)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, state.params, grads)
        params["b"] = params["b"] + 1e-3 * lr * jnp.mean(replayed.reward)
        new = State(params, env_state, obs, key, ret, state.updates + 1, replay)
        zero = jnp.zeros((), jnp.float32)
        metrics = {
            "reward_avg": b_r.mean(), "actor_loss": loss, "critic_loss": zero,
            "entropy": jnp.sum(params["log_std"] + 0.5 * jnp.log(2 * jnp.pi * jnp.e)),
            "lr": jnp.float32(lr), "episodes": b_done.sum().astype(jnp.float32),
            "ep_return": b_ep.sum(), "ep_co2_kg": -b_ep.sum(), "ep_grid_kwh": b_done.sum() * 2.0,
            "ep_unmet_kwh": zero,
        }
        return new, metrics

    def chunk(state: State) -> tuple[State, dict]:
        state, m = jax.lax.scan(update, state, None, length=num_updates)
        sums = ("episodes", "ep_return", "ep_co2_kg", "ep_grid_kwh", "ep_unmet_kwh")
        return state, {k: (v.sum() if k in sums else v.mean()).astype(jnp.float32) for k, v in m.items()}

    return chunk


def make_policy(env: Any, env_params: Any, cfg: dict):
    def act(params: dict, obs: jax.Array) -> jax.Array:
        return jnp.clip(_mean(params, obs), -2.0, 2.0)

    return act


def policy_params(state: State) -> dict:
    return state.params


def components(evaluate: Any = None) -> Components:
    """Runner components with this module as algorithms ``dummy`` and ``dummy2``."""
    import sys

    this: ModuleType = sys.modules[__name__]
    return Components(
        get_algo=lambda name: this,
        algo_names=("dummy", "dummy2"),
        pipeline=("dummy2", "dummy"),
        make_env=make_env,
        env_spec=ENV_SPEC,
        network_spec=NETWORK_SPEC,
        evaluate=evaluate,
    )
