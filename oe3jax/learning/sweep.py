"""Hyperparameter sweeps in one program: numeric hyperparameters as leaves of the train state.

A sweep (``cfg["sweep"]``, e.g. ``{"ppo.lr": [1e-4, 3e-4], "ppo.ent_coef": [0.0, 0.01]}``) trains
every combination of the values (a grid, the first key varying slowest), each with every seed.
The rows of the train state are ``members x seeds``, member-major: row ``m * seeds + i`` is
member ``m`` with seed ``seed + i``, so every member sees the same seeds. The state of a sweep is
a :class:`SweepState`: the algorithm's own state plus ``hyper``, one float32 leaf per swept key.
The update chunk reads the swept values from the state, so one compiled program serves every
member: the algorithm builds its chunk from a configuration whose swept entries are those leaves
(traced values). An algorithm lists the keys it accepts as traced values in ``SWEEPABLE``.

Without a sweep nothing changes: the state is the algorithm's own, the configuration its own.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from flax import struct


@struct.dataclass
class SweepState:
    """The train state of one row of a sweep: the algorithm's state and the swept values."""

    train: Any
    hyper: dict[str, Any]  # "ppo.lr" -> float32 scalar (per row once vmapped)


def members(cfg: Mapping[str, Any]) -> list[dict[str, float]]:
    """The hyperparameters of every member: the grid of ``cfg["sweep"]`` (``[{}]`` without one)."""
    grid = cfg.get("sweep") or {}
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def member_label(member: Mapping[str, float]) -> str:
    """``ppo.lr=0.0003 ppo.ent_coef=0.01`` (empty without a sweep)."""
    return " ".join(f"{k}={v:g}" for k, v in member.items())


def with_values(cfg: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with each dotted key of ``values`` set (to a number or a traced value)."""
    out = dict(cfg)
    for dotted, value in values.items():
        section, key = dotted.split(".", 1)
        out[section] = {**copy.copy(out[section]), key: value}
    return out


def row_keys(cfg: Mapping[str, Any], keys: Any) -> Any:
    """The seed keys of every row: ``keys`` (one per seed) repeated for every member."""
    import jax.numpy as jnp

    return jnp.tile(keys, (len(members(cfg)), 1))


def hyper_rows(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``{key: float32[members * seeds]}``: each row's swept values."""
    import numpy as np

    seeds = int(cfg["seeds"])
    return {k: np.repeat(np.asarray([m[k] for m in members(cfg)], np.float32), seeds) for k in cfg.get("sweep") or {}}


def init_rows(init_one: Callable[[Any, Mapping[str, Any]], Any], cfg: Mapping[str, Any]) -> Callable[[Any], Any]:
    """``init(keys) -> state`` of every row (vmapped); ``init_one(key, cfg)`` initialises one.

    With a sweep, ``keys`` are those of :func:`row_keys` and every row starts from its member's
    configuration (a :class:`SweepState`).
    """
    import jax
    import jax.numpy as jnp

    if not cfg.get("sweep"):
        return jax.vmap(lambda key: init_one(key, cfg))
    hyper = hyper_rows(cfg)

    def init(keys: Any) -> SweepState:
        def one(key: Any, h: dict[str, Any]) -> SweepState:
            return SweepState(init_one(key, with_values(cfg, h)), h)

        return jax.vmap(one)(keys, {k: jnp.asarray(v) for k, v in hyper.items()})

    return init


def chunk_rows(make_chunk: Callable[[Mapping[str, Any]], Callable], cfg: Mapping[str, Any]) -> Callable:
    """The vmapped chunk of every row; ``make_chunk(cfg)`` builds the chunk of one configuration.

    With a sweep the chunk is built inside the trace, from the row's swept leaves.
    """
    import jax

    if not cfg.get("sweep"):
        return jax.vmap(make_chunk(cfg))

    def one(state: SweepState) -> tuple[SweepState, dict[str, Any]]:
        train, metrics = make_chunk(with_values(cfg, state.hyper))(state.train)
        return SweepState(train, state.hyper), metrics

    return jax.vmap(one)


def train_part(state: Any) -> Any:
    """The algorithm's own state (the :class:`SweepState`'s ``train``, or ``state`` itself)."""
    return state.train if isinstance(state, SweepState) else state
