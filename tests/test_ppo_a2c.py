"""PPO and A2C learn the probe environments; precision, determinism and config checks."""
from __future__ import annotations

import os
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from probe_envs import ConstantRewardEnv, NaNRewardEnv, ObsActionEnv, SocketTargetEnv, TargetActionEnv, TwoStepEnv

from oe3jax.learning import METRIC_KEYS, a2c, networks, normalize, onpolicy, ppo
from oe3jax.schema import ConfigError, resolve

ALGOS = {"ppo": ppo, "a2c": a2c}
ENVS = {
    "target": TargetActionEnv,
    "obs": ObsActionEnv,
    "two_step": TwoStepEnv,
    "constant": ConstantRewardEnv,
    "sockets": SocketTargetEnv,
    "nan_reward": NaNRewardEnv,
}
SMALL = {"ppo": {"num_envs": 8, "num_steps": 8, "num_minibatches": 2, "lr": 3e-3},
         "a2c": {"num_envs": 8, "num_steps": 8, "lr": 3e-3}}


def make_cfg(algo: str, precision: str = "float32", total_steps: int | None = None, net=None, **over):
    return {
        algo: resolve(ALGOS[algo].CONFIG_SPEC, {**SMALL[algo], **over}, algo + "."),
        "network": resolve(networks.NETWORK_SPEC, net or {"kind": "mlp"}),
        "precision": precision,
        "total_steps": total_steps,
    }


@functools.lru_cache(maxsize=None)
def _program(algo: str, env_name: str, updates: int, precision: str, total_steps, net: tuple, over: tuple):
    """(env, cfg, jitted init, jitted chunk), compiled once per distinct setting."""
    env = ENVS[env_name]()
    cfg = make_cfg(algo, precision, total_steps, dict(net), **dict(over))
    mod = ALGOS[algo]
    init = jax.jit(lambda key: mod.init(key, env, env.default_params, cfg))
    chunk = jax.jit(mod.make_update_chunk(env, env.default_params, cfg, updates))
    return env, cfg, init, chunk


def train(algo, env_name, updates=200, precision="float32", seed=0, total_steps=None, net=None, **over):
    net = net or {"kind": "mlp"}
    env, cfg, init, chunk = _program(algo, env_name, updates, precision, total_steps,
                                     tuple(sorted(net.items())), tuple(sorted(over.items())))
    state, metrics = chunk(init(jax.random.PRNGKey(seed)))
    act = jax.jit(ALGOS[algo].make_policy(env, env.default_params, cfg))
    return state, metrics, lambda obs: np.asarray(act(ALGOS[algo].policy_params(state), jnp.asarray(obs)))


def train_annealed(algo, env_name, updates, num_envs=8, **over):
    """``train`` with the learning rate decaying linearly to 0 over the run.

    With a constant rate the policy keeps moving with the gradient noise (and can drift away from
    the optimum the longer it trains); the decay lets it settle, far inside the tolerances.
    """
    total = updates * num_envs * 8  # num_steps is 8
    return train(algo, env_name, updates=updates, total_steps=total, lr_schedule="linear", num_envs=num_envs, **over)


# Every learning test runs seed 0; seeds 1-3 are marked slow (run them with `pytest -m slow`).
SEEDS = [0, *(pytest.param(seed, marks=pytest.mark.slow) for seed in (1, 2, 3))]


@pytest.mark.parametrize("seed", SEEDS)
def test_ppo_solves_observation_dependent_target(seed):
    updates = 400
    _, metrics, act = train_annealed("ppo", "obs", updates, seed=seed)
    for obs in ([0.5, -0.5], [-0.2, 0.7], [0.0, 0.3]):
        np.testing.assert_allclose(act(obs), obs, atol=0.1)
    # One-step episodes: one per env step, and each episode's return is its single reward (< 0).
    # (A bound on the mean return over the run would measure the early, random phase of learning.)
    assert float(metrics["episodes"]) == updates * 64
    assert float(metrics["ep_return"]) == pytest.approx(float(metrics["reward_avg"]) * updates * 64, rel=1e-5)
    assert float(metrics["ep_return"]) < 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_ppo_two_step_credit_through_the_bootstrap(seed):
    _, _, act = train_annealed("ppo", "two_step", 400, seed=seed)
    np.testing.assert_allclose(act([1.0, 0.0]), [TwoStepEnv.X_STAR], atol=0.1)
    np.testing.assert_allclose(act([0.0, TwoStepEnv.X_STAR]), [TwoStepEnv.A_STAR], atol=0.1)


