"""What the on-policy algorithms (PPO and A2C) share: everything but their learning step.

- the config keys both have (:func:`config_spec`) and the learning-rate schedule;
- the actor-critic networks (:class:`ActorCritic`) and the train state (:class:`OnPolicyState`);
- :func:`collect`: ``num_steps`` steps of ``num_envs`` environments with the stochastic policy,
  as a time-major :class:`Trajectory` ``[num_steps, num_envs, ...]``;
- :func:`gae` and :func:`make_batch`: advantages and value targets that bootstrap truncated
  episodes from their true final observation;
- :class:`OnPolicy`: the algorithm interface (:class:`oe3jax.learning.Algorithm`) of both, with
  the update chunk into which each algorithm plugs its own ``learn`` step (PPO: epochs of
  minibatches; A2C: one step on the whole trajectory).

The train state holds PRNG key *data*; :func:`oe3jax.learning.stepping.as_key` wraps it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from oe3jax.learning import networks, normalize, shaping, stepping
from oe3jax.learning.normalize import Normalizer, ObsNormState
from oe3jax.learning.precision import LossScaler, LossScaleState, compute_dtype, make_loss_scaler
from oe3jax.schema import ConfigError, Field

_F32 = jnp.float32

# Metrics summed over a chunk (the rest are averaged over its updates).
SUM_METRICS = ("episodes", "ep_return", "ep_co2_kg", "ep_grid_kwh", "ep_unmet_kwh", "nonfinite_skips")


# ----------------------------------------------------------------------------------------------
# Configuration and learning-rate schedule
# ----------------------------------------------------------------------------------------------
def config_spec(**defaults: Any) -> dict[str, Field]:
    """The config keys every on-policy algorithm has; ``defaults`` overrides their defaults."""
    spec = {
        "num_envs": Field(16, int, low=1, help="environments stepped in parallel"),
        "num_steps": Field(64, int, low=1, help="steps per environment per update (rollout length)"),
        "lr": Field(3e-4, float, low=0.0, low_open=True, help="learning rate (start of the schedule)"),
        "lr_schedule": Field("constant", str, choices=("constant", "linear"),
                             help="linear: decays to 0 at total_steps"),
        "gamma": Field(0.99, float, low=0.0, high=1.0, help="discount factor"),
        "gae_lambda": Field(0.95, float, low=0.0, high=1.0, help="GAE lambda (1 = n-step returns)"),
        "ent_coef": Field(0.0, float, low=0.0, help="entropy bonus weight"),
        "vf_coef": Field(0.5, float, low=0.0, help="value loss weight"),
        "max_grad_norm": Field(0.5, float, low=0.0, low_open=True, help="global gradient-norm clip"),
        "norm_adv": Field(True, bool, help="normalise advantages (per minibatch)"),
        **normalize.config_spec(enabled=True),
        "reward_scale": Field(1.0, float, low=0.0, low_open=True,
                              help="rewards are multiplied by this for learning (not in reward_avg)"),
        "shaping": shaping.config_field(),
    }
    for key, value in defaults.items():
        spec[key] = dataclasses.replace(spec[key], default=value)
    return spec


# Keys of both sections that the update chunk also accepts as traced values (sweeps: see
# :mod:`oe3jax.learning.sweep`).
SWEEPABLE = ("lr", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm", "reward_scale")


def total_updates(cfg: Mapping[str, Any], algo_cfg: Mapping[str, Any], name: str) -> int:
    """Updates in the whole run (needed by a decaying schedule): ``ceil(total_steps / steps per update)``."""
    total_steps = cfg.get("total_steps")
    if total_steps is None:
        raise ConfigError(f"{name}.lr_schedule: 'linear' needs total_steps; set total_steps or use 'constant'")
    return max(1, math.ceil(int(total_steps) / (algo_cfg["num_envs"] * algo_cfg["num_steps"])))


def learning_rate(algo_cfg: Mapping[str, Any], num_updates_total: int, update_index: jax.Array) -> jax.Array:
    """The learning rate of update ``update_index`` (0-based): constant or linear decay to 0."""
    lr0 = jnp.asarray(algo_cfg["lr"], _F32)
    if algo_cfg["lr_schedule"] == "constant":
        return lr0
    frac = 1.0 - update_index.astype(_F32) / float(num_updates_total)
    return lr0 * jnp.clip(frac, 0.0, 1.0)


def make_optimizer(
    kind: str, lr: float, max_grad_norm: float, eps: float = 1e-5, rmsprop_decay: float = 0.99
) -> optax.GradientTransformation:
    """Global-norm clipping then Adam or RMSprop; the learning rate is an injected state leaf."""

    def factory(learning_rate: float) -> optax.GradientTransformation:
        if kind == "adam":
            inner = optax.adam(learning_rate, eps=eps)
        elif kind == "rmsprop":
            inner = optax.rmsprop(learning_rate, decay=rmsprop_decay, eps=eps)
        else:
            raise ValueError(f"optimizer: expected 'adam' or 'rmsprop', got {kind!r}")
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), inner)

    return optax.inject_hyperparams(factory)(learning_rate=lr)


def with_learning_rate(opt_state: Any, lr: jax.Array) -> Any:
    """The optimizer state with its injected ``learning_rate`` replaced."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": jnp.asarray(lr, _F32)})


