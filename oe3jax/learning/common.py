"""Pieces shared by the on-policy algorithms (PPO and A2C).

- a running observation normaliser kept in the train state;
- GAE(lambda) that bootstraps truncated episodes from their true final observation;
- the vmapped rollout (``lax.scan`` over time) with episode-metric accumulation;
- the on-policy train state, its initialisation, and the update-chunk skeleton into which each
  algorithm plugs its own learning step;
- a precision-aware gradient step (float16 loss scaling, skipped non-finite steps);
- the deterministic policy used for evaluation and checkpoints.

Conventions: arrays of a rollout are time-major, ``[num_steps, num_envs, ...]``. The train state
holds PRNG key *data* (``jax.random.key_data``); functions wrap it with ``wrap_key_data``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from oe3jax.learning import networks
from oe3jax.schema import ConfigError, Field
from oe3jax.learning.precision import LossScaler, LossScaleState, all_finite, compute_dtype, make_loss_scaler

_F32 = jnp.float32

# Episode totals reported by the EV environment in ``info["totals"]`` and their metric names.
EPISODE_INFO_KEYS = {"co2_kg": "ep_co2_kg", "grid_kwh": "ep_grid_kwh", "unmet_kwh": "ep_unmet_kwh"}
# Metrics summed over a chunk (the rest are averaged over its updates).
SUM_METRICS = ("episodes", "ep_return", "ep_co2_kg", "ep_grid_kwh", "ep_unmet_kwh", "nonfinite_skips")


# ----------------------------------------------------------------------------------------------
# Configuration shared by PPO and A2C
# ----------------------------------------------------------------------------------------------
def on_policy_spec(**defaults: Any) -> dict[str, Field]:
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
        "normalize_obs": Field(True, bool, help="running mean/std observation normalisation"),
        "obs_std_floor": Field(0.1, float, low=0.0, low_open=True,
                               help="least std an observation is divided by (keeps rare features small)"),
        "obs_clip": Field(10.0, float, low=0.0, low_open=True, help="normalised observations clipped to +-this"),
        "reward_scale": Field(1.0, float, low=0.0, low_open=True,
                              help="rewards are multiplied by this for learning (not in reward_avg)"),
    }
    for key, value in defaults.items():
        spec[key] = dataclasses.replace(spec[key], default=value)
    return spec


def total_updates(cfg: dict[str, Any], algo_cfg: dict[str, Any], name: str) -> int:
    """Updates in the whole run (needed by a decaying schedule): ``ceil(total_steps / steps per update)``."""
    total_steps = cfg.get("total_steps")
    if total_steps is None:
        raise ConfigError(f"{name}.lr_schedule: 'linear' needs total_steps; set total_steps or use 'constant'")
    return max(1, math.ceil(int(total_steps) / (algo_cfg["num_envs"] * algo_cfg["num_steps"])))


def learning_rate(algo_cfg: dict[str, Any], num_updates_total: int, update_index: jax.Array) -> jax.Array:
    """The learning rate of update ``update_index`` (0-based): constant or linear decay to 0."""
    lr0 = jnp.asarray(algo_cfg["lr"], _F32)
    if algo_cfg["lr_schedule"] == "constant":
        return lr0
    frac = 1.0 - update_index.astype(_F32) / float(num_updates_total)
    return lr0 * jnp.clip(frac, 0.0, 1.0)


def as_key(key: jax.Array) -> jax.Array:
    """A typed PRNG key from a typed key or raw uint32 key data."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


