"""The Gymnasium vector env over the jitted, vmapped JAX env, and its Stable-Baselines3 adapter.

The reference for the vector env is Gymnasium's own ``SyncVectorEnv`` in same-step auto-reset mode
over single JAX environments stepped one at a time (``env.reset`` / ``env.step_env``, no vmap):
observations, rewards, flags and the whole info layout must agree step for step, across episode
ends.
"""
from __future__ import annotations

import sys

import gymnasium
import jax
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space
from test_reference import tiny_scenario

import oe3jax  # noqa: F401  (registers the Gymnasium ids)
from oe3jax.simulation.adapters import RESERVED_INFO_KEYS, make_gymnasium_env
from oe3jax.simulation.env import make_env
from oe3jax.simulation.vector import JaxVectorEnv, make_vector_env, seed_key_data

EPISODE = 12  # from midnight to noon: the park opens, vehicles arrive


def _scenario():
    return tiny_scenario(pv_at={t: 30.0 for t in range(8, 16)}, daily_moto=40.0, daily_taxi=12.0)


class OneJaxEnv(gymnasium.Env):
    """One JAX environment as a Gymnasium env, stepped without vmap and without auto-reset.

    Its randomness: ``reset(seed=s)`` starts from ``jax.random.key(s)``; every reset and step
    splits the key once and uses the subkey, except the reset that follows the end of an episode,
    which draws from the key of that last step (the JAX env's own auto-reset does the same).
    ``programs`` (jitted reset and step) are shared by the instances.
    """

    def __init__(self, programs, space_env):
        self.params, self._reset, self._step = programs
        self.observation_space = space_env.observation_space
        self.action_space = space_env.action_space
        self.key = None
        self.pending = None

    @staticmethod
    def programs(scenario, **kwargs):
        env, params = make_env(scenario, **kwargs)

        def step(key, state, action, params):
            obs, state, reward, terminated, info = env.step_env(key, state, action, params)
            return obs, state, reward, terminated, env.is_truncated(state, params), info

        return params, jax.jit(env.reset), jax.jit(step)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.key = jax.random.key(seed)
        if self.pending is not None and seed is None:
            sub, self.pending = self.pending, None
        else:
            self.key, sub = jax.random.split(self.key)
        obs, self.state = self._reset(sub, self.params)
        return np.asarray(obs), {"totals": _scalars(jax.device_get(self.state.totals), np.float32)}

    def step(self, action):
        self.key, sub = jax.random.split(self.key)
        obs, self.state, *rest = self._step(sub, self.state, np.asarray(action), self.params)
        reward, terminated, truncated, info = jax.device_get(rest)
        if truncated or terminated:
            self.pending = sub
        out = {"flows": _scalars(info["flows"], np.float32), "vehicles": _scalars(info["vehicles"], np.int32),
               "terms": _scalars(info["terms"], np.float32), "totals": _scalars(info["totals"], np.float32)}
        return np.asarray(obs), float(reward), bool(terminated), bool(truncated), out


def _scalars(tree, dtype):
    return {k: dtype(np.asarray(v)) for k, v in tree.items()}


@pytest.fixture(scope="module")
def pair():
    """(the vector env, Gymnasium's SyncVectorEnv of single JAX envs) over the same tiny park."""
    scn = _scenario()
    kwargs = dict(episode_hours=EPISODE, random_start=True)
    space_env = make_gymnasium_env(scn, **kwargs)
    programs = OneJaxEnv.programs(scn, **kwargs)
    sync = SyncVectorEnv([lambda: OneJaxEnv(programs, space_env) for _ in range(3)],
                         autoreset_mode=AutoresetMode.SAME_STEP)
    return make_vector_env(scn, 3, **kwargs), sync


def _same(a, b, what):
    assert data_equivalence(a, b), f"{what} differs:\n{a}\n{b}"


def test_agrees_step_for_step_with_single_jax_envs_across_episode_ends(pair):
    vec, sync = pair
    rng = np.random.default_rng(0)
    obs_v, info_v = vec.reset(seed=7)
    obs_s, info_s = sync.reset(seed=7)
    _same(obs_v, obs_s, "reset obs")
    _same(info_v, info_s, "reset infos")
    ends = 0
    for k in range(3 * EPISODE + 1):
        actions = rng.uniform(-1.2, 1.2, (3, 4)).astype(np.float32)
        out_v = vec.step(actions)
        out_s = sync.step(actions)
        for name, a, b in zip(("obs", "reward", "terminated", "truncated", "infos"), out_v, out_s):
            _same(a, b, f"step {k}: {name}")
        done = out_v[3]
        assert done.all() == ((k + 1) % EPISODE == 0) and (done.all() or not done.any())
        if done.any():
            ends += 1
            # the next episode starts at midnight of a random day, from its first observation
            assert {"final_obs", "final_info", "totals"} <= set(out_v[4]) and "flows" not in out_v[4]
            assert not np.array_equal(out_v[0], np.stack(out_v[4]["final_obs"]))
            totals = out_v[4]["final_info"]["totals"]
            assert np.all(totals["vehicles_arrived"] > 0)
    assert ends == 3
    # reset without a seed carries on from the current keys, in both
    _same(vec.reset()[0], sync.reset()[0], "unseeded reset obs")


