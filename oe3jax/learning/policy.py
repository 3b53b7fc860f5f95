"""A trained deterministic policy: ``policy(obs) -> action``, made from a train state."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from oe3jax.simulation.checks import check_observation


@dataclasses.dataclass(eq=False)
class Policy:
    """A deterministic policy: ``policy(obs) -> action`` for one observation.

    ``apply(params, obs)`` is the pure function behind it, for callers that want the parameters
    as an argument (e.g. to vmap over several policies).
    """

    algo: str
    step: int                  # env steps per environment done when it was saved
    config: dict[str, Any]     # the resolved training config
    scenario: str
    seed: int                  # the seed value of the run it comes from
    params: Any
    apply: Callable[[Any, Any], Any]
    env: Any = None
    env_params: Any = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, obs: Any) -> Any:
        """The deterministic action for ``obs`` (one observation, or a batch on leading axes).

        The observation's last axis must be the size of the training scenario's observations; the
        check reads only the shape, so under ``jax.jit`` / ``jax.vmap`` it runs once, while tracing.
        """
        if not hasattr(obs, "shape"):  # a list or a scalar
            import jax.numpy as jnp
            import numpy as np

            try:
                obs = np.asarray(obs)  # keeps a dtype of strings, named by the check below
            except Exception:  # a list of traced values
                obs = jnp.asarray(obs)
        size = self._obs_size()
        if size is not None:
            check_observation(tuple(obs.shape), size, self.scenario, ", which this policy was trained for",
                              dtype=obs.dtype)
        return self.apply(self.params, obs)

    def _obs_size(self) -> int | None:
        """Features per observation of the training environment (None without an environment)."""
        space = getattr(self.env, "observation_space", None)  # gymnax: a method of the params
        shape = tuple(space(self.env_params).shape) if callable(space) else ()
        return int(shape[-1]) if shape else None


def policy_from_state(
    state: Any,
    algo: Any,
    env: Any,
    env_params: Any,
    cfg: Mapping[str, Any],
    *,
    seed_index: int = 0,
    step: int = 0,
    meta: Mapping[str, Any] | None = None,
) -> Policy:
    """The policy of row ``seed_index`` of a train state with a leading row axis (seeds, or the
    members x seeds of a sweep: row ``m * seeds + i`` is member m's seed ``seed + i``)."""
    import jax

    from oe3jax.learning.sweep import train_part

    one = jax.tree_util.tree_map(lambda x: x[seed_index], train_part(state))
    return Policy(
        algo=cfg["algo"], step=int(step), config=dict(cfg), scenario=cfg["scenario"],
        seed=int(cfg["seed"]) + seed_index % int(cfg["seeds"]), params=algo.policy_params(one),
        apply=algo.make_policy(env, env_params, cfg), env=env, env_params=env_params,
        meta=dict(meta or {}),
    )
