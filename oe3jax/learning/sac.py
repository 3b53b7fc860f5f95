"""Soft Actor-Critic as one XLA program: env steps, replay buffer and gradient steps inside jit.

One *update* steps ``num_envs`` vectorized environments once with actions sampled from the
policy (uniform random actions before ``learning_starts`` env steps), writes the ``num_envs``
transitions to the replay buffer that lives in the train state, then runs ``gradient_steps``
gradient steps, each on a fresh uniform minibatch of ``batch_size`` transitions:

1. critics: twin Q networks, one vmapped ensemble with parameters stacked on axis 0, regressed on
   ``r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s'))`` with
   ``a' ~ pi(.|s')`` and Q' the target networks. A time limit (truncation) is not a termination:
   its transition keeps the bootstrap, and its ``s'`` is the true final observation;
2. actor: a tanh-squashed diagonal Gaussian, minimising ``alpha * log pi(a|s) - min_i Q_i(s, a)``
   with the reparameterised sample and the exact change-of-variables log-probability;
3. temperature: ``log_alpha`` descends ``-log_alpha * (log pi + target_entropy)`` (automatic
   entropy tuning, target ``-action_dim`` by default);
4. targets: Polyak averaging ``Q' <- tau * Q + (1 - tau) * Q'``.

A chunk ``lax.scan``s many updates; ``learning_starts`` is handled with ``lax.cond`` so the
chunk is one program whether it collects or learns (under the runner's vmap over seeds the cond
becomes a select: the gradient steps are computed and discarded while collecting, so only the
learner, never the buffer, passes through it). The replay buffer (:mod:`oe3jax.learning.buffer`) is part
of the train state and is checkpointed with it; :func:`buffer_nbytes` gives its size for the
start-up report.

Networks come from :mod:`oe3jax.learning.networks` (``cfg["network"]``: plain MLP or socket-shared,
with ``squash: tanh``); the twin critics are its ``QEnsemble`` (:class:`SACNetworks`).

Precision: parameters and optimizer states are float32; the networks compute in
``cfg["precision"]``; targets, log-probabilities and losses are float32. In float16 the losses are
scaled by a dynamic loss scale kept in the train state (:mod:`oe3jax.learning.precision`) and the
gradients unscaled. In every precision a gradient step (critics, actor and temperature together)
with a non-finite loss or gradient changes nothing and is counted (``nonfinite_skips``); the
gradient pieces are those of every learner (:mod:`oe3jax.learning.gradient`), as are the
environment stepping with its episode accounting (:mod:`oe3jax.learning.stepping`) and the
observation normaliser (:mod:`oe3jax.learning.normalize`).

Profiling: the parts of an update run under named scopes (``act``, ``env_step``, ``buffer_add``,
``sample``, ``target``, ``critic_loss``, ``actor_loss``, ``optimizer``), which name the XLA ops of a
``jax.profiler`` trace; they change nothing that is computed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from oe3jax.learning import EPISODE_TOTALS, METRIC_KEYS, gradient, networks, normalize, shaping, stepping
from oe3jax.learning import buffer as rb
from oe3jax.learning.normalize import ObsNormState
from oe3jax.learning.precision import LossScaleState, all_finite, compute_dtype, make_loss_scaler
from oe3jax.schema import ConfigError, Field

NAME = "sac"

CONFIG_SPEC: dict[str, Field] = {
    "num_envs": Field(8, int, low=1, help="environments stepped in parallel per update"),
    "buffer_size": Field(100_000, int, low=1, help="replay capacity in transitions"),
    "buffer_dtype": Field("float32", str, choices=("float32", "bfloat16", "float16"),
                          help="storage dtype of the observations in the replay buffer"),
    "batch_size": Field(256, int, low=1, help="transitions per gradient step"),
    "gradient_steps": Field(1, int, low=1, help="gradient steps per update (per vectorized env step)"),
    "learning_starts": Field(5_000, int, low=0,
                             help="env steps (all envs together) of uniform random actions before learning"),
    "lr": Field(3e-4, float, low=0.0, low_open=True, help="learning rate of actor, critics and temperature"),
    "actor_lr": Field(None, float, low=0.0, low_open=True, optional=True, help="actor learning rate (null: lr)"),
    "critic_lr": Field(None, float, low=0.0, low_open=True, optional=True, help="critic learning rate (null: lr)"),
    "alpha_lr": Field(None, float, low=0.0, low_open=True, optional=True,
                      help="temperature learning rate (null: lr)"),
    "gamma": Field(0.99, float, low=0.0, high=1.0, help="discount factor"),
    "tau": Field(0.005, float, low=0.0, high=1.0, low_open=True, help="Polyak coefficient of the target critics"),
    "init_alpha": Field(1.0, float, low=0.0, low_open=True, help="initial entropy temperature"),
    "autotune_alpha": Field(True, bool, help="tune the temperature towards target_entropy; false: keep init_alpha"),
    "target_entropy": Field(None, float, optional=True, help="target policy entropy (null: -action_dim)"),
    "max_grad_norm": Field(None, float, low=0.0, low_open=True, optional=True,
                           help="global gradient-norm clip of actor and critics (null: none)"),
    "reward_scale": Field(1.0, float, low=0.0, low_open=True,
                          help="rewards are multiplied by this for learning (not in reward_avg)"),
    **normalize.config_spec(enabled=False),
    "shaping": shaping.config_field(),
}

NUM_CRITICS = 2

# Keys the update chunk also accepts as traced values (sweeps: see :mod:`oe3jax.learning.sweep`).
SWEEPABLE = ("lr", "actor_lr", "critic_lr", "alpha_lr", "gamma", "tau", "init_alpha", "reward_scale")


def env_steps_per_update(cfg: dict[str, Any]) -> tuple[int, int]:
    """One update = one step of ``num_envs`` environments (+ ``gradient_steps`` gradient steps)."""
    return int(cfg[NAME]["num_envs"]), 1


# ----------------------------------------------------------------------------------- networks
class SACNetworks:
    """The actor and the twin-critic ensemble of a configuration, and the observation normalisation."""

    def __init__(self, env: Any, env_params: Any, cfg: Mapping[str, Any]):
        net_cfg = cfg["network"]
        if net_cfg["squash"] != "tanh":
            raise ConfigError(
                f"network.squash: SAC needs a tanh-squashed policy; expected 'tanh', got {net_cfg['squash']!r}"
            )
        dtype = compute_dtype(cfg["precision"])
        networks.check_battery_head(net_cfg, cfg[NAME], NAME)
        self.actor = networks.make_actor(net_cfg, env, env_params, dtype)
        self.critic = networks.make_q_critic(net_cfg, env, env_params, dtype, NUM_CRITICS)
        self.obs_dim, self.action_dim = networks.space_dims(env, env_params)
        self.norm: normalize.Normalizer = normalize.normalizer(cfg[NAME])  # observations as the networks see them


# -------------------------------------------------------------------------------- train state
@struct.dataclass
class Learner:
    """Everything a gradient step changes."""

    actor_params: Any
    critic_params: Any  # twin critics, leaves stacked on axis 0
    target_critic_params: Any
    log_alpha: jax.Array  # float32 scalar
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    loss_scale: LossScaleState  # dynamic under float16, constant 1 otherwise
    grad_steps: jax.Array  # int32
    skipped_steps: jax.Array  # int32: gradient steps skipped for non-finite values


@struct.dataclass
class TrainState:
    """The whole train state of one seed (arrays only)."""

    learner: Learner
    buffer: rb.BufferState
    env_state: Any
    obs: jax.Array  # (num_envs, obs_dim), raw last observations
    ep_return: jax.Array  # (num_envs,), running return of the current episodes
    obs_norm: ObsNormState
    key: jax.Array  # uint32 key data
    env_steps: jax.Array  # int32, all environments together


def _learning_rates(c: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(actor, critic, temperature) learning rates; a null one falls back to ``lr``. Numbers, or
    traced values in a sweep (:mod:`oe3jax.learning.sweep`)."""

    def pick(name: str) -> Any:
        return c[name] if c[name] is not None else c["lr"]

    return pick("actor_lr"), pick("critic_lr"), pick("alpha_lr")