def test_episode_totals_are_the_sums_of_the_steps(pair):
    """final_info["totals"] = the reset's totals plus the sums of the episode's steps (hand sums)."""
    vec, _ = pair
    _, info = vec.reset(seed=3)
    start = {k: v.astype(np.float64) for k, v in info["totals"].items() if not k.startswith("_")}
    rewards, grid, ev, arrived = 0.0, 0.0, 0.0, start["vehicles_arrived"].copy()
    for _ in range(EPISODE):
        _, reward, _, truncated, info = vec.step(np.ones((3, 4), np.float32))
        rewards = rewards + reward
        flows = info.get("final_info", info)["flows"]
        grid = grid + flows["grid_import"]
        ev = ev + flows["ev_kwh"]
        arrived = arrived + info.get("final_info", info)["vehicles"]["arrived"]
    assert truncated.all()
    final = info["final_info"]["totals"]
    np.testing.assert_allclose(final["return"], rewards, rtol=1e-5)
    np.testing.assert_allclose(final["grid_kwh"], grid, rtol=1e-5)
    np.testing.assert_allclose(final["ev_kwh"], ev, rtol=1e-5)
    np.testing.assert_array_equal(final["vehicles_arrived"], arrived)
    # the new episodes' totals hold only their first hour's arrivals
    assert (info["totals"]["return"] == 0).all() and (info["totals"]["ev_kwh"] == 0).all()


def test_spaces_seeding_and_gymnasium_wrappers(pair):
    vec, _ = pair
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert vec.observation_space == batch_space(vec.single_observation_space, 3)
    assert vec.action_space == batch_space(vec.single_action_space, 3)
    assert vec.single_action_space.shape == (4,) and vec.single_observation_space.shape == (25 + 12,)
    obs5, _ = vec.reset(seed=5)
    obs_list, _ = vec.reset(seed=[5, 6, 7])
    np.testing.assert_array_equal(obs5, obs_list)
    obs_mixed, _ = vec.reset(seed=[9, 6, None])
    assert not np.array_equal(obs_mixed[0], obs5[0]) and np.array_equal(obs_mixed[1], obs5[1])
    assert vec.observation_space.contains(obs5)
    vec.action_space.seed(0)
    for _ in range(2 * EPISODE):
        obs, _, _, _, infos = vec.step(vec.action_space.sample())
        assert vec.observation_space.contains(obs), obs
        assert not (RESERVED_INFO_KEYS - {"final_obs", "_final_obs", "final_info", "_final_info"}) & set(infos)

    # Gymnasium's statistics wrapper: the first episode of each env (later ones it counts with
    # next-step auto-reset in mind)
    stats = gymnasium.wrappers.vector.RecordEpisodeStatistics(vec)
    stats.reset(seed=1)
    total = np.zeros(3)
    for _ in range(EPISODE):
        _, reward, _, _, infos = stats.step(np.zeros((3, 4), np.float32))
        total += reward
    np.testing.assert_array_equal(infos["episode"]["l"], [EPISODE] * 3)
    np.testing.assert_allclose(infos["episode"]["r"], total)
    np.testing.assert_allclose(infos["final_info"]["totals"]["return"], total, rtol=1e-5)



def test_make_vec_uses_the_jax_env_and_keys_follow_the_seed():
    envs = gymnasium.make_vec("oe3jax/EVCharging-iquitos-38-v0", num_envs=2, episode_hours=24)
    assert isinstance(envs, JaxVectorEnv) and envs.num_envs == 2
    assert envs.spec.id == "oe3jax/EVCharging-iquitos-38-v0"
    assert envs.single_action_space.shape == (39,) and envs.observation_space.shape == (2, 25 + 38 * 4)
    obs, _ = envs.reset(seed=11, options={"start_hour": 100})
    env, params = make_env("iquitos-38", episode_hours=24, start_hour=100)
    for i in range(2):  # env i starts from split(key(11 + i))[1], like the single JAX env
        expected, _ = env.reset(jax.random.split(jax.random.key(11 + i))[1], params)
        np.testing.assert_array_equal(obs[i], np.asarray(expected))
    # seeds are 64-bit: (high word, low word) of the threefry key
    np.testing.assert_array_equal(seed_key_data([5, 2**32 + 7, 2**64 - 1]),
                                  [[0, 5], [1, 7], [2**32 - 1, 2**32 - 1]])
    np.testing.assert_array_equal(seed_key_data([123])[0], np.asarray(jax.random.key_data(jax.random.key(123))))