# ----------------------------------------------------------------------------------------------
# Networks and train state
# ----------------------------------------------------------------------------------------------
class ActorCritic:
    """The Gaussian actor and the state-value critic of a configuration, and the policy's squash mode."""

    def __init__(self, env: Any, env_params: Any, cfg: Mapping[str, Any], name: str | None = None):
        dtype = compute_dtype(cfg["precision"])
        name = name if name is not None else cfg.get("algo")
        if name is not None:
            networks.check_battery_head(cfg["network"], cfg[name], name)
        self.actor: nn.Module = networks.make_actor(cfg["network"], env, env_params, dtype)
        self.critic: nn.Module = networks.make_critic(cfg["network"], env, env_params, dtype)
        self.squash: str = cfg["network"]["squash"]
        self.obs_dim, self.action_dim = networks.space_dims(env, env_params)

    def log_prob_entropy_value(
        self, params: dict[str, Any], obs: jax.Array, u: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(log_prob(squash(u)), entropy, V(obs))`` for normalised observations, float32."""
        mean, log_std = self.actor.apply(params["actor"], obs)
        logp = networks.policy_log_prob(mean, log_std, u, self.squash)
        entropy = networks.gaussian_entropy(log_std)
        value = self.critic.apply(params["critic"], obs)
        return logp, entropy, value


@struct.dataclass
class OnPolicyState:
    """The whole train state of one seed (arrays only)."""

    params: dict[str, Any]        # {"actor": ..., "critic": ...}, float32
    opt_state: Any                # optax state, float32 (learning rate is a leaf)
    env_state: Any                # [num_envs, ...]
    obs: jax.Array                # [num_envs, obs_dim], raw observations
    ep_return: jax.Array          # [num_envs], running return of the current episodes
    rng: jax.Array                # PRNG key data
    obs_norm: ObsNormState
    loss_scale: LossScaleState
    update_count: jax.Array       # int32, updates done


@struct.dataclass
class Trajectory:
    """What :func:`collect` records, time-major ``[num_steps, num_envs, ...]``."""

    obs: jax.Array          # raw observation the action was chosen on
    u: jax.Array            # pre-squash action sample
    log_prob: jax.Array     # its log-probability under the behaviour policy
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array    # the observation after the step, before any auto-reset


@struct.dataclass
class Batch:
    """A trajectory ready for learning: time-major ``[T, N, ...]``, flattened to ``[T * N, ...]`` for ``learn``."""

    obs: jax.Array          # normalised observation
    u: jax.Array            # pre-squash action sample
    log_prob: jax.Array     # log-probability under the behaviour policy
    value: jax.Array        # V(obs) under the behaviour critic
    advantage: jax.Array
    target: jax.Array       # value target (advantage + value)


# ----------------------------------------------------------------------------------------------
# Collecting a trajectory, advantages
# ----------------------------------------------------------------------------------------------
def collect(
    env: Any, env_params: Any, nets: ActorCritic, norm: Normalizer, num_steps: int,
    state: OnPolicyState, key: jax.Array,
) -> tuple[OnPolicyState, Trajectory, dict[str, jax.Array]]:
    """Step all environments ``num_steps`` times with the stochastic policy.

    Returns the state with new env states / observations / running returns, the trajectory and
    the episode sums of the episodes that ended in it (:func:`stepping.episode_sums`).
    """
    actor_params = state.params["actor"]

    def step(carry: tuple[Any, jax.Array, jax.Array], step_key: jax.Array):
        env_state, obs, ep_return = carry
        k_act, k_env = jax.random.split(step_key)
        mean, log_std = nets.actor.apply(actor_params, norm(state.obs_norm, obs))
        action, u, logp = networks.sample_policy(k_act, mean, log_std, nets.squash)
        s = stepping.step_envs(env, env_params, k_env, env_state, action, ep_return)
        recorded = Trajectory(obs, u, logp, s.reward, s.terminated, s.done, s.final_obs)
        return (s.env_state, s.obs, s.ep_return), (recorded, s.episode)

    carry = (state.env_state, state.obs, state.ep_return)
    (env_state, obs, ep_return), (traj, episodes) = jax.lax.scan(step, carry, jax.random.split(key, num_steps))
    sums = {name: jnp.sum(per_step) for name, per_step in episodes.items()}
    return state.replace(env_state=env_state, obs=obs, ep_return=ep_return), traj, sums


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """GAE(lambda) advantages and value targets, time-major ``[T, ...]``, float32.

    ``next_values[t]`` is the value of the observation that followed step t *before* any
    auto-reset, so a truncated episode bootstraps from its true last state. ``terminated`` zeroes
    that bootstrap; ``done`` (terminated or truncated) cuts the recursion so that no advantage
    leaks across an episode boundary.
    """
    rewards, values, next_values = (jnp.asarray(a, _F32) for a in (rewards, values, next_values))
    not_term = 1.0 - jnp.asarray(terminated, _F32)
    not_done = 1.0 - jnp.asarray(done, _F32)
    deltas = rewards + gamma * not_term * next_values - values

    def backward(carry: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta, cont = xs
        adv = delta + gamma * gae_lambda * cont * carry
        return adv, adv

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True)
    return advantages, advantages + values


def make_batch(
    nets: ActorCritic, norm: Normalizer, algo_cfg: Mapping[str, Any], state: OnPolicyState, traj: Trajectory,
    phi: shaping.Potential | None = None,
) -> Batch:
    """Normalise the trajectory's observations, evaluate the critic, and compute GAE targets (on the
    rewards shaped by the potential ``phi``, if any, then scaled by ``reward_scale``)."""
    obs = norm(state.obs_norm, traj.obs)
    final_obs = norm(state.obs_norm, traj.final_obs)
    critic = state.params["critic"]
    values = nets.critic.apply(critic, obs)
    next_values = nets.critic.apply(critic, final_obs)
    reward = shaping.shaped_reward(phi, traj.reward, traj.obs, traj.final_obs, traj.terminated, algo_cfg["gamma"])
    adv, target = gae(reward * algo_cfg["reward_scale"], values, next_values, traj.terminated, traj.done,
                      algo_cfg["gamma"], algo_cfg["gae_lambda"])
    return Batch(obs, traj.u, traj.log_prob, values, adv, target)


# ----------------------------------------------------------------------------------------------
# The shared part of the algorithm interface
# ----------------------------------------------------------------------------------------------
LearnFn = Callable[[jax.Array, OnPolicyState, Batch], tuple[OnPolicyState, dict[str, jax.Array]]]
Chunk = Callable[[OnPolicyState], tuple[OnPolicyState, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class LearnSetup:
    """What an algorithm's learning step is built from."""

    algo_cfg: Mapping[str, Any]           # the algorithm's config section
    nets: ActorCritic
    tx: optax.GradientTransformation
    scaler: LossScaler