def _optimizers(c: dict[str, Any]) -> tuple[optax.GradientTransformation, ...]:
    actor_lr, critic_lr, alpha_lr = _learning_rates(c)

    def adam(lr: float) -> optax.GradientTransformation:
        if c["max_grad_norm"] is None:
            return optax.adam(lr)
        return optax.chain(optax.clip_by_global_norm(c["max_grad_norm"]), optax.adam(lr))

    return adam(actor_lr), adam(critic_lr), optax.adam(alpha_lr)


def _action_bounds(env: Any, env_params: Any, act_dim: int) -> tuple[np.ndarray, np.ndarray]:
    space = env.action_space(env_params)
    low = np.broadcast_to(np.asarray(space.low, np.float32), (act_dim,))
    high = np.broadcast_to(np.asarray(space.high, np.float32), (act_dim,))
    return low, high


def target_entropy(c: dict[str, Any], act_dim: int) -> float:
    """The configured target entropy, ``-action_dim`` when null."""
    return float(-act_dim if c["target_entropy"] is None else c["target_entropy"])


def buffer_nbytes(cfg: dict[str, Any], obs_dim: int, act_dim: int) -> tuple[int, str]:
    """Replay-buffer bytes of one seed and a one-line description for the start-up report."""
    c = cfg[NAME]
    return (
        rb.nbytes_for(c["buffer_size"], obs_dim, act_dim, c["buffer_dtype"]),
        rb.describe(c["buffer_size"], obs_dim, act_dim, c["buffer_dtype"]),
    )


