"""Adapters to other libraries' APIs: the Gymnasium ``Env`` (checker, spaces, episode statistics of
Gymnasium's own wrappers, registered ids) and the five-value gymnax step for legacy code."""
from __future__ import annotations

import copy
import subprocess
import sys

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.wrappers import RecordEpisodeStatistics
from test_reference import tiny_scenario

import oe3jax
from oe3jax.simulation.adapters import (
    RESERVED_INFO_KEYS, GymnasiumEnv, LegacyGymnaxEnv, make_gymnasium_env, make_legacy_env,
)
from oe3jax.simulation.scenario import PRESETS


# --------------------------------------------------------------------------- Gymnasium
def test_gymnasium_env_passes_the_checker():
    from gymnasium.utils.env_checker import check_env

    env = make_gymnasium_env(tiny_scenario(daily_moto=40.0), episode_hours=48)
    check_env(env, skip_render_check=True)
    assert env.action_space.shape == (4,) and (env.action_space.low == -1).all()
    assert env.observation_space.shape == (25 + 4 * 3,)
    # no render mode: render() computes nothing and says so by returning None, as Gymnasium defines it
    env.reset(seed=0)
    assert env.render() is None
    made = gymnasium.make("oe3jax/EVCharging-iquitos-38-v0", episode_hours=2)
    made.reset(seed=0)
    assert made.render() is None


def test_gymnasium_episode_stays_in_space_and_truncates():
    env = make_gymnasium_env(tiny_scenario(daily_moto=40.0, daily_taxi=10.0), episode_hours=72, random_start=True)
    with pytest.raises(RuntimeError, match=r"^step: call reset\(\) first$"):  # unwrapped too, as the vector env
        env.step(np.zeros(4, np.float32))
    obs, info = env.reset(seed=11)
    assert env.observation_space.contains(obs) and env.unwrapped.sim.t % 24 == 0
    env.action_space.seed(0)
    for k in range(72):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert not terminated and truncated == (k == 71)
    obs2, _ = env.reset(seed=11)
    env3 = make_gymnasium_env(tiny_scenario(daily_moto=40.0, daily_taxi=10.0), episode_hours=72, random_start=True)
    obs3, _ = env3.reset(seed=11)
    np.testing.assert_array_equal(obs2, obs3)
    obs4, _ = env3.reset(options={"start_hour": 100})
    assert env3.sim.t == 100
    with pytest.raises(ValueError, match="start"):
        env3.reset(options={"start": 3})
    with pytest.raises(ValueError, match=r"^reset options: expected a dict such as \{'start_hour': 0\} or None, "
                                         r"got list$"):
        env3.reset(options=["start_hour"])


def test_make_gymnasium_env_takes_scenario_overrides():
    env = make_gymnasium_env("iquitos-38", episode_hours=24, capacity_kwh=3000.0)
    assert env.sim.scenario.capacity_kwh == 3000.0 and env.sim.scenario.n_sockets == 38
    assert env.action_space.shape == (39,)
    obs, _ = env.reset(seed=0)
    assert obs[6 + 2 * 6] == pytest.approx(0.5)  # SOC at reset
    with pytest.raises(ValueError, match="capacity_kw"):
        make_gymnasium_env("iquitos-38", capacity_kw=3000.0)
    with pytest.raises(ValueError, match="render_mode"):
        make_gymnasium_env("iquitos-38", render_mode="human")


def test_info_leaves_the_reserved_keys_free():
    env = make_gymnasium_env("iquitos-38", episode_hours=3)
    _, info = env.reset(seed=0)
    infos = [info]
    for _ in range(3):
        infos.append(env.step(env.action_space.sample())[-1])
    assert "totals" in infos[0] and {"flows", "terms", "totals"} <= set(infos[-1])
    for info in infos:
        assert not RESERVED_INFO_KEYS & set(info), sorted(RESERVED_INFO_KEYS & set(info))


def test_record_episode_statistics_over_episode_ends():
    """Gymnasium's own statistics wrapper sees the summed rewards and the length of each episode."""
    env = RecordEpisodeStatistics(make_gymnasium_env("iquitos-38", episode_hours=48, random_start=True))
    env.action_space.seed(3)
    for episode in range(2):
        env.reset(seed=10 + episode)
        rewards = []
        for k in range(48):
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            rewards.append(reward)
            assert ("episode" in info) == (k == 47) == (terminated or truncated)
        assert info["episode"]["l"] == 48
        assert info["episode"]["r"] == pytest.approx(sum(rewards), rel=1e-12)
        assert info["totals"]["return"] == pytest.approx(sum(rewards), rel=1e-12)  # the env's own total


