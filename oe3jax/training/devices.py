"""Device placement of a run: the runs (seeds) or the environments sharded over the devices.

Every leaf of the train state has a leading run axis (seeds, or the members x seeds of a sweep;
:func:`oe3jax.learning.init_seeds`). A :class:`Placement` lays the state over a 1-D
:class:`jax.sharding.Mesh` of ``parallel.devices`` devices (null: as many of the devices JAX sees, those of every process
in a multi-process run, as divide what is sharded) with :class:`jax.sharding.NamedSharding`:

- ``parallel.axis: seeds`` (default): the run axis is split, each device trains ``runs / devices``
  runs with the one-device program (``jax.shard_map``, no collective). Runs on 2 or on 4 devices
  give the same bits; against one device, float rounding may differ (XLA simplifies a program
  partitioned over several devices differently).
- ``parallel.axis: envs``: each run's environments are split (data parallel); XLA partitions the
  program and reduces gradients and statistics across devices: the same global batch as on one
  device, to float rounding.

The state is initialised, stepped and restored from a checkpoint with these shardings; a
checkpoint records whole arrays, so it restores on any device count.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from oe3jax.schema import ConfigError, Field

SEED_AXIS = "seeds"
ENV_AXIS = "envs"

PARALLEL_SPEC: dict[str, Field] = {
    "devices": Field(None, int, low=1, optional=True,
                     help="devices the runs or the environments are sharded over (the first N); null: as many of the "
                          "devices as divide the runs (or each run's environments)"),
    "axis": Field(SEED_AXIS, str, choices=(SEED_AXIS, ENV_AXIS),
                  help="seeds: each device trains its own runs; envs: every run's environments are split "
                       "over the devices (data parallel, gradients reduced across them)"),
}


def _largest_divisor(total: int, at_most: int) -> int:
    return max(d for d in range(1, max(1, min(total, at_most)) + 1) if total % d == 0)


def device_count(cfg: Mapping[str, Any], members: int = 1, num_envs: int | None = None) -> int:
    """The number of devices a run uses, checked against what JAX sees and against what it
    shards: the rows of the train state (``seeds``, times the ``members`` of a sweep), or the
    ``num_envs`` environments of each run (``parallel.axis: envs``).

    ``parallel.devices: null`` takes as many of the devices JAX sees as divide what is sharded
    (every device when they divide it: 8 seeds on 4 GPUs use 4, 1 seed uses 1, 6 seeds use 3);
    the run's first line says how many. A number is taken as asked, or refused in one line."""
    available = jax.device_count()
    wanted = cfg["parallel"]["devices"]
    if wanted is not None and int(wanted) > available:
        raise ConfigError(f"parallel.devices: {int(wanted)} devices asked for but JAX sees {available} "
                          f"({jax.default_backend()}); accepted: 1 to {available}, or null for all")
    envs_axis = cfg["parallel"]["axis"] == ENV_AXIS
    seeds = int(cfg["seeds"])
    rows = seeds * members
    if wanted is None:
        if envs_axis and num_envs is None:
            return available
        return _largest_divisor(int(num_envs) if envs_axis else rows, available)
    n = int(wanted)
    if envs_axis:
        if num_envs is not None and num_envs % n:
            raise ConfigError(f"{cfg['algo']}.num_envs: {num_envs} environments cannot be sharded over the {n} "
                              f"devices (parallel.devices); use a multiple of {n}, or set parallel.devices to a "
                              f"divisor of {num_envs}")
        return n
    if rows % n:
        what = f"{seeds}" if members == 1 else f"{seeds} (x {members} sweep members = {rows} runs)"
        raise ConfigError(f"seeds: {what} cannot be sharded over the {n} devices (parallel.devices); use a "
                          f"multiple of {n} runs, set parallel.devices to a divisor of {rows}, or parallel.axis: envs")
    return n


