"""The jitted, vmapped JAX environment as a Gymnasium vector env: NumPy in, NumPy out.

>>> envs = JaxVectorEnv("iquitos-128", num_envs=64)                   # or:
>>> envs = gymnasium.make_vec("oe3jax/EVCharging-iquitos-128-v0", num_envs=64)
>>> obs, infos = envs.reset(seed=0)                                   # obs: float32 (64, 537)
>>> obs, rewards, terminated, truncated, infos = envs.step(actions)  # actions: (64, 129)

One call of :meth:`JaxVectorEnv.step` is one compiled program over every environment
(``jax.jit`` of :func:`~oe3jax.simulation.env.batched_step`: ``env.step`` over the environments),
compiled once per scenario and number of environments.
Stable-Baselines3 users take :func:`make_sb3_vec_env` (the same program behind SB3's ``VecEnv``).

**Auto-reset: same step** (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``). The JAX
environment resets an environment inside the step that ends its episode, with the random draw of
that step, so the observation returned for it is the first of the next episode and the last
observation of the finished one is in ``infos["final_obs"]`` (with the step's info in
``infos["final_info"]``), exactly as Gymnasium's ``SyncVectorEnv(autoreset_mode=SAME_STEP)``
arranges them. This is the convention Stable-Baselines3 (``terminal_observation``) and CleanRL
(``next_obs`` is already the new episode's) are written for; it never spends a call on a reset
step. Gymnasium 1.3's vector wrappers that assume next-step auto-reset (``NormalizeObservation``
refuses any other mode; ``RecordEpisodeStatistics`` counts every episode after the first one step
short) do not fit it; the finished episode's own totals (``return``, ``co2_kg``, ...) are in
``infos["final_info"]["totals"]``.

**Infos** (Gymnasium's vector layout: a dict of arrays, each key with a boolean mask ``_key``):
``flows`` (the hour's energy flows, kWh), ``vehicles`` (counts), ``terms`` (reward terms) of the
step, and ``totals`` (the running episode totals; for an environment that was just reset, those of
its new episode, as after :meth:`reset`). The keys other libraries write (``episode``, ...) stay
free. Every episode ends by truncation after ``episode_hours`` steps.

**Seeding**, as Gymnasium defines it: ``reset(seed=s)`` gives environment ``i`` the seed
``s + i`` (a list gives one seed per environment); its PRNG key is ``jax.random.key(s + i)`` (the
threefry key of the 64-bit seed). Each reset and each step splits every environment's key once and
uses the new subkey; ``reset()`` without a seed carries on from the current keys (or from fresh
entropy the first time).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from oe3jax.simulation.adapters import GymnasiumEnv, check_render_mode, reset_start_hour
from oe3jax.simulation.env import batched_step, make_env
from oe3jax.simulation.scenario import HOURS_PER_YEAR, Scenario, is_int

#: the info groups of a step, in the order they are packed
STEP_INFO_GROUPS = ("flows", "vehicles", "terms", "totals")
_SEED_MAX = 2**64 - 1


# --------------------------------------------------------------------------- compiled programs
@dataclasses.dataclass(frozen=True)
class _EnvKey:
    """Compiled programs are shared by environments of equal scenarios (the env's arrays are in params)."""

    kind: type
    key: Any
    env: Any = dataclasses.field(compare=False, hash=False)


@dataclasses.dataclass(frozen=True)
class _Programs:
    reset: Any      # (key_data[n, 2], params) -> (key_data, obs, states, packed totals[K, n])
    step: Any       # (key_data, states, actions[n, A], params) -> (key_data, states, obs, packed[K, n], final_obs)
    columns: tuple[tuple[str, str], ...]         # (group, name) of each row of the packed step outputs
    total_names: tuple[str, ...]                 # the rows of the packed totals after a reset


def _programs(env: Any, num_envs: int) -> _Programs:
    try:
        return _build_programs(_EnvKey(type(env), env.scenario, env), num_envs)
    except TypeError:  # a scenario holding an unhashable profile array: cache per object
        return _build_programs(_EnvKey(type(env), id(env), env), num_envs)


def _split(key_data: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split every environment's key once: (carried key data, subkeys)."""
    keys = jax.random.wrap_key_data(key_data, impl="threefry2x32")
    pairs = jax.vmap(jax.random.split)(keys)
    return jax.random.key_data(pairs[:, 0]), pairs[:, 1]


@functools.lru_cache(maxsize=16)
def _build_programs(env_key: _EnvKey, num_envs: int) -> _Programs:
    """The jitted reset and step over ``num_envs`` environments.

    Everything a step returns but the observations comes back as one float32 array ``[K, n]``
    (reward, the two flags, every info value, the finished episodes' totals): one transfer per
    step instead of one per value.
    """
    env = env_key.env
    params = env.default_params
    key = jax.random.key(0)
    _, state = jax.eval_shape(env.reset, key, params)
    info = jax.eval_shape(env.step, key, state, jnp.zeros(env.num_actions, jnp.float32), params)[5]
    total_names = tuple(info["totals"])
    columns = (("", "reward"), ("", "terminated"), ("", "truncated"),
               *((g, k) for g in STEP_INFO_GROUPS for k in info[g]),
               *(("final_totals", k) for k in total_names))

    def reset(key_data, params):
        key_data, subs = _split(key_data)
        obs, states = jax.vmap(env.reset, (0, None))(subs, params)
        totals = jnp.stack([states.totals[k].astype(jnp.float32) for k in total_names])
        return key_data, obs, states, totals

    def step(key_data, states, actions, params):
        key_data, subs = _split(key_data)
        before = states
        obs, states, reward, terminated, truncated, info = batched_step(env)(subs, before, actions, params)
        # the last observation of an ending episode, computed only on a step where one ends (a branch
        # of the whole batch; the step's own final_observation would cost an observation every step)
        final_obs = jax.lax.cond(
            jnp.any(terminated | truncated),
            lambda: jax.vmap(env.step_env, (0, 0, 0, None))(subs, before, actions, params)[0],
            lambda: jnp.zeros_like(obs))
        # the step's totals are the finished episode's where it ended; states.totals the new one's
        values = {"": {"reward": reward, "terminated": terminated, "truncated": truncated},
                  **{g: info[g] for g in ("flows", "vehicles", "terms")},
                  "totals": states.totals, "final_totals": info["totals"]}
        packed = jnp.stack([values[g][k].astype(jnp.float32) for g, k in columns])
        return key_data, states, obs, packed, final_obs

    return _Programs(reset=jax.jit(reset), step=jax.jit(step), columns=columns, total_names=total_names)


# --------------------------------------------------------------------------- seeds
def seed_key_data(seeds: Any) -> np.ndarray:
    """Threefry key data ``uint32[n, 2]`` of non-negative integer seeds: (high word, low word),
    the key of ``jax.random.key(seed)`` (for seeds below 2**32 whatever JAX's integer width)."""
    out = np.empty((len(seeds), 2), np.uint32)
    for i, s in enumerate(seeds):
        s = int(s)
        out[i] = ((s >> 32) & 0xFFFFFFFF, s & 0xFFFFFFFF)
    return out


def _check_seed(seed: Any, where: str) -> int:
    if not is_int(seed) or not 0 <= int(seed) <= _SEED_MAX:
        raise ValueError(f"{where}: expected an integer in [0, 2**64 - 1] or None, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------- the vector env
class JaxVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` parks stepped as one jitted, vmapped JAX program (see the module doc).

    Arguments as :class:`oe3jax.simulation.adapters.GymnasiumEnv`: a preset name or Scenario,
    ``episode_hours``, ``start_hour``, ``random_start`` and Scenario fields as keywords
    (``capacity_kwh=3000``). Spaces: ``single_observation_space`` and ``single_action_space`` are
    those of the single Gymnasium env; ``observation_space`` / ``action_space`` their batches.
    Observations are float32 ``(num_envs, obs_dim)``, rewards float64, flags bool ``(num_envs,)``.
    ``max_episode_steps`` (what ``gymnasium.make_vec`` passes on) ends episodes after
    ``min(episode_hours, max_episode_steps)`` steps, as ``gymnasium.make``'s TimeLimit ends them;
    None or -1: no limit.
    ``reset(options={"start_hour": h})`` starts every environment at hour ``h`` (later automatic
    resets follow ``start_hour`` / ``random_start`` again).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        scenario: Scenario | str = "iquitos-128",
        num_envs: int = 8,
        *,
        episode_hours: int = HOURS_PER_YEAR,
        start_hour: int = 0,
        random_start: bool = False,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        **overrides: Any,
    ) -> None:
        if not is_int(num_envs) or num_envs < 1:
            raise ValueError(f"num_envs: expected an integer >= 1, got {num_envs!r}")
        check_render_mode(render_mode)
        if max_episode_steps is not None and max_episode_steps != -1:
            if not is_int(max_episode_steps) or max_episode_steps < 1:
                raise ValueError("max_episode_steps: expected an integer >= 1 (or None or -1: no limit), "
                                 f"got {max_episode_steps!r}")
            if is_int(episode_hours):
                episode_hours = min(episode_hours, int(max_episode_steps))
        self.env, self.params = make_env(scenario, episode_hours=episode_hours, random_start=random_start,
                                         start_hour=start_hour, **overrides)
        single = GymnasiumEnv(self.env.scenario, episode_hours=episode_hours, start_hour=start_hour,
                              random_start=random_start)
        obs_dim = self.env.obs_layout.size
        if single.observation_space.shape != (obs_dim,):  # pragma: no cover - the two envs share the layout
            raise RuntimeError(f"observation: the JAX env has {obs_dim} features, the Gymnasium env "
                               f"{single.observation_space.shape}")
        self.num_envs = int(num_envs)
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        try:
            self.observation_space = batch_space(self.single_observation_space, self.num_envs)
            self.action_space = batch_space(self.single_action_space, self.num_envs)
        except MemoryError:
            gib = 2 * 4 * obs_dim * self.num_envs / 2**30
            raise MemoryError(f"num_envs: {self.num_envs} environments do not fit in memory "
                              f"(their observation bounds alone take {gib:,.0f} GiB)") from None
        self.scenario = self.env.scenario
        self._programs = _programs(self.env, self.num_envs)
        self._key_data: Any = None   # uint32[n, 2] on the device, None before the first reset
        self._states: Any = None

    # ------------------------------------------------------------------ reset
    def _seeds(self, seed: Any) -> list[int | None] | None:
        if seed is None:
            return None
        if isinstance(seed, (list, tuple, np.ndarray)):
            if len(seed) != self.num_envs:
                raise ValueError(f"seed: expected one seed per environment ({self.num_envs}), got {len(seed)}")
            return [None if s is None else _check_seed(s, "seed") for s in seed]
        s = _check_seed(seed, "seed")
        if s + self.num_envs - 1 > _SEED_MAX:
            raise ValueError(f"seed: expected an integer in [0, 2**64 - num_envs], got {seed!r}")
        return [s + i for i in range(self.num_envs)]

    def _reset_params(self, options: dict[str, Any] | None) -> Any:
        h = reset_start_hour(options)
        if h is None:
            return self.params
        return self.params.replace(start_hour=jnp.asarray(h, jnp.int32), random_start=jnp.asarray(False))

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, np.ndarray) and seed.ndim == 0:
            seed = seed.item()   # np.array(5): the seed 5
        seeds = self._seeds(seed)
        params = self._reset_params(options)
        if is_int(seed):
            super().reset(seed=int(seed))  # Gymnasium's np_random, as other vector envs seed it
        if self._key_data is None:
            fresh = np.random.SeedSequence().generate_state(2 * self.num_envs, np.uint32).reshape(-1, 2)
            current = fresh
        else:
            current = np.asarray(self._key_data)
        if seeds is not None:
            given = [i for i, s in enumerate(seeds) if s is not None]
            current = current.copy()
            current[given] = seed_key_data([seeds[i] for i in given])
        self._key_data, obs, self._states, totals = self._programs.reset(jnp.asarray(current), params)
        obs, totals = jax.device_get((obs, totals))
        every = np.ones(self.num_envs, bool)
        group = self._group(dict(zip(self._programs.total_names, totals)), every)
        return np.array(obs), {"totals": group, "_totals": every}

    # ------------------------------------------------------------------ step
    def _check_actions(self, actions: Any) -> np.ndarray:
        try:
            a = np.asarray(actions)
        except (TypeError, ValueError):
            a = None
        shape = (self.num_envs, self.env.num_actions)
        if a is None or a.dtype.kind not in "biuf":
            raise TypeError(f"actions: expected real numbers of shape {shape} (num_envs, 1 + n_sockets) for "
                            f"scenario {self.scenario.name!r}, got {type(actions).__name__}"
                            + ("" if a is None or a.ndim == 0 else f" of dtype {a.dtype}"))
        if a.shape != shape:
            raise ValueError(f"actions: expected shape {shape} (num_envs, 1 + n_sockets) for scenario "
                             f"{self.scenario.name!r}, got {a.shape}")
        return a.astype(np.float32, copy=False)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._states is None:
            raise RuntimeError("step: call reset() first")
        a = self._check_actions(actions)
        self._key_data, self._states, obs, packed, final_obs = self._programs.step(
            self._key_data, self._states, a, self.params)
        obs, packed = jax.device_get((obs, packed))
        rows: dict[str, dict[str, np.ndarray]] = {}
        for (group, name), row in zip(self._programs.columns, packed):
            rows.setdefault(group, {})[name] = row
        reward = rows[""]["reward"].astype(np.float64)
        terminated, truncated = rows[""]["terminated"] > 0, rows[""]["truncated"] > 0
        done = terminated | truncated
        live = ~done
        every = np.ones(self.num_envs, bool)
        infos: dict[str, Any] = {}
        if live.any():
            for group in ("flows", "vehicles", "terms"):
                infos[group] = self._group(rows[group], live)
                infos["_" + group] = live.copy()
        infos["totals"] = self._group(rows["totals"], every)  # the new episode's where one was reset
        infos["_totals"] = every
        if done.any():
            final_obs = np.asarray(jax.device_get(final_obs))
            last = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                last[i] = np.array(final_obs[i])
            final_info: dict[str, Any] = {}
            for group in STEP_INFO_GROUPS:
                final_info[group] = self._group(rows["final_totals" if group == "totals" else group], done)
                final_info["_" + group] = done.copy()
            infos["final_obs"], infos["_final_obs"] = last, done.copy()
            infos["final_info"], infos["_final_info"] = final_info, done.copy()
        return np.array(obs), reward, terminated, truncated, infos

    @staticmethod
    def _group(values: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
        """One info group in Gymnasium's vector layout: each value where ``mask``, else 0, and ``_name``
        (one read-only mask array shared by the group's names)."""
        shared = mask.copy()
        shared.flags.writeable = False
        full = bool(mask.all())
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name in _INT_INFO:
                value = value.astype(np.int32)
            out[name] = value.copy() if full else np.where(mask, value, np.zeros((), value.dtype))
            out["_" + name] = shared
        return out

    def render(self) -> None:
        """Nothing: the environment has no render mode (Gymnasium's ``render_mode=None``)."""
        return None

    def close_extras(self, **kwargs: Any) -> None:
        self._states = None
        self._key_data = None


# vehicle counts are integers (the JAX env carries them as float32, exactly)
_INT_INFO = frozenset({"arrived", "admitted", "rejected", "departed", "served"})


def make_vector_env(
    scenario: Scenario | str = "iquitos-128",
    num_envs: int = 8,
    *,
    episode_hours: int = HOURS_PER_YEAR,
    start_hour: int = 0,
    random_start: bool = False,
    **overrides: Any,
) -> JaxVectorEnv:
    """A :class:`JaxVectorEnv` (arguments as :func:`oe3jax.make_gymnasium_env`, plus ``num_envs``)."""
    return JaxVectorEnv(scenario, num_envs, episode_hours=episode_hours, start_hour=start_hour,
                        random_start=random_start, **overrides)


def make_sb3_vec_env(
    scenario: Scenario | str = "iquitos-128",
    num_envs: int = 8,
    **kwargs: Any,
) -> Any:
    """The same vectorised JAX env as a Stable-Baselines3 ``VecEnv`` (needs ``pip install 'oe3jax[peers]'``).

    See :class:`oe3jax.simulation.sb3.SB3VecEnv`.
    """
    from oe3jax.simulation.sb3 import sb3_vec_env_class

    return sb3_vec_env_class()(make_vector_env(scenario, num_envs, **kwargs))


__all__ = ["JaxVectorEnv", "STEP_INFO_GROUPS", "make_sb3_vec_env", "make_vector_env", "seed_key_data"]