def test_make_vec_passes_max_episode_steps_as_gymnasium_make_does():
    """``make_vec(..., max_episode_steps=k)`` hands k to the vector env; episodes end after
    min(episode_hours, k) steps, as ``make`` ends them with its TimeLimit."""
    envs = gymnasium.make_vec("oe3jax/EVCharging-iquitos-38-v0", num_envs=2, episode_hours=24, max_episode_steps=3)
    single = gymnasium.make("oe3jax/EVCharging-iquitos-38-v0", episode_hours=24, max_episode_steps=3)
    envs.reset(seed=0)
    single.reset(seed=0)
    for k in range(3):
        _, _, _, truncated, _ = envs.step(np.zeros((2, 39), np.float32))
        assert truncated.tolist() == [k == 2] * 2 and single.step(np.zeros(39, np.float32))[3] == (k == 2)
    longer = make_vector_env("iquitos-38", 2, episode_hours=2, max_episode_steps=5)  # the same program
    longer.reset(seed=0)
    assert [longer.step(np.zeros((2, 39), np.float32))[3].all() for _ in range(2)] == [False, True]
    assert make_vector_env(_scenario(), 3, episode_hours=2, max_episode_steps=-1).params.max_steps_in_episode == 2
    with pytest.raises(ValueError, match=r"^max_episode_steps: expected an integer >= 1 \(or None or -1: no limit\), "
                                         r"got 0$"):
        make_vector_env(_scenario(), 3, max_episode_steps=0)


def test_bad_inputs_get_one_line_errors(pair):
    vec, _ = pair
    with pytest.raises(ValueError, match=r"^num_envs: expected an integer >= 1, got 0$"):
        JaxVectorEnv(_scenario(), 0)
    with pytest.raises(MemoryError, match=r"^num_envs: 1000000000000 environments do not fit in memory "
                                          r"\(their observation bounds alone take .* GiB\)$"):
        JaxVectorEnv(_scenario(), 10**12)
    with pytest.raises(ValueError, match=r"^render_mode"):
        JaxVectorEnv("iquitos-38", 1, render_mode="human")
    # also a TypeError: Stable-Baselines3 tries render_mode="rgb_array" and falls back on a TypeError
    with pytest.warns(UserWarning, match="render_mode"), \
            pytest.raises(TypeError, match=r"^render_mode: 'rgb_array'; this environment does not render"):
        gymnasium.make("oe3jax/EVCharging-iquitos-38-v0", render_mode="rgb_array")
    fresh = JaxVectorEnv(_scenario(), 3, episode_hours=EPISODE)
    with pytest.raises(RuntimeError, match=r"^step: call reset\(\) first"):
        fresh.step(np.zeros((3, 4)))
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"^actions: expected shape \(3, 4\) .*'tiny', got \(4,\)"):
        vec.step(np.zeros(4))
    with pytest.raises(TypeError, match=r"^actions: expected real numbers"):
        vec.step(np.full((3, 4), "a"))
    with pytest.raises(TypeError, match=r"^actions: expected real numbers of shape \(3, 4\) .*, got NoneType$"):
        vec.step(None)
    assert vec.render() is None  # no render mode: nothing computed, as Gymnasium defines it
    with pytest.raises(ValueError, match=r"^seed: expected an integer in \[0, 2\*\*64 - 1\]"):
        vec.reset(seed=-1)
    with pytest.raises(ValueError, match=r"^seed: expected one seed per environment \(3\), got 2"):
        vec.reset(seed=[1, 2])
    with pytest.raises(ValueError, match=r"^reset options: unknown key 'start'; accepted: start_hour"):
        vec.reset(options={"start": 1})
    with pytest.raises(ValueError, match=r"^reset options: start_hour = 9000"):
        vec.reset(options={"start_hour": 9000})
    with pytest.raises(ValueError, match=r"^reset options: expected a dict such as \{'start_hour': 0\} or None, "
                                         r"got int$"):
        vec.reset(options=5)
    # start_hour None is the environment's own start, as in the single env; a 0-d seed array its integer
    np.testing.assert_array_equal(vec.reset(seed=np.array(4), options={"start_hour": None})[0], vec.reset(seed=4)[0])
    # NaN and out-of-range actions are the env's to handle (NaN -> 0, clipped), as in the single env
    obs, reward, *_ = vec.step(np.full((3, 4), np.nan))
    assert np.isfinite(obs).all() and np.isfinite(reward).all()


