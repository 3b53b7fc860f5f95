"""The learners: SAC, PPO and A2C, each one module that satisfies :class:`Algorithm`.

Modules, from the bottom up:

``networks``   actor, critic and Q networks (plain MLP or socket-shared) and the Gaussian policy
               distributions they feed;
``precision``  compute dtype of the networks and dynamic loss scaling for float16;
``gradient``   the gradient step of every learner: loss scaling, non-finite steps skipped and
               counted (``nonfinite_skips``) in every precision;
``normalize``  running observation statistics and the normalisation applied to observations;
``stepping``   stepping ``num_envs`` environments with episode accounting, PRNG key helpers;
``buffer``     SAC's replay buffer, a pytree inside the train state;
``onpolicy``   what PPO and A2C share: train state, collecting trajectories, GAE, update chunk;
``ppo``, ``a2c``, ``sac``   one file per algorithm;
``policy``     a trained deterministic policy made from a train state;
``sweep``      hyperparameter sweeps in one program (swept values as leaves of the train state).

The training loop (:mod:`oe3jax.training`) takes an algorithm from :func:`get` and calls its
:class:`Algorithm` members directly. ``cfg`` is the whole resolved
configuration (:mod:`oe3jax.training.config`): an algorithm reads ``cfg[NAME]``, ``cfg["network"]``
and ``cfg["precision"]``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from oe3jax.schema import Field

ALGORITHMS = ("sac", "ppo", "a2c")

# Episode totals that the EV environment reports in ``info["totals"]``, and the metric each
# one becomes (summed over the episodes that end inside a chunk).
EPISODE_TOTALS = {"co2_kg": "ep_co2_kg", "grid_kwh": "ep_grid_kwh", "unmet_kwh": "ep_unmet_kwh"}

# Keys every chunk's metrics carry (float32 scalars). Episode keys are sums over the episodes
# that ended inside the chunk; ``episodes`` counts them, so means are sum / episodes.
METRIC_KEYS = (
    "reward_avg",      # mean reward per env step over the chunk
    "actor_loss",
    "critic_loss",
    "entropy",         # policy entropy (SAC: also reports ``alpha``)
    "lr",
    "nonfinite_skips",  # gradient steps skipped for a non-finite loss or gradient
    "episodes",        # number of episodes that ended in the chunk
    "ep_return",       # sum of the returns of those episodes
    *EPISODE_TOTALS.values(),  # sums of their annual CO2 (kg), grid import (kWh), unmet EV energy (kWh)
)


@runtime_checkable
class Algorithm(Protocol):
    """What the training loop calls. The modules :mod:`.ppo`, :mod:`.a2c` and :mod:`.sac` satisfy it.

    ``cfg`` is the whole resolved configuration, so an algorithm reads ``cfg[NAME]``,
    ``cfg["network"]`` and ``cfg["precision"]``.
    """

    NAME: str
    """``"ppo"``, ``"a2c"`` or ``"sac"``; also the name of the algorithm's config section."""

    CONFIG_SPEC: Mapping[str, Field]
    """The keys of the algorithm's own config section (``cfg[NAME]``), with defaults and ranges."""

    def env_steps_per_update(self, cfg: Mapping[str, Any]) -> tuple[int, int]:
        """``(num_envs, steps_per_env)``: one update consumes ``num_envs * steps_per_env`` env steps."""
        ...

    def init(self, key: Any, env: Any, env_params: Any, cfg: Mapping[str, Any]) -> Any:
        """The whole train state of ONE seed, a pytree of arrays only.

        Params, optimizer states, target networks, env states, last observations, PRNG key
        *data* (uint32, never typed keys), observation statistics, counters, and for SAC the
        replay buffer. The loop vmaps it over seeds and saves it whole with Orbax.
        """
        ...

    def make_update_chunk(
        self, env: Any, env_params: Any, cfg: Mapping[str, Any], num_updates: int
    ) -> Callable[[Any], tuple[Any, dict[str, Any]]]:
        """``chunk(state) -> (state, metrics)``, pure (the loop jits and vmaps it), ``lax.scan``-ning
        ``num_updates`` updates. ``metrics``: float32 scalars reduced over the chunk, with at least
        the keys of :data:`METRIC_KEYS`."""
        ...

    def make_policy(self, env: Any, env_params: Any, cfg: Mapping[str, Any]) -> Callable[[Any, Any], Any]:
        """``act(policy_params, obs) -> action``: the deterministic action for one observation,
        jittable and vmappable."""
        ...

    def policy_params(self, state: Any) -> Any:
        """The part of the train state that acting needs (actor parameters, observation statistics)."""
        ...


@runtime_checkable
class ReplayAlgorithm(Algorithm, Protocol):
    """An algorithm with a replay buffer in its train state (SAC)."""

    def buffer_nbytes(self, cfg: Mapping[str, Any], obs_dim: int, act_dim: int) -> tuple[int, str]:
        """Replay-buffer bytes of one seed and a one-line description for the start-up report."""
        ...


def get(name: str) -> Algorithm:
    """The algorithm by name, with a one-line error for an unknown name."""
    if name not in ALGORITHMS:
        raise ValueError(f"algo: unknown algorithm {name!r}; accepted: {', '.join(ALGORITHMS)}")
    module = importlib.import_module(f"oe3jax.learning.{name}")
    if not isinstance(module, Algorithm):
        members = [*Algorithm.__annotations__, *(k for k, v in vars(Algorithm).items() if callable(v) and k[0] != "_")]
        missing = [m for m in members if not hasattr(module, m)]
        raise TypeError(f"oe3jax.learning.{name}: does not satisfy Algorithm; missing {', '.join(missing)}")
    return cast(Algorithm, module)


def seed_keys(cfg: Mapping[str, Any]) -> Any:
    """Raw uint32 PRNG key data of every row of the train state: run i uses ``PRNGKey(seed + i)``.

    Seed i of a vmapped run therefore starts exactly like a one-seed run with ``seed + i``. With
    a sweep (:mod:`.sweep`) the seeds' keys repeat for every member.
    """
    import jax
    import jax.numpy as jnp

    from oe3jax.learning import sweep

    keys = jnp.stack([jax.random.PRNGKey(cfg["seed"] + i) for i in range(cfg["seeds"])])
    return sweep.row_keys(cfg, keys) if cfg.get("sweep") else keys


def init_seeds(algo: Algorithm, env: Any, env_params: Any, cfg: Mapping[str, Any]) -> Callable:
    """``init(keys) -> state`` of an algorithm with a leading row axis (seeds, or members x seeds)."""
    from oe3jax.learning import sweep

    return sweep.init_rows(lambda key, c: algo.init(key, env, env_params, c), cfg)


def rows_chunk(algo: Algorithm, env: Any, env_params: Any, cfg: Mapping[str, Any], num_updates: int) -> Callable:
    """The update chunk of every row, vmapped (with a sweep, each row's swept values are leaves)."""
    from oe3jax.learning import sweep

    return sweep.chunk_rows(lambda c: algo.make_update_chunk(env, env_params, c, num_updates), cfg)
