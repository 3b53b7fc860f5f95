"""oe3jax: JAX-accelerated, vectorized SAC / PPO / A2C for an EV-charging park with PV and a battery.

Public entry points (imported on first use, so that ``import oe3jax`` stays light):

- ``make_env(scenario="iquitos-128", **overrides) -> (env, env_params)``  (oe3jax.simulation.env)
- ``load_policy(path, seed=0) -> Policy``                                 (oe3jax.training.policy)
- ``Scenario``, ``get_scenario(name)``                                    (oe3jax.simulation.scenario)
- ``make_gymnasium_env``, ``make_legacy_env``                             (oe3jax.simulation.adapters)
- ``make_vector_env``, ``make_sb3_vec_env``                               (oe3jax.simulation.vector)

Importing the package registers its Gymnasium ids (``GYMNASIUM_IDS``), e.g.
``gymnasium.make("oe3jax/EVCharging-iquitos-128-v0", episode_hours=48)`` (the NumPy env) and
``gymnasium.make_vec("oe3jax/EVCharging-iquitos-128-v0", num_envs=64)`` (the jitted, vmapped JAX
env); registration imports Gymnasium but neither JAX nor the environment (the entry points are
strings).
"""
from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# XLA's CPU runtime (jaxlib 0.10) can deadlock running the vmapped update chunk of the
# socket-shared networks under its concurrency-optimised scheduler (3, 5 or 6 seeds of the default
# PPO run waited forever with every thread idle; 4 ran). The flag only reaches XLA when it is set
# before JAX creates its CPU client, so it is set here, on import, unless the user set it already.
_XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XLA_CPU_FLAG}".strip()

_EXPORTS = {
    "make_env": "oe3jax.simulation.env",
    "load_policy": "oe3jax.training.policy",
    "Policy": "oe3jax.training.policy",
    "Scenario": "oe3jax.simulation.scenario",
    "get_scenario": "oe3jax.simulation.scenario",
    "make_gymnasium_env": "oe3jax.simulation.adapters",
    "make_legacy_env": "oe3jax.simulation.adapters",
    "make_vector_env": "oe3jax.simulation.vector",
    "make_sb3_vec_env": "oe3jax.simulation.vector",
}

# one id per scenario preset; keywords of gymnasium.make go to GymnasiumEnv
GYMNASIUM_IDS = {
    "oe3jax/EVCharging-iquitos-128-v0": "iquitos-128",
    "oe3jax/EVCharging-iquitos-38-v0": "iquitos-38",
}


def _register_gymnasium_ids() -> None:
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    for env_id, preset in GYMNASIUM_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="oe3jax.simulation.adapters:GymnasiumEnv",
                               vector_entry_point="oe3jax.simulation.vector:JaxVectorEnv",
                               kwargs={"scenario": preset})


_register_gymnasium_ids()

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'oe3jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