def policy_params(state: OnPolicyState) -> dict[str, Any]:
    """What acting needs: the actor parameters and the observation statistics."""
    return {"actor": state.params["actor"], "obs_norm": state.obs_norm}


@dataclasses.dataclass(frozen=True)
class OnPolicy:
    """The :class:`oe3jax.learning.Algorithm` functions of an on-policy algorithm.

    An algorithm supplies its name and three functions: ``section(cfg)``, its config section with
    the relations between keys checked; ``optimizer(section)``, its optimizer (with an injected
    learning rate); ``make_learn(setup) -> learn``, its learning step
    ``learn(key, state, batch) -> (state, metrics)`` on one collected batch, flattened to
    ``[num_steps * num_envs, ...]`` (time-major order).
    """

    name: str
    section: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    optimizer: Callable[[Mapping[str, Any]], optax.GradientTransformation]
    make_learn: Callable[[LearnSetup], LearnFn]

    def env_steps_per_update(self, cfg: Mapping[str, Any]) -> tuple[int, int]:
        """``(num_envs, num_steps)``."""
        c = self.section(cfg)
        return c["num_envs"], c["num_steps"]

    def init(self, key: jax.Array, env: Any, env_params: Any, cfg: Mapping[str, Any]) -> OnPolicyState:
        """A fresh train state: initial parameters, optimizer state and ``num_envs`` reset environments."""
        c = self.section(cfg)
        nets = ActorCritic(env, env_params, cfg, self.name)
        k_actor, k_critic, k_env, k_next = jax.random.split(stepping.as_key(key), 4)
        dummy = jnp.zeros((nets.obs_dim,), _F32)
        params = {"actor": nets.actor.init(k_actor, dummy), "critic": nets.critic.init(k_critic, dummy)}
        obs, env_state = stepping.reset_envs(env, env_params, k_env, c["num_envs"])
        return OnPolicyState(
            params=params,
            opt_state=self.optimizer(c).init(params),
            env_state=env_state,
            obs=obs,
            ep_return=jnp.zeros((c["num_envs"],), _F32),
            rng=jax.random.key_data(k_next),
            obs_norm=normalize.obs_norm_init(nets.obs_dim),
            loss_scale=make_loss_scaler(cfg["precision"]).init(),
            update_count=jnp.asarray(0, jnp.int32),
        )

    def make_update_chunk(self, env: Any, env_params: Any, cfg: Mapping[str, Any], num_updates: int) -> Chunk:
        """``chunk(state) -> (state, metrics)`` scanning ``num_updates`` of: set the learning rate,
        collect a trajectory, build the batch, ``learn`` (the algorithm's gradient steps), update the
        observation statistics. Metrics: sums for :data:`SUM_METRICS`, means over updates for the rest."""
        c = self.section(cfg)
        nets = ActorCritic(env, env_params, cfg, self.name)
        learn = self.make_learn(LearnSetup(c, nets, self.optimizer(c), make_loss_scaler(cfg["precision"])))
        norm = normalize.normalizer(c)
        n_total = total_updates(cfg, c, self.name) if c["lr_schedule"] == "linear" else 1
        phi = shaping.potential(c["shaping"], env, env_params, f"{self.name}.shaping")

        def one_update(state: OnPolicyState, _: None) -> tuple[OnPolicyState, dict[str, jax.Array]]:
            lr = learning_rate(c, n_total, state.update_count)
            state = state.replace(opt_state=with_learning_rate(state.opt_state, lr))
            key, k_collect, k_learn = jax.random.split(stepping.as_key(state.rng), 3)
            state, traj, episode_sums = collect(env, env_params, nets, norm, c["num_steps"], state, k_collect)
            batch = make_batch(nets, norm, c, state, traj, phi)
            flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)  # [num_steps * num_envs, ...]
            state, learn_metrics = learn(k_learn, state, flat)
            state = state.replace(
                obs_norm=normalize.updated(c, state.obs_norm, traj.obs),
                rng=jax.random.key_data(key),
                update_count=state.update_count + 1,
            )
            metrics = {"reward_avg": jnp.mean(traj.reward), "lr": lr, **episode_sums, **learn_metrics,
                       "loss_scale": state.loss_scale.scale}
            return state, metrics

        def chunk(state: OnPolicyState) -> tuple[OnPolicyState, dict[str, jax.Array]]:
            state, per_update = jax.lax.scan(one_update, state, None, length=num_updates)
            metrics = {k: (jnp.sum(v) if k in SUM_METRICS else jnp.mean(v)).astype(_F32)
                       for k, v in per_update.items()}
            return state, metrics

        return chunk

    def make_policy(self, env: Any, env_params: Any, cfg: Mapping[str, Any]) -> Callable[[Any, jax.Array], jax.Array]:
        """``act(policy_params, obs) -> action``: the squashed mean of the actor, float32."""
        nets = ActorCritic(env, env_params, cfg, self.name)
        norm = normalize.normalizer(self.section(cfg))

        def act(params: dict[str, Any], obs: jax.Array) -> jax.Array:
            mean, _ = nets.actor.apply(params["actor"], norm(params["obs_norm"], obs))
            return networks.deterministic_action(mean, nets.squash)

        return act
