"""A trained deterministic policy: ``policy(obs) -> action``, made from a train state."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


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
        return self.apply(self.params, obs)


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
    """The policy of seed ``seed_index`` of a train state with a leading seed axis."""
    import jax

    one = jax.tree_util.tree_map(lambda x: x[seed_index], state)
    return Policy(
        algo=cfg["algo"], step=int(step), config=dict(cfg), scenario=cfg["scenario"],
        seed=int(cfg["seed"]) + seed_index, params=algo.policy_params(one),
        apply=algo.make_policy(env, env_params, cfg), env=env, env_params=env_params,
        meta=dict(meta or {}),
    )