def _check(c: dict[str, Any]) -> None:
    for name in ("batch_size", "num_envs"):
        if c[name] > c["buffer_size"]:
            raise ConfigError(f"sac.{name}: expected at most sac.buffer_size ({c['buffer_size']}), got {c[name]}")


def init(key: jax.Array, env: Any, env_params: Any, cfg: dict[str, Any]) -> TrainState:
    """The whole train state of one seed (arrays only)."""
    c = cfg[NAME]
    _check(c)
    nets = SACNetworks(env, env_params, cfg)
    obs_dim, act_dim = nets.obs_dim, nets.action_dim
    actor_tx, critic_tx, alpha_tx = _optimizers(c)
    scaler = make_loss_scaler(cfg["precision"])

    @jax.jit  # one program instead of hundreds of small eager ones
    def build(key: jax.Array) -> TrainState:
        key, k_actor, k_critic, k_env = jax.random.split(key, 4)
        dummy_obs = jnp.zeros((obs_dim,), jnp.float32)
        actor_params = nets.actor.init(k_actor, dummy_obs)
        critic_params = nets.critic.init(k_critic, dummy_obs, jnp.zeros((act_dim,), jnp.float32))
        log_alpha = jnp.log(jnp.float32(c["init_alpha"]))
        learner = Learner(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=jax.tree.map(jnp.copy, critic_params),
            log_alpha=log_alpha,
            actor_opt=actor_tx.init(actor_params),
            critic_opt=critic_tx.init(critic_params),
            alpha_opt=alpha_tx.init(log_alpha),
            loss_scale=scaler.init(),
            grad_steps=jnp.int32(0),
            skipped_steps=jnp.int32(0),
        )
        obs, env_state = stepping.reset_envs(env, env_params, k_env, c["num_envs"])
        return TrainState(
            learner=learner,
            buffer=rb.init(c["buffer_size"], obs_dim, act_dim, c["buffer_dtype"]),
            env_state=env_state,
            obs=obs,
            ep_return=jnp.zeros(c["num_envs"], jnp.float32),
            obs_norm=normalize.obs_norm_init(obs_dim),
            key=jax.random.key_data(key),
            env_steps=jnp.int32(0),
        )

    return build(stepping.as_key(key))


# ------------------------------------------------------------------------------ update chunk
def polyak(target: Any, online: Any, tau: float) -> Any:
    """``tau * online + (1 - tau) * target``, leaf by leaf."""
    return jax.tree.map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)


def critic_target(
    reward: jax.Array,
    terminated: jax.Array,
    next_q_min: jax.Array,
    next_logp: jax.Array,
    alpha: jax.Array,
    gamma: float,
    reward_scale: float = 1.0,
) -> jax.Array:
    """``scale * r + gamma * (1 - terminated) * (min Q'(s', a') - alpha * log pi(a'|s'))``.

    Only a real termination stops the bootstrap; a truncated (time-limit) transition keeps it.
    """
    live = 1.0 - terminated.astype(jnp.float32)
    return reward_scale * reward + gamma * live * (next_q_min - alpha * next_logp)