# --------------------------------------------------------------------------- Stable-Baselines3
def test_sb3_adapter_without_sb3_names_the_extra(monkeypatch):
    import oe3jax.simulation.sb3 as sb3

    sb3.sb3_vec_env_class.cache_clear()
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    monkeypatch.setitem(sys.modules, "stable_baselines3.common.vec_env", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'oe3jax\[peers\]'"):
            sb3.sb3_vec_env_class()
        with pytest.raises(ImportError, match="oe3jax\\[peers\\]"):
            sb3.SB3VecEnv  # noqa: B018
    finally:
        sb3.sb3_vec_env_class.cache_clear()


def test_sb3_vec_env_matches_the_vector_env_and_trains(pair):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import VecEnv, VecMonitor

    from oe3jax.simulation.vector import make_sb3_vec_env

    vec, _ = pair
    venv = make_sb3_vec_env(_scenario(), 3, episode_hours=EPISODE, random_start=True)
    assert isinstance(venv, VecEnv) and venv.num_envs == 3
    assert venv.observation_space == vec.single_observation_space and venv.action_space == vec.single_action_space
    assert venv.get_attr("render_mode") == [None] * 3 and venv.env_is_wrapped(VecMonitor) == [False] * 3
    assert venv.seed(21) == [21, 22, 23]
    # each environment's own spaces, as SB3's DummyVecEnv answers
    assert venv.get_attr("action_space", [0, 2]) == [vec.single_action_space] * 2
    assert venv.get_attr("observation_space", 1) == [vec.single_observation_space]
    # a step that failed (before any reset) leaves no actions behind for the next step_wait
    with pytest.raises(RuntimeError, match=r"^step: call reset\(\) first"):
        venv.step(np.zeros((3, 4), np.float32))
    with pytest.raises(RuntimeError, match=r"^step_wait: call step_async\(actions\) first"):
        venv.step_wait()
    assert venv.get_images() == [None] * 3 and venv.env_method("render") == [None] * 3
    obs = venv.reset()
    obs_vec, _ = vec.reset(seed=21)
    np.testing.assert_array_equal(obs, obs_vec)
    assert venv.reset_infos[1]["totals"]["vehicles_arrived"] == pytest.approx(
        float(vec.reset(seed=21)[1]["totals"]["vehicles_arrived"][1]))
    vec.reset(seed=21)
    # a method of the shared env runs once, however many environments are named: every environment
    # is reset once (obs of the next reset follow on from one split of the keys, not three)
    venv.seed(21)
    venv.reset()
    answers = venv.env_method("reset", indices=[0, 1, 2])
    assert len(answers) == 3 and answers[0] is answers[2]
    vec.reset()
    np.testing.assert_array_equal(venv.reset(), vec.reset()[0])
    venv.seed(21)
    venv.reset()
    vec.reset(seed=21)
    venv.reset_infos = [{} for _ in range(3)]  # what the episode ends write there, not the reset before
    rng = np.random.default_rng(1)
    for k in range(EPISODE):
        actions = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
        obs, reward, dones, infos = venv.step(actions)
        obs_v, reward_v, _, truncated_v, info_v = vec.step(actions)
        np.testing.assert_array_equal(obs, obs_v)
        assert reward.dtype == np.float32 and dones.dtype == bool
        np.testing.assert_allclose(reward, reward_v, rtol=1e-6)
        np.testing.assert_array_equal(dones, truncated_v)
        assert [i["TimeLimit.truncated"] for i in infos] == list(truncated_v)
    for i in range(3):  # the episode ended: SB3 bootstraps from terminal_observation
        np.testing.assert_array_equal(infos[i]["terminal_observation"], info_v["final_obs"][i])
        assert infos[i]["totals"]["return"] == pytest.approx(float(info_v["final_info"]["totals"]["return"][i]))
        # the automatic reset's info, as DummyVecEnv keeps it: the new episode's totals
        assert venv.reset_infos[i] == {"totals": {k: float(v[i]) for k, v in info_v["totals"].items()
                                                  if not k.startswith("_")}}

    monitored = VecMonitor(make_sb3_vec_env(_scenario(), 2, episode_hours=EPISODE))
    monitored.seed(0)
    monitored.reset()
    sums = np.zeros(2)
    for _ in range(EPISODE):
        _, reward, dones, infos = monitored.step(np.zeros((2, 4), np.float32))
        sums += reward
    assert dones.all()
    assert [i["episode"]["l"] for i in infos] == [EPISODE] * 2
    np.testing.assert_allclose([i["episode"]["r"] for i in infos], sums, rtol=1e-5)

    # an env id works too (the NumPy env; SB3 falls back from render_mode="rgb_array")
    assert PPO("MlpPolicy", "oe3jax/EVCharging-iquitos-38-v0", device="cpu").env.num_envs == 1

    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=6, n_epochs=1, seed=0, device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=24)
    assert model.num_timesteps == 24