@dataclasses.dataclass(frozen=True)
class Placement:
    """The mesh of a run and how the train state lies on it.

    ``axis == "seeds"``: the leading (run) axis of every leaf is split over the mesh and each
    device runs the one-device program on its runs (``jax.shard_map``). ``axis == "envs"``: the
    second axis of every leaf that has ``num_envs`` there (env states, observations, running
    returns) is split, every other leaf (parameters, optimiser states, statistics) is replicated,
    and XLA partitions the program from these annotations, reducing the gradients, the
    observation statistics and the metrics across the devices. Annotations only place data: the
    program computes what it computes on one device, up to the order of those sums.
    """

    mesh: Mesh
    axis: str = SEED_AXIS
    num_envs: int = 0

    @property
    def devices(self) -> int:
        return int(self.mesh.devices.size)

    def _leaf(self, x: Any) -> NamedSharding:
        if self.axis == SEED_AXIS:
            return NamedSharding(self.mesh, PartitionSpec(SEED_AXIS))
        if len(x.shape) >= 2 and x.shape[1] == self.num_envs:
            return NamedSharding(self.mesh, PartitionSpec(None, ENV_AXIS))
        return NamedSharding(self.mesh, PartitionSpec())

    def shardings(self, tree: Any) -> Any:
        """The sharding of every leaf of ``tree`` (arrays or abstract arrays with a leading run axis)."""
        return jax.tree_util.tree_map(self._leaf, tree)

    def abstract(self, tree: Any) -> Any:
        """``tree``'s shapes and dtypes as :class:`jax.ShapeDtypeStruct` with their shardings
        (what a checkpoint restores into)."""
        return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self._leaf(x)), tree)

    def jit_init(self, init: Callable, keys: Any) -> Callable:
        """``init(keys) -> state`` jitted to produce the state with its shardings."""
        out = self.shardings(jax.eval_shape(init, keys))
        return jax.jit(init, out_shardings=out)

    def jit_chunk(self, chunk: Callable, state: Any, donate: bool = False) -> Callable:
        """``chunk(state) -> (state, metrics)`` (vmapped over runs) jitted for this placement."""
        donate_argnums = (0,) if donate else ()
        if self.axis == SEED_AXIS:
            spec = PartitionSpec(SEED_AXIS)
            local = jax.shard_map(chunk, mesh=self.mesh, in_specs=spec, out_specs=spec, check_vma=False)
            sharding = NamedSharding(self.mesh, spec)
            return jax.jit(local, in_shardings=sharding, out_shardings=sharding, donate_argnums=donate_argnums)
        state_shardings = self.shardings(state)
        metrics = NamedSharding(self.mesh, PartitionSpec())
        return jax.jit(chunk, in_shardings=(state_shardings,), out_shardings=(state_shardings, metrics),
                       donate_argnums=donate_argnums)

    def describe(self) -> str:
        kinds = sorted({d.platform for d in self.mesh.devices.flat})
        what = "runs" if self.axis == SEED_AXIS else "environments"
        return f"{self.devices} {'/'.join(kinds)} device{'s' if self.devices > 1 else ''} ({what} sharded)"


def placement(cfg: Mapping[str, Any], members: int = 1, num_envs: int = 0) -> Placement:
    """The placement of a resolved config (a one-line :class:`ConfigError` if impossible)."""
    n = device_count(cfg, members, num_envs)
    axis = cfg["parallel"]["axis"]
    return Placement(Mesh(np.asarray(jax.devices()[:n]), (axis,)), axis, int(num_envs))


def host_copy(tree: Any) -> Any:
    """Every leaf of ``tree`` whole, as NumPy arrays on this host. In a multi-process run the
    arrays that span processes are gathered from all (every process must call this, in the
    same order); NumPy leaves stay as they are."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    spread = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable]
    if spread:
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather([leaves[i] for i in spread], tiled=True)
        for i, value in zip(spread, gathered):
            leaves[i] = np.asarray(value)
    return jax.tree_util.tree_unflatten(treedef, jax.device_get(leaves))
