"""SAC: probe environments are solved; targets, Polyak averaging and entropy follow hand computations."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from oe3jax.learning import METRIC_KEYS, networks, sac
from oe3jax.learning import buffer as rb
from oe3jax.schema import ConfigError, resolve
from oe3jax.learning.networks import NETWORK_SPEC
from probe_envs import SocketTargetEnv


@struct.dataclass
class ProbeState(environment.EnvState):
    obs: jax.Array


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 4


class ActionProbe(environment.Environment):
    """Two action dimensions: the reward is ``-|a_0 - 0.5| - |a_1 - obs|``.

    The observation is uniform in [-0.8, 0.8]; an episode lasts ``max_steps_in_episode`` steps and
    ends by truncation. The reward does not depend on the future, so the optimal action is
    ``(0.5, obs)`` whatever gamma: one probe checks a fixed target and an observation-dependent one.
    The absolute error keeps its slope at the optimum, so the maximum of a learned critic is sharp
    (a squared error is flat there, and small critic errors move its maximum far).
    """

    target = 0.5

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams()

    def _draw(self, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, (1,), jnp.float32, -0.8, 0.8)

    def reset_env(self, key: jax.Array, params: ProbeParams) -> tuple[jax.Array, ProbeState]:
        obs = self._draw(key)
        return obs, ProbeState(time=0, obs=obs)

    def step_env(self, key, state, action, params):
        reward = -jnp.abs(action[0] - self.target) - jnp.abs(action[1] - state.obs[0])
        obs = self._draw(key)
        return obs, ProbeState(time=state.time + 1, obs=obs), reward, jnp.bool_(False), {}

    def action_space(self, params=None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def observation_space(self, params) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


def _cfg(precision: str = "float32", network: dict[str, Any] | None = None, **sac_overrides: Any) -> dict[str, Any]:
    # The deterministic action tanh(mean) sits off the optimum by an amount that grows with the
    # policy's spread, so the probes ask for a low entropy (-4 per action dimension) and let the
    # temperature reach it quickly.
    user = {
        "num_envs": 4,
        "buffer_size": 2_000,
        "batch_size": 64,
        "gradient_steps": 1,
        "learning_starts": 64,
        "lr": 3e-3,
        "alpha_lr": 3e-2,
        "gamma": 0.5,
        "init_alpha": 0.1,
        "target_entropy": -8.0,
        **sac_overrides,
    }
    net = {"kind": "mlp", "hidden_sizes": [32, 32], "activation": "relu", "squash": "tanh",
           "log_std": "state_dependent", **(network or {})}
    return {
        "sac": resolve(sac.CONFIG_SPEC, user, "sac."),
        "network": resolve(NETWORK_SPEC, net, "network."),
        "precision": precision,
    }


def _train(cfg: dict[str, Any], updates: int, env: Any = None, seed: int = 0):
    env = env or ActionProbe()
    params = env.default_params
    state = sac.init(jax.random.key(seed), env, params, cfg)
    chunk = jax.jit(sac.make_update_chunk(env, params, cfg, updates))
    state, metrics = chunk(state)
    return state, metrics, chunk


def _policy_error(cfg: dict[str, Any], state, env: Any = None) -> float:
    """Largest distance of the deterministic action from the optimum over a grid of observations."""
    env = env or ActionProbe()
    act = jax.jit(jax.vmap(sac.make_policy(env, env.default_params, cfg), in_axes=(None, 0)))
    if isinstance(env, ActionProbe):  # optimum (0.5, obs)
        obs = jnp.linspace(-0.8, 0.8, 17)[:, None]
        best = jnp.concatenate([jnp.full_like(obs, 0.5), obs], axis=1)
    else:  # SocketTargetEnv: optimum = obs
        obs = jax.random.uniform(jax.random.key(9), (32, env.obs_dim), jnp.float32, -0.8, 0.8)
        best = obs
    return float(jnp.max(jnp.abs(act(sac.policy_params(state), obs) - best)))


UPDATES = 1_500
# The learning tests run seed 0; seeds 1-3 are marked slow (run them with `pytest -m slow`).
SEEDS = [0, *(pytest.param(seed, marks=pytest.mark.slow) for seed in (1, 2, 3))]


@pytest.fixture(scope="module")
def trained():
    cfg = _cfg()
    state, metrics, chunk = _train(cfg, UPDATES)
    return cfg, state, metrics, chunk


def test_solves_action_probe(trained):
    cfg, state, metrics, _ = trained
    assert _policy_error(cfg, state) < 0.1
    assert set(METRIC_KEYS) <= set(metrics) and {"alpha", "q_mean", "buffer_fill"} <= set(metrics)
    assert int(state.learner.skipped_steps) == 0
    # 1,500 updates x 4 envs = 6,000 steps of 4-step episodes; the 2,000-slot buffer is full.
    assert float(metrics["episodes"]) == UPDATES
    assert float(metrics["buffer_fill"]) == 1.0
    assert int(state.env_steps) == 4 * UPDATES
    assert int(state.learner.grad_steps) == UPDATES - 64 // 4 + 1  # learning from 64 env steps on


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_solves_action_probe_other_seeds(seed):
    cfg = _cfg()
    state, _, _ = _train(cfg, UPDATES, seed=seed)
    assert _policy_error(cfg, state) < 0.1


def test_buffer_holds_true_final_observation(trained):
    """On an auto-reset step the stored next_obs is the episode's last observation, not the reset one."""
    _, state, _, _ = trained
    data = jax.tree.map(np.asarray, state.buffer.data)
    assert not data.terminated.any()  # the probe's episodes end by truncation only
    capacity, n = 2_000, 4
    # Update u wrote env e's transition at slot (4u + e) mod 2000.
    assert int(state.buffer.pos) == (n * UPDATES) % capacity
    for u in range(UPDATES - 40, UPDATES - 1):
        for e in range(n):
            here, nxt = (n * u + e) % capacity, (n * (u + 1) + e) % capacity
            if (u + 1) % 4 == 0:  # the episode was truncated: the next obs is a fresh reset
                assert data.obs[nxt, 0] != data.next_obs[here, 0]
            else:
                assert data.obs[nxt, 0] == data.next_obs[here, 0]