def make_learner_step(nets: SACNetworks, cfg: Mapping[str, Any]) -> Callable:
    """``step(learner, buffer, obs_norm, key) -> (learner, metrics)``: one SAC gradient step.

    Critics, then actor (on the updated critics), then temperature, then targets; the whole step
    is kept only if every loss and gradient is finite (:func:`gradient.keep_if_finite`).
    """
    c = cfg[NAME]
    actor_tx, critic_tx, alpha_tx = _optimizers(c)
    scaler = make_loss_scaler(cfg["precision"])
    entropy_target = target_entropy(c, nets.action_dim)
    gamma, tau, reward_scale = c["gamma"], c["tau"], c["reward_scale"]  # numbers, or a sweep's traced values
    batch_size, autotune = int(c["batch_size"]), bool(c["autotune_alpha"])

    def step(
        ln: Learner, buffer: rb.BufferState, obs_norm: ObsNormState, key: jax.Array
    ) -> tuple[Learner, dict[str, jax.Array]]:
        with jax.named_scope("sample"):
            k_sample, k_next, k_pi = jax.random.split(key, 3)
            batch = rb.sample(buffer, k_sample, batch_size)
            obs, next_obs = nets.norm(obs_norm, batch.obs), nets.norm(obs_norm, batch.next_obs)
        alpha = jnp.exp(ln.log_alpha)

        # 1. critics, regressed on the soft Bellman target of the target critics.
        with jax.named_scope("target"):
            next_mean, next_log_std = nets.actor.apply(ln.actor_params, next_obs)
            next_action, next_logp = networks.sample_tanh_gaussian(k_next, next_mean, next_log_std)
            next_q = jnp.min(nets.critic.apply(ln.target_critic_params, next_obs, next_action), axis=0)
            target = jax.lax.stop_gradient(
                critic_target(batch.reward, batch.terminated, next_q, next_logp, alpha, gamma, reward_scale)
            )

        def critic_loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            q = nets.critic.apply(params, obs, batch.action)  # (NUM_CRITICS, batch)
            return 0.5 * jnp.sum(jnp.mean((q - target[None]) ** 2, axis=1)), jnp.mean(q)

        with jax.named_scope("critic_loss"):
            critic_grads, critic_loss, q_mean = gradient.scaled_grad(
                critic_loss_fn, scaler, ln.loss_scale, ln.critic_params)
        with jax.named_scope("optimizer"):
            critic_params, critic_opt = gradient.optimizer_step(critic_tx, critic_grads, ln.critic_params, ln.critic_opt)

        # 2. actor, on the updated critics.
        def actor_loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            mean, log_std = nets.actor.apply(params, obs)
            action, logp = networks.sample_tanh_gaussian(k_pi, mean, log_std)
            q = jnp.min(nets.critic.apply(critic_params, obs, action), axis=0)
            return jnp.mean(alpha * logp - q), logp

        with jax.named_scope("actor_loss"):
            actor_grads, actor_loss, logp = gradient.scaled_grad(actor_loss_fn, scaler, ln.loss_scale, ln.actor_params)
        with jax.named_scope("optimizer"):
            actor_params, actor_opt = gradient.optimizer_step(actor_tx, actor_grads, ln.actor_params, ln.actor_opt)

        # 3. temperature: d/d(log_alpha) of -log_alpha * (log pi + target_entropy), log pi fixed.
        log_alpha, alpha_opt = ln.log_alpha, ln.alpha_opt
        if autotune:
            alpha_grad = -jax.lax.stop_gradient(jnp.mean(logp) + entropy_target)
            log_alpha, alpha_opt = gradient.optimizer_step(alpha_tx, alpha_grad, ln.log_alpha, ln.alpha_opt)

        # 4. targets; a step with any non-finite gradient or loss changes nothing.
        finite = all_finite((critic_grads, actor_grads, critic_loss, actor_loss))
        stepped = ln.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=polyak(ln.target_critic_params, critic_params, tau),
            log_alpha=log_alpha,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            alpha_opt=alpha_opt,
        )
        new, loss_scale, skipped = gradient.keep_if_finite(finite, stepped, ln, scaler, ln.loss_scale)
        new = new.replace(
            loss_scale=loss_scale,
            grad_steps=ln.grad_steps + 1,
            skipped_steps=ln.skipped_steps + skipped.astype(jnp.int32),
        )
        metrics = {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "entropy": -jnp.mean(logp),
            "alpha": jnp.exp(new.log_alpha),
            "q_mean": q_mean,
        }
        return new, metrics

    return step