# ----------------------------------------------------------------------------------------------
# Running observation normaliser
# ----------------------------------------------------------------------------------------------
@struct.dataclass
class ObsNormState:
    """Running mean and (population) variance of the observations, and the sample count."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def obs_norm_init(obs_dim: int) -> ObsNormState:
    """Identity statistics (mean 0, variance 1) with a tiny prior count."""
    return ObsNormState(jnp.zeros((obs_dim,), _F32), jnp.ones((obs_dim,), _F32), jnp.asarray(1e-4, _F32))


def obs_norm_update(stats: ObsNormState, batch: jax.Array) -> ObsNormState:
    """Merge a batch ``[..., obs_dim]`` into the statistics (parallel / Chan et al. update)."""
    x = batch.reshape(-1, batch.shape[-1]).astype(_F32)
    n = jnp.asarray(x.shape[0], _F32)
    b_mean = jnp.mean(x, axis=0)
    b_var = jnp.var(x, axis=0)
    total = stats.count + n
    delta = b_mean - stats.mean
    mean = stats.mean + delta * (n / total)
    m2 = stats.var * stats.count + b_var * n + delta**2 * (stats.count * n / total)
    return ObsNormState(mean, m2 / total, total)


def obs_normalize(stats: ObsNormState, obs: jax.Array, std_floor: float, clip: float) -> jax.Array:
    """``clip((obs - mean) / max(std, std_floor), -clip, clip)`` in float32.

    The floor keeps a feature that is almost always constant (a rarely used socket, say) from
    being blown up by a tiny std; features the environment already scales to order 1, such as
    the battery SOC, stay well inside the clip range.
    """
    std = jnp.maximum(jnp.sqrt(stats.var), std_floor)
    return jnp.clip((obs.astype(_F32) - stats.mean) / std, -clip, clip)


# ----------------------------------------------------------------------------------------------
# Generalised advantage estimation
# ----------------------------------------------------------------------------------------------
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
    auto-reset (gymnax's ``info["final_observation"]``), so a truncated episode bootstraps from
    its true last state. ``terminated`` zeroes that bootstrap; ``done`` (terminated or truncated)
    cuts the recursion so that no advantage leaks across an episode boundary.
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


# ----------------------------------------------------------------------------------------------
# Train state
# ----------------------------------------------------------------------------------------------
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
class Batch:
    """A rollout ready for learning, time-major ``[T, N, ...]`` (flattened by the learners)."""

    obs: jax.Array          # normalised observation
    u: jax.Array            # pre-squash action sample
    log_prob: jax.Array     # log-probability under the behaviour policy
    value: jax.Array        # V(obs) under the behaviour critic
    advantage: jax.Array
    target: jax.Array       # value target (advantage + value)


class Networks:
    """The actor and critic modules of a configuration, and the policy's squash mode."""

    def __init__(self, env: Any, env_params: Any, cfg: dict[str, Any]):
        dtype = compute_dtype(cfg["precision"])
        self.actor: nn.Module = networks.make_actor(cfg["network"], env, env_params, dtype)
        self.critic: nn.Module = networks.make_critic(cfg["network"], env, env_params, dtype)
        self.squash: str = cfg["network"]["squash"]
        self.obs_dim, self.action_dim = networks.space_dims(env, env_params)

    def evaluate(self, params: dict[str, Any], obs: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(log_prob(u), entropy, value)`` of normalised observations under ``params`` (float32)."""
        mean, log_std = self.actor.apply(params["actor"], obs)
        logp = networks.policy_log_prob(mean, log_std, u, self.squash)
        entropy = networks.gaussian_entropy(log_std)
        value = self.critic.apply(params["critic"], obs)
        return logp, entropy, value


def normalizer(algo_cfg: dict[str, Any]) -> Callable[[ObsNormState, jax.Array], jax.Array]:
    """``norm(stats, obs)``: the configured normalisation, or a float32 cast when it is off."""
    if not algo_cfg["normalize_obs"]:
        return lambda stats, obs: obs.astype(_F32)
    floor, clip = algo_cfg["obs_std_floor"], algo_cfg["obs_clip"]
    return lambda stats, obs: obs_normalize(stats, obs, floor, clip)


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


def init_on_policy(
    key: jax.Array, env: Any, env_params: Any, cfg: dict[str, Any], algo_cfg: dict[str, Any],
    tx: optax.GradientTransformation,
) -> OnPolicyState:
    """A fresh train state: initial parameters, optimizer state and ``num_envs`` reset environments."""
    nets = Networks(env, env_params, cfg)
    k_actor, k_critic, k_env, k_next = jax.random.split(as_key(key), 4)
    dummy = jnp.zeros((nets.obs_dim,), _F32)
    params = {"actor": nets.actor.init(k_actor, dummy), "critic": nets.critic.init(k_critic, dummy)}
    num_envs = algo_cfg["num_envs"]
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, num_envs), env_params)
    return OnPolicyState(
        params=params,
        opt_state=tx.init(params),
        env_state=env_state,
        obs=obs.astype(_F32),
        ep_return=jnp.zeros((num_envs,), _F32),
        rng=jax.random.key_data(k_next),
        obs_norm=obs_norm_init(nets.obs_dim),
        loss_scale=make_loss_scaler(cfg["precision"]).init(),
        update_count=jnp.asarray(0, jnp.int32),
    )


# ----------------------------------------------------------------------------------------------
# Rollout
# ----------------------------------------------------------------------------------------------
@struct.dataclass
class Transition:
    obs: jax.Array
    u: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array


def rollout(
    env: Any, env_params: Any, nets: Networks, norm: Callable, num_steps: int,
    state: OnPolicyState, key: jax.Array,
) -> tuple[OnPolicyState, Transition, dict[str, jax.Array]]:
    """Step all environments ``num_steps`` times with the stochastic policy.

    Returns the state with new env states / observations / running returns, the transitions
    ``[T, N, ...]`` and the episode sums of the episodes that ended (``episodes``, ``ep_return``,
    and ``ep_co2_kg`` / ``ep_grid_kwh`` / ``ep_unmet_kwh`` when the environment reports them).
    """
    env_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    actor_params = state.params["actor"]

    def step(carry, step_key):
        env_state, obs, ep_return, sums = carry
        k_act, k_env = jax.random.split(step_key)
        mean, log_std = nets.actor.apply(actor_params, norm(state.obs_norm, obs))
        action, u, logp = networks.sample_policy(k_act, mean, log_std, nets.squash)
        keys = jax.random.split(k_env, obs.shape[0])
        next_obs, env_state, reward, terminated, truncated, info = env_step(keys, env_state, action, env_params)
        reward = reward.astype(_F32)
        done = jnp.logical_or(terminated, truncated)
        ep_return = ep_return + reward
        ended = done.astype(_F32)
        episode = info.get("totals", {})
        returns = episode["return"].astype(_F32) if "return" in episode else ep_return
        new_sums = {"episodes": sums["episodes"] + jnp.sum(ended),
                    "ep_return": sums["ep_return"] + jnp.sum(ended * returns)}
        for src, dst in EPISODE_INFO_KEYS.items():
            add = jnp.sum(ended * episode[src].astype(_F32)) if src in episode else 0.0
            new_sums[dst] = sums[dst] + add
        ep_return = jnp.where(done, 0.0, ep_return)
        final_obs = info["final_observation"].astype(_F32)
        tr = Transition(obs, u, logp, reward, terminated, done, final_obs)
        return (env_state, next_obs.astype(_F32), ep_return, new_sums), tr

    zero = jnp.asarray(0.0, _F32)
    sums0 = {k: zero for k in ("episodes", "ep_return", *EPISODE_INFO_KEYS.values())}
    carry0 = (state.env_state, state.obs, state.ep_return, sums0)
    (env_state, obs, ep_return, sums), traj = jax.lax.scan(step, carry0, jax.random.split(key, num_steps))
    return state.replace(env_state=env_state, obs=obs, ep_return=ep_return), traj, sums


def make_batch(
    nets: Networks, norm: Callable, algo_cfg: dict[str, Any], state: OnPolicyState, traj: Transition
) -> Batch:
    """Normalise the rollout's observations, evaluate the critic, and compute GAE targets."""
    obs = norm(state.obs_norm, traj.obs)
    final_obs = norm(state.obs_norm, traj.final_obs)
    critic = state.params["critic"]
    values = nets.critic.apply(critic, obs)
    next_values = nets.critic.apply(critic, final_obs)
    adv, target = gae(traj.reward * algo_cfg["reward_scale"], values, next_values, traj.terminated, traj.done,
                      algo_cfg["gamma"], algo_cfg["gae_lambda"])
    return Batch(obs, traj.u, traj.log_prob, values, adv, target)


# ----------------------------------------------------------------------------------------------
# Gradient step with the precision policy
# ----------------------------------------------------------------------------------------------
def gradient_step(
    loss_fn: Callable[[Any], tuple[jax.Array, dict[str, jax.Array]]],
    tx: optax.GradientTransformation,
    scaler: LossScaler,
    params: Any,
    opt_state: Any,
    loss_scale: LossScaleState,
) -> tuple[Any, Any, LossScaleState, jax.Array, dict[str, jax.Array]]:
    """One optimizer step on ``loss_fn(params) -> (loss, aux)``.

    The loss is scaled (float16), the gradients unscaled and checked; a step with non-finite
    gradients is skipped under float16 (parameters and optimizer state kept). Returns
    ``(params, opt_state, loss_scale, skipped, aux)``; ``skipped`` is a float32 0/1.
    """

    def scaled(p):
        loss, aux = loss_fn(p)
        return scaler.scale_loss(loss_scale, loss), aux

    grads, aux = jax.grad(scaled, has_aux=True)(params)
    grads = scaler.unscale(loss_scale, grads)
    finite = all_finite(grads)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    params, opt_state = scaler.guard(finite, (new_params, new_opt), (params, opt_state))
    skipped = jnp.logical_and(scaler.skip_nonfinite, ~finite).astype(_F32)
    return params, opt_state, scaler.adjust(loss_scale, finite), skipped, aux


# ----------------------------------------------------------------------------------------------
# The update chunk
# ----------------------------------------------------------------------------------------------
LearnFn = Callable[[jax.Array, OnPolicyState, Batch], tuple[OnPolicyState, dict[str, jax.Array]]]


def make_chunk(
    env: Any, env_params: Any, cfg: dict[str, Any], algo_cfg: dict[str, Any], name: str,
    num_updates: int, learn: LearnFn, nets: Networks,
) -> Callable[[OnPolicyState], tuple[OnPolicyState, dict[str, jax.Array]]]:
    """``chunk(state) -> (state, metrics)`` scanning ``num_updates`` of: set the learning rate,
    roll out, build the batch, ``learn`` (the algorithm's gradient steps), update the observation
    statistics. Metrics: sums for :data:`SUM_METRICS`, means over updates for the rest."""
    norm = normalizer(algo_cfg)
    n_total = total_updates(cfg, algo_cfg, name) if algo_cfg["lr_schedule"] == "linear" else 1

    def one_update(state: OnPolicyState, _: None) -> tuple[OnPolicyState, dict[str, jax.Array]]:
        lr = learning_rate(algo_cfg, n_total, state.update_count)
        state = state.replace(opt_state=with_learning_rate(state.opt_state, lr))
        key, k_roll, k_learn = jax.random.split(jax.random.wrap_key_data(state.rng), 3)
        state, traj, episode_sums = rollout(env, env_params, nets, norm, algo_cfg["num_steps"], state, k_roll)
        batch = make_batch(nets, norm, algo_cfg, state, traj)
        state, learn_metrics = learn(k_learn, state, batch)
        obs_norm = obs_norm_update(state.obs_norm, traj.obs) if algo_cfg["normalize_obs"] else state.obs_norm
        state = state.replace(obs_norm=obs_norm, rng=jax.random.key_data(key), update_count=state.update_count + 1)
        metrics = {"reward_avg": jnp.mean(traj.reward), "lr": lr, **episode_sums, **learn_metrics,
                   "loss_scale": state.loss_scale.scale}
        return state, metrics

    def chunk(state: OnPolicyState) -> tuple[OnPolicyState, dict[str, jax.Array]]:
        state, per_update = jax.lax.scan(one_update, state, None, length=num_updates)
        metrics = {k: (jnp.sum(v) if k in SUM_METRICS else jnp.mean(v)).astype(_F32) for k, v in per_update.items()}
        return state, metrics

    return chunk


# ----------------------------------------------------------------------------------------------
# Acting
# ----------------------------------------------------------------------------------------------
def make_policy(env: Any, env_params: Any, cfg: dict[str, Any], algo_cfg: dict[str, Any]) -> Callable:
    """``act(policy_params, obs) -> action``: the squashed mean of the actor, float32."""
    nets = Networks(env, env_params, cfg)
    norm = normalizer(algo_cfg)

    def act(policy_params: dict[str, Any], obs: jax.Array) -> jax.Array:
        mean, _ = nets.actor.apply(policy_params["actor"], norm(policy_params["obs_norm"], obs))
        return networks.deterministic_action(mean, nets.squash)

    return act


def policy_params(state: OnPolicyState) -> dict[str, Any]:
    """What acting needs: the actor parameters and the observation statistics."""
    return {"actor": state.params["actor"], "obs_norm": state.obs_norm}
