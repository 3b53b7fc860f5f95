"""Device placement of a run: the seed axis of the train state sharded over the devices.

Every leaf of the train state has a leading seed axis (:func:`oe3jax.learning.init_seeds`). A
:class:`Placement` lays that axis over a 1-D :class:`jax.sharding.Mesh` of ``parallel.devices``
devices (null: every device JAX sees, those of every process in a multi-process run) with a
:class:`jax.sharding.NamedSharding`, so each device trains ``seeds / devices`` seeds. The seeds
never exchange data: each device runs the one-device program on its own seeds (``jax.shard_map``),
so a sharded run computes, seed by seed, what an unsharded one computes, to the bit on CPU. The state is initialised, stepped (the jitted chunk has the same
sharding for its input and output) and restored from a checkpoint with this sharding; a
checkpoint records whole arrays, so it restores on any device count that divides the seeds.
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

PARALLEL_SPEC: dict[str, Field] = {
    "devices": Field(None, int, low=1, optional=True,
                     help="devices the seed axis is sharded over (the first N); null: every device; "
                          "must divide seeds"),
}


def device_count(cfg: Mapping[str, Any], members: int = 1) -> int:
    """The number of devices a run uses, checked against what JAX sees and against the rows of
    the train state (``seeds``, times the ``members`` of a sweep)."""
    available = jax.device_count()
    wanted = cfg["parallel"]["devices"]
    n = available if wanted is None else int(wanted)
    if n > available:
        raise ConfigError(f"parallel.devices: {n} devices asked for but JAX sees {available} "
                          f"({jax.default_backend()}); accepted: 1 to {available}, or null for all")
    seeds = int(cfg["seeds"])
    rows = seeds * members
    if rows % n:
        where = "every device JAX sees" if wanted is None else "parallel.devices"
        what = f"{seeds}" if members == 1 else f"{seeds} (x {members} sweep members = {rows} runs)"
        raise ConfigError(f"seeds: {what} cannot be sharded over the {n} devices ({where}); use a multiple "
                          f"of {n} runs, or set parallel.devices to a divisor of {rows}")
    return n


@dataclasses.dataclass(frozen=True)
class Placement:
    """The mesh of a run and the sharding of its seed axis."""

    mesh: Mesh

    @property
    def devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def sharding(self) -> NamedSharding:
        """Leading (seed) axis split over the mesh, the other axes whole on each device."""
        return NamedSharding(self.mesh, PartitionSpec(SEED_AXIS))

    def abstract(self, tree: Any) -> Any:
        """``tree``'s shapes and dtypes as :class:`jax.ShapeDtypeStruct` with the seed sharding
        (what a checkpoint restores into)."""
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.sharding), tree)

    def jit(self, fn: Callable, donate: bool = False) -> Callable:
        """``fn`` (vmapped over seeds) run by every device on its own block of seeds, jitted.

        ``jax.shard_map`` makes each device's program the one-device program on ``seeds /
        devices`` seeds, with no collective: the same bits as an unsharded run, whereas XLA's
        automatic partitioning of the whole program may reassociate sums.
        """
        spec = PartitionSpec(SEED_AXIS)
        local = jax.shard_map(fn, mesh=self.mesh, in_specs=spec, out_specs=spec, check_vma=False)
        return jax.jit(local, in_shardings=self.sharding, out_shardings=self.sharding,
                       donate_argnums=(0,) if donate else ())

    def describe(self) -> str:
        kinds = sorted({d.platform for d in self.mesh.devices.flat})
        return f"{self.devices} {'/'.join(kinds)} device{'s' if self.devices > 1 else ''}"


def placement(cfg: Mapping[str, Any], members: int = 1) -> Placement:
    """The placement of a resolved config (a one-line :class:`ConfigError` if impossible)."""
    n = device_count(cfg, members)
    return Placement(Mesh(np.asarray(jax.devices()[:n]), (SEED_AXIS,)))


def host_copy(tree: Any) -> Any:
    """The whole of every (possibly sharded) array of ``tree`` as NumPy arrays on this host; in a
    multi-process run every process gathers the parts the others hold (all must call it)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