def _assert_float32_learner(ln: sac.Learner) -> None:
    for tree in (ln.actor_params, ln.critic_params, ln.target_critic_params, ln.actor_opt, ln.critic_opt,
                 ln.log_alpha):
        for leaf in jax.tree.leaves(tree):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("seed", SEEDS)
def test_float16_learns_with_loss_scaling_and_skips_overflows(seed):
    cfg = _cfg("float16")
    state, metrics, chunk = _train(cfg, UPDATES, seed=seed)
    _assert_float32_learner(state.learner)
    for k, v in metrics.items():
        assert v.dtype == jnp.float32 and np.isfinite(float(v)), k
    assert _policy_error(cfg, state) < 0.12
    # Force overflow: a scale of 2^60 makes the float16 backward pass infinite. Those steps are
    # skipped and counted, the scale halves until gradients are finite, and learning goes on.
    ln = state.learner
    state = state.replace(learner=ln.replace(loss_scale=ln.loss_scale.replace(scale=jnp.float32(2.0**60))))
    state, _ = chunk(state)
    ln = state.learner
    # No growth within a chunk of 1,500 steps (growth interval 2,000), so every skip halved the scale once.
    halvings = 60 - int(np.log2(float(ln.loss_scale.scale)))
    assert int(ln.skipped_steps) == halvings >= 30
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(ln.actor_params))
    assert _policy_error(cfg, state) < 0.12


def test_float32_nonfinite_steps_are_skipped_and_counted(trained):
    # A NaN temperature makes every critic target, loss and gradient NaN: each gradient step must
    # be skipped and counted, and the learner must stay as it was (the temperature too).
    _, state, _, chunk = trained
    before = state.learner.replace(log_alpha=jnp.float32(jnp.nan))
    after, metrics = chunk(state.replace(learner=before))
    ln0, ln1 = before, after.learner
    assert int(ln1.grad_steps) - int(ln0.grad_steps) == UPDATES == int(ln1.skipped_steps) - int(ln0.skipped_steps)
    assert float(metrics["nonfinite_skips"]) == UPDATES
    for new, old in zip(jax.tree.leaves((ln1.actor_params, ln1.critic_params, ln1.target_critic_params, ln1.log_alpha,
                                         ln1.actor_opt, ln1.critic_opt, ln1.alpha_opt)),
                        jax.tree.leaves((ln0.actor_params, ln0.critic_params, ln0.target_critic_params, ln0.log_alpha,
                                         ln0.actor_opt, ln0.critic_opt, ln0.alpha_opt)), strict=True):
        np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("seed", SEEDS)
