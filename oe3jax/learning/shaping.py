"""Potential-based reward shaping: what a learner adds to each reward, ``gamma * Phi(s') - Phi(s)``.

A potential ``Phi`` of the state changes which rewards come early and which late, never which
policy is best: over any trajectory the added terms telescope to ``gamma^T Phi(s_T) - Phi(s_0)``,
so every policy's discounted return moves by the same ``-Phi(s_0)`` plus a discounted end term that
the critic's bootstrap cancels (Ng, Harada and Russell, 1999). A real termination ends with
``Phi = 0``; a time limit (truncation) keeps ``Phi(s')``, as the value bootstrap does. The
environment's own rewards, returns and KPIs are untouched: only what the learner regresses on
changes.

``shaping`` (a key of each algorithm's section):

``none``
    No shaping.
``stored_energy``
    ``Phi = v * eta_discharge * E``: the battery's energy ``E`` valued at the import it will
    displace once discharged, ``v`` per kWh being what the reward pays per kWh imported in its
    ``co2`` and ``cost`` terms (``(w_co2 + w_cost * mean tariff / max tariff) / grid_ref_kw``).
    Without it, discharging is paid at once and holding energy for a later hour only through the
    critic's estimate of what the stored energy is worth, so an imperfect critic leans to
    discharging early (the greedy rule). With it, a discharge at any hour is paid the same at
    once (nothing, up to discounting), storing PV is paid when it is stored, and storing grid
    energy costs its round-trip loss at once; what then decides *when* to discharge is what the
    other terms (the demand charge) pay. EV park only (its ``soc`` observation feature).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from oe3jax.schema import ConfigError, Field

SHAPINGS = ("none", "stored_energy")

Potential = Callable[[jax.Array], jax.Array]


def config_field() -> Field:
    """The ``shaping`` key of an algorithm's config section."""
    return Field("none", str, choices=SHAPINGS,
                 help="potential-based reward shaping for learning: none, or stored_energy (the battery's "
                      "energy valued at the import it displaces; EV park only)")


def potential(kind: str, env: Any, env_params: Any, section: str = "shaping") -> Potential | None:
    """``Phi(raw obs [..., obs_dim]) -> [...]`` float32 for ``kind``, or None for ``none``."""
    if kind == "none":
        return None
    names = tuple(getattr(env, "global_features", ()))
    if "soc" not in names or not hasattr(env_params, "capacity_kwh"):
        raise ConfigError(f"{section}: 'stored_energy' needs the EV park (a battery state of charge in the "
                          f"observation); {env.name} has none; accepted here: 'none'")
    from oe3jax.simulation.scenario import REWARD_TERMS

    weights = jnp.asarray(env_params.weights, jnp.float32)
    tariff = jnp.asarray(env_params.tariff, jnp.float32)
    per_kwh = (weights[REWARD_TERMS.index("co2")]
               + weights[REWARD_TERMS.index("cost")] * jnp.mean(tariff) / jnp.max(tariff)) / env_params.grid_ref_kw
    scale = per_kwh * env_params.eta_discharge * env_params.capacity_kwh  # Phi per unit of state of charge
    index = names.index("soc")

    def phi(obs: jax.Array) -> jax.Array:
        return (scale * obs[..., index].astype(jnp.float32)).astype(jnp.float32)

    return phi


def shaped_reward(
    phi: Potential | None, reward: jax.Array, obs: jax.Array, next_obs: jax.Array, terminated: jax.Array,
    gamma: float,
) -> jax.Array:
    """``reward + gamma * (1 - terminated) * Phi(next_obs) - Phi(obs)`` (``reward`` when ``phi`` is None).

    ``next_obs`` is the observation the step ended in, before any auto-reset (a truncated
    episode's true last observation).
    """
    reward = jnp.asarray(reward, jnp.float32)
    if phi is None:
        return reward
    live = 1.0 - jnp.asarray(terminated, jnp.float32)
    return reward + gamma * live * phi(next_obs) - phi(obs)
