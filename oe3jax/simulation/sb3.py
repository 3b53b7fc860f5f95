"""Stable-Baselines3's ``VecEnv`` over the jitted, vmapped JAX environment (optional extra ``peers``).

>>> from oe3jax.simulation.vector import make_sb3_vec_env
>>> venv = make_sb3_vec_env("iquitos-128", num_envs=8)
>>> model = stable_baselines3.PPO("MlpPolicy", venv).learn(100_000)

Importing this module does not import Stable-Baselines3; :func:`sb3_vec_env_class` (and the name
``SB3VecEnv``) do, with a one-line install hint when it is missing.

The adapter is :class:`oe3jax.simulation.vector.JaxVectorEnv` seen through SB3's interface:
``reset() -> obs`` (the seeds of ``venv.seed(s)``, ``s + i`` for environment ``i``, and the options
of ``venv.set_options`` apply to the next reset, as in SB3's own vector envs); ``step_async`` /
``step_wait`` return ``(obs, rewards float32, dones, infos)`` with one info dict per environment:
``TimeLimit.truncated`` (episodes end by truncation), and where an episode ended,
``terminal_observation`` (its last observation, for bootstrapping) and ``totals`` (its KPI totals:
``return``, ``co2_kg``, ``ev_kwh``, ...). ``reset_infos`` hold each environment's ``totals`` after
its last reset, automatic ones included (as SB3's ``DummyVecEnv`` keeps them). Wrap it in SB3's
``VecMonitor`` for episode statistics.

The environments are one program, not separate objects: ``get_attr`` / ``set_attr`` /
``env_method`` reach the shared :class:`JaxVectorEnv` with one answer per index asked for
(``observation_space`` and ``action_space`` are each environment's own, as in SB3's
``DummyVecEnv``; a method runs once, on every environment, whatever the indices), and no
environment is wrapped (``env_is_wrapped`` is all False). Nothing renders: ``render()`` and
``get_images()`` give None.
"""
from __future__ import annotations

import functools
from typing import Any

INSTALL_HINT = "Stable-Baselines3 is not installed: pip install 'oe3jax[peers]' (stable-baselines3, torch)"


@functools.lru_cache(maxsize=1)
def sb3_vec_env_class() -> type:
    """The ``VecEnv`` subclass (defined on first use, once Stable-Baselines3 is importable)."""
    try:
        from stable_baselines3.common.vec_env import VecEnv
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    import numpy as np

    class SB3VecEnv(VecEnv):
        """Stable-Baselines3 ``VecEnv`` over a :class:`~oe3jax.simulation.vector.JaxVectorEnv` (see module doc)."""

        def __init__(self, venv: Any) -> None:
            self.venv = venv
            self._actions: np.ndarray | None = None
            super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

        # -------------------------------------------------------------- reset / step
        def reset(self) -> np.ndarray:
            seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
            options = self._options[0] if self._options else {}
            if any(opt != options for opt in self._options):
                raise ValueError("set_options: this vector env resets every environment with the same "
                                 "options; give one dict")
            obs, info = self.venv.reset(seed=seeds, options=options or None)
            self.reset_infos = [{"totals": _totals(info["totals"], i)} for i in range(self.num_envs)]
            self._reset_seeds()
            self._reset_options()
            return obs

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
            if self._actions is None:
                raise RuntimeError("step_wait: call step_async(actions) first")
            actions, self._actions = self._actions, None   # a step that fails leaves none behind
            obs, reward, terminated, truncated, info = self.venv.step(actions)
            dones = terminated | truncated
            infos: list[dict[str, Any]] = [{"TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
                                           for i in range(self.num_envs)]
            if dones.any():
                final = info["final_info"]["totals"]
                for i in np.flatnonzero(dones):
                    infos[i]["terminal_observation"] = info["final_obs"][i]
                    infos[i]["totals"] = _totals(final, i)
                    self.reset_infos[i] = {"totals": _totals(info["totals"], i)}  # the new episode's
            return obs, reward.astype(np.float32), dones, infos

        def close(self) -> None:
            self.venv.close()

        def get_images(self) -> list[None]:
            return [None] * self.num_envs

        # -------------------------------------------------------------- attributes of the shared env
        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            name = _PER_ENV_ATTRS.get(attr_name, attr_name)
            return [getattr(self.venv, name) for _ in self._get_indices(indices)]

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            for _ in self._get_indices(indices):
                setattr(self.venv, attr_name, value)

        def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
            answer = getattr(self.venv, method_name)(*method_args, **method_kwargs)
            return [answer for _ in self._get_indices(indices)]

        def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
            return [False for _ in self._get_indices(indices)]

    def _totals(group: dict[str, Any], i: int) -> dict[str, float]:
        return {k: float(v[i]) for k, v in group.items() if not k.startswith("_")}

    SB3VecEnv.__module__ = __name__
    return SB3VecEnv


# what one environment answers for these is the vector env's single_* attribute
_PER_ENV_ATTRS = {"observation_space": "single_observation_space", "action_space": "single_action_space"}


def __getattr__(name: str) -> Any:
    if name == "SB3VecEnv":
        return sb3_vec_env_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["INSTALL_HINT", "SB3VecEnv", "sb3_vec_env_class"]
