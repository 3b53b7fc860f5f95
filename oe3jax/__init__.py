"""oe3jax: JAX-accelerated, vectorized SAC / PPO / A2C for an EV-charging park with PV and a battery.

Public entry points (imported on first use, so that ``import oe3jax`` stays light):

- ``make_env(scenario="iquitos-128", **overrides) -> (env, env_params)``  (oe3jax.simulation.env)
- ``load_policy(path, seed=0) -> Policy``                                 (oe3jax.training.policy)
- ``Scenario``, ``get_scenario(name)``                                    (oe3jax.simulation.scenario)
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "make_env": "oe3jax.simulation.env",
    "load_policy": "oe3jax.training.policy",
    "Policy": "oe3jax.training.policy",
    "Scenario": "oe3jax.simulation.scenario",
    "get_scenario": "oe3jax.simulation.scenario",
}

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
