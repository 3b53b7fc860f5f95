"""The park for other libraries' APIs: Gymnasium (Stable-Baselines3, CleanRL) and gymnax's old step.

- :class:`GymnasiumEnv` / :func:`make_gymnasium_env`: a ``gymnasium.Env`` over the NumPy reference
  (one environment, float32 observations). ``import oe3jax`` registers it with Gymnasium as
  ``oe3jax/EVCharging-iquitos-128-v0`` and ``oe3jax/EVCharging-iquitos-38-v0``; keywords of
  ``gymnasium.make`` are passed through (``episode_hours=48``, ``capacity_kwh=3000``).
- :class:`LegacyGymnaxEnv` / :func:`make_legacy_env`: the JAX environment behind the five-value
  step ``(obs, state, reward, done, info)`` of gymnax before 1.0, for code written against it
  (rejax, older PureJaxRL).

Importing this module does not import JAX; :func:`make_legacy_env` does.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from oe3jax.simulation.reference import ReferenceEnv
from oe3jax.simulation.scenario import HOURS_PER_YEAR, Scenario, get_scenario, is_int

if TYPE_CHECKING:  # pragma: no cover
    from oe3jax.simulation.env import EnvParams, EnvState, EVChargingEnv

# info keys that Gymnasium's wrappers and vector envs or Stable-Baselines3 write themselves (episode
# statistics, autoreset bookkeeping, time-limit flags): the environment's own info never uses them
RESERVED_INFO_KEYS = frozenset({
    "episode", "_episode", "final_info", "_final_info", "final_obs", "_final_obs",
    "terminal_observation", "TimeLimit.truncated",
})

class RenderModeError(ValueError, TypeError):
    """A render mode this environment does not have (it renders nothing).

    Also a TypeError: callers that try ``render_mode="rgb_array"`` and fall back to no render mode
    on a TypeError (Stable-Baselines3's ``make_vec_env`` and its algorithms given an env id) go on
    without one.
    """


def check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None:
        raise RenderModeError(f"render_mode: {render_mode!r}; this environment does not render (accepted: None)")


def reset_start_hour(options: Any) -> int | None:
    """The ``start_hour`` of ``reset(options=...)``, or None (the environment's own start)."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise ValueError(f"reset options: expected a dict such as {{'start_hour': 0}} or None, "
                         f"got {type(options).__name__}")
    unknown = sorted(set(options) - {"start_hour"}, key=str)
    if unknown:
        raise ValueError(f"reset options: unknown key {unknown[0]!r}; accepted: start_hour")
    h = options.get("start_hour")
    if h is not None and (not is_int(h) or not 0 <= h < HOURS_PER_YEAR):
        raise ValueError(f"reset options: start_hour = {h!r}; expected an integer in [0, {HOURS_PER_YEAR - 1}]")
    return None if h is None else int(h)


# --------------------------------------------------------------------------- Gymnasium
class GymnasiumEnv(gym.Env):
    """The park as a ``gymnasium.Env``: float32 observations, actions in Box [-1, 1]^(1 + n_sockets).

    Episodes end by truncation after ``episode_hours`` steps (never by termination).
    ``reset(options={"start_hour": h})`` starts at hour ``h``; otherwise at ``start_hour`` or, with
    ``random_start``, at midnight of a random day. Any other keyword is a Scenario field
    (``capacity_kwh=3000``, ``reward="balanced"``), as in ``oe3jax.make_env``.

    ``info`` carries the hour's ``flows`` (kWh), ``vehicles`` (counts), reward ``terms``, the
    ``reward``, the ``arrivals`` drawn and the running episode ``totals``; it leaves the keys in
    :data:`RESERVED_INFO_KEYS` to the libraries that write them (episode statistics of Gymnasium's
    ``RecordEpisodeStatistics`` and of Stable-Baselines3's monitor).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: Scenario | str = "iquitos-128",
        *,
        episode_hours: int = HOURS_PER_YEAR,
        start_hour: int = 0,
        random_start: bool = False,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        check_render_mode(render_mode)
        scn = get_scenario(scenario, **overrides)
        self.sim = ReferenceEnv(scn, episode_hours=episode_hours, start_hour=start_hour,
                                random_start=random_start)
        low, high = self._bounds()
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = spaces.Box(low=-1.0, high=1.0, shape=(self.sim.n_actions,), dtype=np.float32)
        self._reset_done = False

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature bounds of the observation, from the scenario and its profiles.

        A forecast with errors (``pv_forecast_noise_frac`` or ``mall_forecast_noise_frac`` above 0)
        is a log-normal multiple of the profile: unbounded above.
        """
        sim, scn = self.sim, self.sim.scenario
        n_fc = len(scn.forecast_offsets)
        pv_hi = max(1.0, float(sim.pv_kw.max()) / scn.pv_ac_kw) if scn.pv_forecast_noise_frac == 0 else np.inf
        mall_hi = max(1.0, float(sim.mall_kw.max()) / sim.mall_ref_kw) if scn.mall_forecast_noise_frac == 0 else np.inf
        need_hi = max(1.0, float(sim.battery_kwh.sum()) * scn.need_frac_max / sim.ev_need_ref_kwh)
        n_park = sim.n_global - 6 - 2 * n_fc  # battery, park, tariff, month-to-date peak, month elapsed
        low = np.concatenate([-np.ones(6), np.zeros(2 * n_fc + n_park), np.zeros(4 * sim.n_sockets)])
        high = np.concatenate([np.ones(6), np.full(n_fc, pv_hi), np.full(n_fc, mall_hi),
                               [1.0, 1.0, 1.0, need_hi, 1.0, 1.0, 1.0], np.ones(4 * sim.n_sockets)])
        return low.astype(np.float32), high.astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        start_hour = reset_start_hour(options)
        super().reset(seed=seed)
        self.sim.rng = self.np_random
        obs = self.sim.reset(start_hour=start_hour)
        self._reset_done = True
        return obs.astype(np.float32), {"totals": dict(self.sim.episode)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._reset_done:
            raise RuntimeError("step: call reset() first")
        obs, reward, terminated, truncated, info = self.sim.step(action)
        return obs.astype(np.float32), reward, terminated, truncated, info

    def render(self) -> None:
        """Nothing: the environment has no render mode (Gymnasium's ``render_mode=None``)."""
        return None


def make_gymnasium_env(
    scenario: Scenario | str = "iquitos-128",
    *,
    episode_hours: int = HOURS_PER_YEAR,
    start_hour: int = 0,
    random_start: bool = False,
    **overrides: Any,
) -> GymnasiumEnv:
    """A :class:`GymnasiumEnv` for a preset name or a Scenario, like ``oe3jax.make_env``: any keyword
    other than the episode options is a Scenario field (``capacity_kwh=3000``, ``reward="balanced"``).

    Equivalent to ``gymnasium.make("oe3jax/EVCharging-<preset>-v0", ...)`` without the wrappers
    that ``gymnasium.make`` adds (order enforcing, the passive checker).
    """
    return GymnasiumEnv(scenario, episode_hours=episode_hours, start_hour=start_hour,
                        random_start=random_start, **overrides)


# --------------------------------------------------------------------------- gymnax before 1.0
class LegacyGymnaxEnv:
    """The JAX environment with gymnax's five-value step, for code written before gymnax 1.0.

    ``step(key, state, action, params) -> (obs, state, reward, done, info)`` with
    ``done = terminated | truncated``; it is the six-value ``env.step`` (same auto-reset, same
    random draws, so the same transitions), with ``info["terminated"]``, ``info["truncated"]``
    and ``info["final_observation"]`` kept for bootstrapping. ``reset``, the spaces,
    ``default_params``, ``num_actions`` and ``name`` are the environment's. Works under
    ``jax.jit`` and ``jax.vmap``.

    Every method is spelled out (no attribute forwarding), so ``copy.deepcopy`` works: rejax
    deep-copies its configuration, environment included, which gymnax's ``LegacyStepAPIWrapper``
    does not survive.
    """

    def __init__(self, env: EVChargingEnv) -> None:
        self.env = env

    # ------------------------------------------------------------------ description
    @property
    def default_params(self) -> EnvParams:
        return self.env.default_params

    @property
    def name(self) -> str:
        return self.env.name

    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    def action_space(self, params: EnvParams | None = None) -> Any:
        return self.env.action_space(params)

    def observation_space(self, params: EnvParams | None = None) -> Any:
        return self.env.observation_space(params)

    # ------------------------------------------------------------------ the five-value API
    def reset(self, key: Any, params: EnvParams | None = None) -> tuple[Any, EnvState]:
        return self.env.reset(key, params)

    def step(self, key: Any, state: EnvState, action: Any, params: EnvParams | None = None):
        """``(obs, state, reward, done, info)``; auto-resets when ``done``."""
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
        return obs, state, reward, terminated | truncated, info

    def reset_env(self, key: Any, params: EnvParams) -> tuple[Any, EnvState]:
        return self.env.reset_env(key, params)

    def step_env(self, key: Any, state: EnvState, action: Any, params: EnvParams):
        """One transition without auto-reset: ``(obs, state, reward, done, info)``."""
        obs, state, reward, terminated, info = self.env.step_env(key, state, action, params)
        return obs, state, reward, terminated | self.env.is_truncated(state, params), info

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key: Any = None) -> Any:
        return self.env.get_obs(state, params)

    def is_terminal(self, state: EnvState, params: EnvParams) -> Any:
        """Whether the episode is over (by termination or by its length), as in gymnax before 1.0."""
        return self.env.is_terminated(state, params) | self.env.is_truncated(state, params)


def make_legacy_env(scenario: Scenario | str = "iquitos-128", **kwargs: Any) -> tuple[LegacyGymnaxEnv, EnvParams]:
    """``(LegacyGymnaxEnv, params)``; the arguments are those of ``oe3jax.make_env``."""
    from oe3jax.simulation.env import make_env

    env, params = make_env(scenario, **kwargs)
    return LegacyGymnaxEnv(env), params


__all__ = ["GymnasiumEnv", "LegacyGymnaxEnv", "RESERVED_INFO_KEYS", "RenderModeError", "check_render_mode",
           "make_gymnasium_env", "make_legacy_env", "reset_start_hour"]