def test_bfloat16_socket_shared_learns_socket_probe(seed):
    env = SocketTargetEnv(n_sockets=3, error="absolute")
    cfg = _cfg("bfloat16", network={"kind": "socket_shared", "hidden_sizes": [32], "socket_hidden_sizes": [32],
                                    "global_embed_size": 16}, gamma=0.0, target_entropy=-12.0)
    state, metrics, _ = _train(cfg, 1_000, env, seed=seed)
    _assert_float32_learner(state.learner)
    assert int(state.learner.skipped_steps) == 0
    assert _policy_error(cfg, state, env) < 0.2


def test_default_target_entropy_is_minus_action_dim():
    c = resolve(sac.CONFIG_SPEC, {}, "sac.")
    assert c["target_entropy"] is None
    assert sac.target_entropy(c, 129) == -129.0
    assert sac.target_entropy({**c, "target_entropy": -3.5}, 129) == -3.5


def test_polyak_matches_hand_computation():
    target = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(-4.0)}
    online = {"w": jnp.array([3.0, 0.0]), "b": jnp.array(6.0)}
    out = sac.polyak(target, online, 0.25)
    # 0.25 * online + 0.75 * target
    np.testing.assert_allclose(out["w"], [0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 0])
    np.testing.assert_allclose(out["b"], 0.75 * -4 + 0.25 * 6)


def test_truncation_bootstraps_and_termination_does_not():
    reward = jnp.array([1.0, 1.0, 1.0])
    terminated = jnp.array([False, False, True])  # the 2nd is a time-limit truncation: not terminal
    next_q = jnp.array([10.0, 10.0, 10.0])
    next_logp = jnp.array([-2.0, -2.0, -2.0])
    y = sac.critic_target(reward, terminated, next_q, next_logp, jnp.float32(0.5), gamma=0.9, reward_scale=2.0)
    # 2 * 1 + 0.9 * (10 - 0.5 * (-2)) = 2 + 9.9 = 11.9 ; terminal: 2
    np.testing.assert_allclose(y, [11.9, 11.9, 2.0], rtol=1e-6)


def test_squashed_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = jnp.array([[0.3, -1.2]]), jnp.array([[-0.5, 0.2]])
    action, logp = networks.sample_tanh_gaussian(jax.random.key(0), mean, log_std)
    # Independent computation: u = atanh(a), density of N(mean, std) at u divided by |da/du|.
    a = np.asarray(action, np.float64)
    u = np.arctanh(a)
    std = np.exp(np.asarray(log_std, np.float64))
    log_n = -0.5 * ((u - np.asarray(mean)) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    want = np.sum(log_n - np.log(1 - a**2), axis=-1)
    np.testing.assert_allclose(logp, want, rtol=1e-4)


def test_config_is_checked():
    with pytest.raises(ConfigError, match="sac.buffer_dtype"):
        resolve(sac.CONFIG_SPEC, {"buffer_dtype": "int8"}, "sac.")
    with pytest.raises(ConfigError, match="sac.batchsize: unknown key"):
        resolve(sac.CONFIG_SPEC, {"batchsize": 3}, "sac.")
    with pytest.raises(ConfigError, match="network.squash"):
        sac.init(jax.random.key(0), ActionProbe(), ProbeParams(), _cfg(network={"squash": "clip"}))
    with pytest.raises(ConfigError, match="sac.batch_size"):
        sac.init(jax.random.key(0), ActionProbe(), ProbeParams(), _cfg(batch_size=4000))


def test_buffer_report_counts_bytes():
    cfg = _cfg(buffer_size=200_000, buffer_dtype="float32")
    nbytes, line = sac.buffer_nbytes(cfg, 533, 129)
    assert nbytes == 200_000 * (2 * 533 * 4 + 129 * 4 + 4 + 1) + 8
    assert line.startswith("replay buffer: 200,000 x") and "GB" in line


def test_whole_state_with_buffer_survives_checkpoint_round_trip(trained, tmp_path):
    from oe3jax.training.checkpoint import Checkpoints

    _, state, _, _ = trained
    ckpt = Checkpoints(tmp_path / "ckpt", max_to_keep=1, async_save=False)
    ckpt.save(7, state, {"algo": "sac"})
    ckpt.wait()
    restored = ckpt.restore(7, jax.eval_shape(lambda: state))
    ckpt.close()
    assert isinstance(restored, sac.TrainState) and isinstance(restored.buffer, rb.BufferState)
    assert int(restored.buffer.size) == 2_000 and int(restored.buffer.pos) == int(state.buffer.pos)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