def test_vector_env_statistics_as_cleanrl_reads_them():
    """CleanRL: a sync vector env of RecordEpisodeStatistics-wrapped envs, read from ``infos["episode"]``."""
    envs = gymnasium.vector.SyncVectorEnv(
        [lambda: RecordEpisodeStatistics(gymnasium.make("oe3jax/EVCharging-iquitos-38-v0", episode_hours=24))
         for _ in range(2)])
    envs.reset(seed=0)
    envs.action_space.seed(0)
    sums = np.zeros(2)
    for k in range(24):
        _, reward, terminated, truncated, infos = envs.step(envs.action_space.sample())
        sums += reward
    assert truncated.all() and not terminated.any()
    assert infos["_episode"].all()
    np.testing.assert_array_equal(infos["episode"]["l"], [24, 24])
    np.testing.assert_allclose(infos["episode"]["r"], sums, rtol=1e-6)
    envs.close()


def test_gymnasium_ids_are_registered_on_import():
    assert set(oe3jax.GYMNASIUM_IDS) == {f"oe3jax/EVCharging-{name}-v0" for name in PRESETS}
    for env_id in oe3jax.GYMNASIUM_IDS:
        assert env_id in gymnasium.registry
    env = gymnasium.make("oe3jax/EVCharging-iquitos-128-v0", episode_hours=24, capacity_kwh=3000.0)
    assert isinstance(env.unwrapped, GymnasiumEnv)
    scn = env.unwrapped.sim.scenario
    assert (scn.name, scn.n_sockets, scn.capacity_kwh) == ("iquitos-128", 128, 3000.0)
    assert env.action_space.shape == (129,) and env.observation_space.shape == (537,)
    env.reset(seed=0)
    for k in range(24):
        *_, truncated, _ = env.step(env.action_space.sample())
    assert truncated
    env38 = gymnasium.make("oe3jax/EVCharging-iquitos-38-v0")
    assert env38.unwrapped.sim.scenario.n_sockets == 38 and env38.unwrapped.sim.episode_hours == 8760


def test_registration_and_the_gymnasium_env_import_no_jax():
    code = ("import sys, gymnasium\n"
            "env = gymnasium.make('oe3jax:oe3jax/EVCharging-iquitos-38-v0', episode_hours=2)\n"
            "env.reset(seed=0); env.step(env.action_space.sample())\n"
            "assert 'jax' not in sys.modules, 'jax imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- legacy gymnax step
def _play(envs, params, keys, actions):
    """Jitted, vmapped steps from a reset for each env in ``envs`` (one compile): every step's outputs."""

    def run(keys, actions):
        outs = []
        for env in envs:
            _, state = jax.vmap(env.reset, (0, None))(keys[0], params)

            def body(state, inputs, env=env):
                k, a = inputs
                out = jax.vmap(env.step, (0, 0, 0, None))(k, state, a, params)
                return out[1], out

            outs.append(jax.lax.scan(body, state, (keys[1:], actions))[1])
        return outs

    return jax.device_get(jax.jit(run)(keys, actions))


def test_legacy_step_is_the_six_value_step_with_done_jitted_vmapped_and_deep_copied():
    legacy, params = make_legacy_env("iquitos-38", episode_hours=3)
    six = legacy.env
    copied = copy.deepcopy(legacy)  # rejax deep-copies its configuration, environment included
    assert isinstance(copied, LegacyGymnaxEnv) and copied.env is not six
    assert copied.num_actions == 39 and copied.name == six.name
    assert copied.action_space(params).shape == (39,) and copied.observation_space(params).shape == (177,)
    assert int(copied.default_params.max_steps_in_episode) == 3

    n_steps, n_envs = 7, 2
    keys = jax.random.split(jax.random.key(0), (n_steps + 1) * n_envs).reshape(n_steps + 1, n_envs)
    actions = np.random.default_rng(0).uniform(-1, 1, (n_steps, n_envs, 39)).astype(np.float32)
    # the copy is what rejax steps (the original adapter is the same code over the same env)
    (obs6, state6, reward6, _, _, info6), (obs5, state5, reward5, done5, info5) = _play(
        [six, copied], params, keys, actions)
    np.testing.assert_array_equal(obs5, obs6)
    np.testing.assert_array_equal(reward5, reward6)
    for x, y in zip(jax.tree.leaves(state5), jax.tree.leaves(state6)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(info5["final_observation"], info6["final_observation"])
    # 3-hour episodes: the 3rd and 6th steps end one, in every env
    assert done5.dtype == bool
    np.testing.assert_array_equal(done5, np.array([[k in (2, 5)] * n_envs for k in range(n_steps)]))


def test_legacy_step_env_and_is_terminal_count_the_episode_length():
    env, params = make_legacy_env("iquitos-38", episode_hours=2)

    @jax.jit
    def two_steps(key):
        _, state = env.reset(key, params)
        out = []
        for k in range(2):
            obs, state, _, done, _ = env.step_env(jax.random.fold_in(key, k), state, jnp.zeros(39), params)
            out.append((done, env.is_terminal(state, params), state.k, obs, env.get_obs(state, params)))
        return out

    for k, (done, terminal, steps, obs, obs_again) in enumerate(two_steps(jax.random.key(0))):
        assert bool(done) == bool(terminal) == (k == 1)
        assert int(steps) == k + 1  # no auto-reset in step_env
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(obs_again))
    _, state = env.reset(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"^action: .*\(39,\).*iquitos-38"):
        env.step(jax.random.key(0), state, np.zeros(38, np.float32), params)