def make_update_chunk(env: Any, env_params: Any, cfg: Mapping[str, Any], num_updates: int) -> Callable:
    """``chunk(state) -> (state, metrics)``: ``num_updates`` updates in one ``lax.scan``."""
    c = cfg[NAME]
    _check(c)
    nets = SACNetworks(env, env_params, cfg)
    learner_step = make_learner_step(nets, cfg)
    low, high = _action_bounds(env, env_params, nets.action_dim)
    num_envs, batch_size = int(c["num_envs"]), int(c["batch_size"])
    learning_starts = max(int(c["learning_starts"]), batch_size)
    actor_lr = _learning_rates(c)[0]
    phi = shaping.potential(c["shaping"], env, env_params, f"{NAME}.shaping")
    loss_names = ("actor_loss", "critic_loss", "entropy", "q_mean")

    def learn(ln: Learner, buffer: rb.BufferState, obs_norm: ObsNormState, key: jax.Array) -> tuple[Learner, dict]:
        def body(ln: Learner, k: jax.Array) -> tuple[Learner, dict]:
            return learner_step(ln, buffer, obs_norm, k)

        ln, metrics = jax.lax.scan(body, ln, jax.random.split(key, c["gradient_steps"]))
        return ln, jax.tree.map(jnp.mean, metrics)

    def collect_only(ln: Learner, buffer: rb.BufferState, obs_norm: ObsNormState, key: jax.Array) -> tuple[Learner, dict]:
        return ln, {**{k: jnp.float32(0.0) for k in loss_names}, "alpha": jnp.exp(ln.log_alpha)}

    def update(state: TrainState, _: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        key = stepping.as_key(state.key)
        key, k_act, k_rand, k_env, k_learn = jax.random.split(key, 5)

        # 1. act: the policy's sample, or uniform random actions while collecting.
        with jax.named_scope("act"):
            mean, log_std = nets.actor.apply(state.learner.actor_params, nets.norm(state.obs_norm, state.obs))
            policy_action, _ = networks.sample_tanh_gaussian(k_act, mean, log_std)
            random_action = jax.random.uniform(k_rand, policy_action.shape, jnp.float32, -1.0, 1.0)
            action = jnp.where(state.env_steps < learning_starts, random_action, policy_action)

        # 2. step every environment; the buffer stores the true last observation on auto-reset steps.
        env_action = low + (action + 1.0) * 0.5 * (high - low)
        with jax.named_scope("env_step"):
            s = stepping.step_envs(env, env_params, k_env, state.env_state, env_action, state.ep_return)
        stored = rb.Transition(
            obs=state.obs, action=action,
            reward=shaping.shaped_reward(phi, s.reward, state.obs, s.final_obs, s.terminated, float(c["gamma"])),
            next_obs=s.final_obs,
            terminated=s.terminated.astype(jnp.bool_),
        )
        with jax.named_scope("buffer_add"):
            buffer = rb.add(state.buffer, stored)
        state = state.replace(
            buffer=buffer,
            env_state=s.env_state,
            obs=s.obs,
            ep_return=s.ep_return,
            obs_norm=normalize.updated(c, state.obs_norm, state.obs),
            env_steps=state.env_steps + num_envs,
            key=jax.random.key_data(key),
        )

        # 3. learn. lax.cond keeps one program; only the learner passes through it (under a
        # vmap over seeds the cond becomes a select, which must not copy the buffer).
        learning = state.env_steps >= learning_starts
        learner, losses = jax.lax.cond(
            learning, learn, collect_only, state.learner, state.buffer, state.obs_norm, k_learn
        )
        state = state.replace(learner=learner)
        metrics = {**losses, **s.episode, "learning": learning.astype(jnp.float32), "reward_avg": jnp.mean(s.reward)}
        return state, metrics

    def chunk(state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        skipped_before = state.learner.skipped_steps
        state, per_update = jax.lax.scan(update, state, None, length=num_updates)
        learned = per_update["learning"]
        n_learned = jnp.maximum(jnp.sum(learned), 1.0)
        metrics = {
            "reward_avg": jnp.mean(per_update["reward_avg"]),
            "lr": jnp.float32(actor_lr),
            "alpha": per_update["alpha"][-1],
            "buffer_fill": state.buffer.size.astype(jnp.float32) / state.buffer.data.reward.shape[0],
            "nonfinite_skips": (state.learner.skipped_steps - skipped_before).astype(jnp.float32),
            "loss_scale": state.learner.loss_scale.scale,
        }
        for name in loss_names:  # means over the updates that learned
            metrics[name] = jnp.sum(per_update[name] * learned) / n_learned
        for name in ("episodes", "ep_return", *EPISODE_TOTALS.values()):
            metrics[name] = jnp.sum(per_update[name])
        missing = set(METRIC_KEYS) - set(metrics)
        assert not missing, missing
        return state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    return chunk


# ------------------------------------------------------------------------------------- acting
def policy_params(state: TrainState) -> dict[str, Any]:
    """What acting needs: the actor parameters and the observation statistics."""
    return {"actor": state.learner.actor_params, "obs_norm": state.obs_norm}


def make_policy(env: Any, env_params: Any, cfg: dict[str, Any]) -> Callable:
    """``act(policy_params, obs) -> action``: the deterministic action ``tanh(mean)`` in env units."""
    nets = SACNetworks(env, env_params, cfg)
    low, high = _action_bounds(env, env_params, nets.action_dim)

    def act(params: dict[str, Any], obs: jax.Array) -> jax.Array:
        mean, _ = nets.actor.apply(params["actor"], nets.norm(params["obs_norm"], obs))
        return low + (jnp.tanh(mean) + 1.0) * 0.5 * (high - low)

    return act
