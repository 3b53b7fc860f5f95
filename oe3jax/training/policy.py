"""Trained policies: ``load_policy(path)`` from a run directory or a checkpoint.

>>> policy = load_policy("results/runs/ppo-iquitos-128")     # latest checkpoint, seed 0
>>> action = policy(obs)                                      # deterministic, jittable, vmappable
>>> policy.algo, policy.step, policy.scenario, policy.config["ppo"]["lr"]

``path`` may be

- a run directory (``<run>/checkpoints/<algo>/`` inside); with several algorithms in it
  (``--algo all``) pass ``algo=``;
- an algorithm's checkpoint directory (``<run>/checkpoints/<algo>``);
- one checkpoint step directory (``<run>/checkpoints/<algo>/<step>``).

The latest complete checkpoint is used unless ``step=`` is given (after a finished run the latest
is the final one). With several seeds in the run, ``seed=k`` picks the k-th (default 0).

The checkpoint is checked against the digests recorded when it was saved (its metadata and every
array); a damaged one raises :class:`~oe3jax.training.checkpoint.DamagedCheckpoint`, one line naming
the step and the ``step=`` of the previous complete checkpoint.
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from oe3jax.learning import init_seeds, seed_keys
from oe3jax.learning.policy import Policy, policy_from_state
from oe3jax.training.checkpoint import (
    Checkpoints,
    DamagedCheckpoint,
    complete_steps,
    read_meta,
    tree_fingerprint,
)


def _locate(path: Path, algo: str | None, step: int | None) -> tuple[Path, int]:
    """``(checkpoint directory of one algorithm, step)`` for any accepted ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load_policy: {path} does not exist")
    if path.name.isdigit() and (path / "meta").is_dir():
        if step is not None and step != int(path.name):
            raise ValueError(f"load_policy: {path} is step {path.name}, not step {step}")
        return path.parent, int(path.name)
    if (path / "checkpoints").is_dir():
        names = sorted(d.name for d in (path / "checkpoints").iterdir() if complete_steps(d))
        if algo is None:
            if len(names) != 1:
                raise ValueError(
                    f"load_policy: {path} holds checkpoints of {', '.join(names) or 'no algorithm'}; "
                    "pass algo= to choose one" if names else f"load_policy: {path} holds no checkpoint"
                )
            algo = names[0]
        if algo not in names:
            raise ValueError(f"load_policy: no checkpoint of {algo!r} in {path}; found: {', '.join(names) or 'none'}")
        path = path / "checkpoints" / algo
    steps = complete_steps(path)
    if not steps:
        raise ValueError(f"load_policy: no complete checkpoint in {path}")
    if step is None:
        return path, steps[-1]
    if step not in steps:
        raise ValueError(f"load_policy: no step {step} in {path}; steps: {', '.join(map(str, steps))}")
    return path, step


def load_policy(
    path: str | Path,
    *,
    seed: int = 0,
    algo: str | None = None,
    step: int | None = None,
    components: Any = None,
) -> Policy:
    """Load the deterministic policy saved in a run or checkpoint directory (see module doc).

    ``seed`` is the index of the seed within the run (0 .. seeds-1). ``components`` (an
    :class:`oe3jax.training.config.Components`) replaces the project's algorithms and environment.
    """
    import jax

    from oe3jax.learning.sweep import members
    from oe3jax.training.config import build_schema, default_components, make_run_env, with_new_defaults

    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)):
        raise ValueError(f"load_policy: step: expected an integer (the name of a step directory) or None, got {step!r}")
    step = None if step is None else int(step)
    directory, step = _locate(Path(path), algo, step)
    try:
        meta = read_meta(directory / str(step))
    except DamagedCheckpoint as exc:
        raise exc.for_api() from None
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or "algo" not in cfg:
        raise DamagedCheckpoint(directory / str(step), "its metadata has no config", api=True)
    rows = int(cfg["seeds"]) * len(members(cfg))  # a sweep's row m * seeds + i: member m, seed index i
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < rows:
        raise ValueError(f"load_policy: seed: expected an index in [0, {rows - 1}], got {seed!r}")
    comps = components or default_components()
    cfg = with_new_defaults(cfg, build_schema(comps, (cfg["algo"],)))
    algo_module = comps.get_algo(cfg["algo"])
    env, env_params = make_run_env(cfg, comps)
    if meta.get("fingerprint") not in (None, tree_fingerprint(env_params)):
        raise ValueError(
            f"load_policy: the scenario data of {cfg['scenario']!r} differ from those the checkpoint "
            f"{directory / str(step)} was trained on"
        )
    init_fn = init_seeds(algo_module, env, env_params, cfg)
    ckpts = Checkpoints(directory, read_only=True, async_save=False)
    try:
        state = ckpts.restore(step, jax.eval_shape(init_fn, seed_keys(cfg)))
    except DamagedCheckpoint as exc:
        raise exc.for_api() from None
    finally:
        ckpts.close()
    return policy_from_state(
        state, algo_module, env, env_params, cfg, seed_index=int(seed), step=step, meta=meta
    )


def load_policies(
    path: str | Path,
    *,
    algo: str | None = None,
    step: int | None = None,
    components: Any = None,
) -> list[Policy]:
    """Every training seed's policy of one checkpoint (the latest complete one unless ``step``), in
    seed order; arguments as :func:`load_policy`'s."""
    first = load_policy(path, algo=algo, step=step, components=components)
    return [first] + [load_policy(path, seed=k, algo=algo, step=first.step, components=components)
                      for k in range(1, int(first.config["seeds"]))]