@pytest.mark.parametrize("seed", SEEDS)
def test_ppo_value_bootstraps_at_truncation(seed):
    # Reward 1 forever, cut every 4 steps by a time limit: V = 1 / (1 - gamma) = 10.
    # Treating the time limit as terminal would give at most 1 + 0.9 + 0.81 + 0.729 = 3.44.
    state, metrics, _ = train("ppo", "constant", updates=100, gamma=0.9, seed=seed)
    env = ConstantRewardEnv()
    nets = onpolicy.ActorCritic(env, env.default_params, make_cfg("ppo", gamma=0.9))
    obs = normalize.obs_normalize(state.obs_norm, jnp.ones(1), 0.1, 10.0)
    assert float(nets.critic.apply(state.params["critic"], obs)) == pytest.approx(10.0, rel=0.05)
    assert float(metrics["ep_return"]) / float(metrics["episodes"]) == pytest.approx(4.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_ppo_socket_shared_solves_per_socket_targets(seed):
    _, _, act = train_annealed("ppo", "sockets", 400, num_envs=16, net={"kind": "socket_shared"}, seed=seed)
    for obs in ([0.5, -0.5, 0.1, 0.6], [-0.7, 0.3, 0.3, -0.1]):
        np.testing.assert_allclose(act(obs), obs, atol=0.1)


@pytest.mark.parametrize("seed", SEEDS)
def test_a2c_rmsprop_two_step_with_linear_lr(seed):
    updates = 800
    _, metrics, act = train("a2c", "two_step", updates=updates, total_steps=updates * 64, lr_schedule="linear",
                            seed=seed)
    np.testing.assert_allclose(act([1.0, 0.0]), [TwoStepEnv.X_STAR], atol=0.1)
    np.testing.assert_allclose(act([0.0, TwoStepEnv.X_STAR]), [TwoStepEnv.A_STAR], atol=0.1)
    # linear decay from 3e-3 to 0 over the run: the mean over updates 0..799 is 3e-3 * (1 - 399.5 / 800)
    assert float(metrics["lr"]) == pytest.approx(3e-3 * (1 - 399.5 / 800), rel=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_each_precision_learns_and_keeps_float32_state(precision, seed):
    state, metrics, act = train_annealed("ppo", "target", 200, precision=precision, seed=seed)
    np.testing.assert_allclose(act([1.0]), [0.5, -0.3], atol=0.1)
    chex.assert_type(jax.tree.leaves(state.params), jnp.float32)
    chex.assert_type([x for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)],
                     jnp.float32)
    assert act([1.0]).dtype == np.float32
    scale = float(state.loss_scale.scale)
    if precision == "float16":
        assert scale >= 1.0 and np.isfinite(float(metrics["nonfinite_skips"]))
    else:
        assert scale == 1.0 and float(metrics["nonfinite_skips"]) == 0.0


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_float32_nonfinite_steps_are_skipped_and_counted(algo):
    # Every reward is NaN, so is every advantage, loss and gradient: each gradient step must be
    # skipped and counted, and parameters and optimizer state must stay as they were.
    updates = 3
    _, _, init, chunk = _program(algo, "nan_reward", updates, "float32", None, (("kind", "mlp"),), ())
    before = init(jax.random.PRNGKey(0))
    after, metrics = chunk(before)
    for new, old in zip(jax.tree.leaves((after.params, after.opt_state)),
                        jax.tree.leaves((before.params, before.opt_state)), strict=True):
        np.testing.assert_array_equal(new, old)
    steps_per_update = {"ppo": 4 * 2, "a2c": 1}[algo]  # ppo: update_epochs x num_minibatches
    assert float(metrics["nonfinite_skips"]) == updates * steps_per_update
    assert set(METRIC_KEYS) <= set(metrics)
    assert all(np.isfinite(float(metrics[k])) for k in ("actor_loss", "critic_loss", "entropy"))
    assert int(after.update_count) == updates


def test_seeds_differ_and_same_seed_gives_same_bits():
    a, _, _ = train_annealed("ppo", "obs", 400, seed=0)
    b, _, _ = train_annealed("ppo", "obs", 400, seed=1)
    c, _, _ = train_annealed("ppo", "obs", 400, seed=0)
    leaves_a, leaves_b, leaves_c = (jax.tree.leaves(s.params) for s in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_c))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def test_state_holds_key_data_not_typed_keys():
    state, _, _ = train_annealed("ppo", "obs", 400)
    assert state.rng.dtype == jnp.uint32
    assert not any(jnp.issubdtype(x.dtype, jax.dtypes.prng_key) for x in jax.tree.leaves(state))


def test_config_relations_fail_with_one_line_errors():
    env = TargetActionEnv()
    with pytest.raises(ConfigError, match=r"ppo.num_minibatches: must divide num_envs \* num_steps = 64, got 3"):
        ppo.env_steps_per_update(make_cfg("ppo", num_minibatches=3))
    with pytest.raises(ConfigError, match="ppo.lr_schedule: 'linear' needs total_steps"):
        ppo.make_update_chunk(env, env.default_params, make_cfg("ppo", lr_schedule="linear"), 1)
    with pytest.raises(ConfigError, match="network.kind: 'socket_shared' needs"):
        ppo.init(jax.random.PRNGKey(0), env, env.default_params, make_cfg("ppo", net={"kind": "socket_shared"}))
    with pytest.raises(ConfigError, match="a2c.optimizer: expected one of 'rmsprop', 'adam', got 'sgd'"):
        make_cfg("a2c", optimizer="sgd")
    with pytest.raises(ConfigError, match="ppo.clip_epsilon: unknown key"):
        make_cfg("ppo", clip_epsilon=0.1)
    assert ppo.env_steps_per_update(make_cfg("ppo")) == (8, 8)


def test_three_vmapped_seeds_of_the_default_ppo_chunk_finish():
    """The default PPO chunk vmapped over 3 seeds ran forever in XLA's CPU runtime (every thread
    idle) unless its concurrency-optimised scheduler is off, which ``import oe3jax`` arranges."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, oe3jax, jax
        assert "xla_cpu_enable_concurrency_optimized_scheduler=false" in os.environ["XLA_FLAGS"]
        from oe3jax import learning
        from oe3jax.training.config import default_components, make_run_env, resolve_config
        comps = default_components()
        cfg = resolve_config("ppo", comps, flags={"seeds": 3, "total_steps": 1024})
        env, params = make_run_env(cfg, comps)
        algo = learning.get("ppo")
        state = jax.jit(learning.init_seeds(algo, env, params, cfg))(learning.seed_keys(cfg))
        out = jax.jit(jax.vmap(algo.make_update_chunk(env, params, cfg, 1)))(state)
        jax.block_until_ready(out)
        print("finished")
    """)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "finished", proc.stderr[-2000:]
