"""Training algorithms. Each module (ppo, a2c, sac) implements the same small interface.

The interface (module-level names), used by the training loop (:mod:`oe3jax.training.loop`):

``NAME: str``
    ``"ppo"``, ``"a2c"`` or ``"sac"``; also the name of the algorithm's config section.
``CONFIG_SPEC: dict[str, oe3jax.schema.Field]``
    The keys of the algorithm's own config section (``cfg[NAME]``), with defaults and ranges.
``env_steps_per_update(cfg) -> tuple[int, int]``
    ``(num_envs, steps_per_env)``: one update consumes ``num_envs * steps_per_env`` env steps.
``init(key, env, env_params, cfg) -> TrainState``
    The whole train state of ONE seed, a pytree of arrays only (params, optimizer states,
    target networks, env states, last observations, PRNG key *data* (uint32, never typed keys),
    observation-normaliser statistics, counters, and for SAC the replay buffer). The runner
    vmaps it over seeds and saves it whole with Orbax.
``make_update_chunk(env, env_params, cfg, num_updates) -> chunk``
    ``chunk(state) -> (state, metrics)``: a pure function (not yet jitted; the runner jits and
    vmaps it) that ``lax.scan``s ``num_updates`` updates. ``metrics`` is a dict of float32
    scalars reduced over the chunk (means over updates), with at least the keys of
    :data:`METRIC_KEYS`.
``make_policy(env, env_params, cfg) -> act``
    ``act(policy_params, obs) -> action``: the deterministic action for one observation,
    jittable and vmappable; ``policy_params`` is what :func:`policy_params` returns.
``policy_params(state) -> pytree``
    The part of the train state that acting needs (actor parameters, normaliser statistics).

``cfg`` is the whole resolved configuration (see :mod:`oe3jax.training.config`), so an algorithm reads
``cfg[NAME]``, ``cfg["network"]`` and ``cfg["precision"]``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

ALGORITHMS = ("sac", "ppo", "a2c")

# Keys every chunk's metrics carry (float32 scalars). Episode keys are sums over the episodes
# that ended inside the chunk; ``episodes`` counts them, so means are sum / episodes.
METRIC_KEYS = (
    "reward_avg",      # mean reward per env step over the chunk
    "actor_loss",
    "critic_loss",
    "entropy",         # policy entropy (SAC: also reports ``alpha``)
    "lr",
    "episodes",        # number of episodes that ended in the chunk
    "ep_return",       # sum of the returns of those episodes
    "ep_co2_kg",       # sum of their annual CO2 (kg)
    "ep_grid_kwh",     # sum of their grid import (kWh)
    "ep_unmet_kwh",    # sum of their unmet EV energy (kWh)
)


def get(name: str) -> ModuleType:
    """The algorithm module by name, with a one-line error for an unknown name."""
    if name not in ALGORITHMS:
        raise ValueError(f"algo: unknown algorithm {name!r}; accepted: {', '.join(ALGORITHMS)}")
    return importlib.import_module(f"oe3jax.learning.{name}")


def seed_keys(cfg: Mapping[str, Any]) -> Any:
    """Raw uint32 PRNG key data of every seed: run i uses ``PRNGKey(seed + i)``.

    Seed i of a vmapped run therefore starts exactly like a one-seed run with ``seed + i``.
    """
    import jax
    import jax.numpy as jnp

    return jnp.stack([jax.random.PRNGKey(cfg["seed"] + i) for i in range(cfg["seeds"])])


def init_seeds(algo: Any, env: Any, env_params: Any, cfg: Mapping[str, Any]) -> Callable:
    """``init(keys) -> state`` of an algorithm with a leading seed axis."""
    import jax

    return jax.vmap(lambda key: algo.init(key, env, env_params, cfg))
