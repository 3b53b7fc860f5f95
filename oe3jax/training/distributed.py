"""Several processes (hosts) training one run with JAX's own distributed runtime.

``--distributed`` (or ``JAX_COORDINATOR_ADDRESS`` in the environment) calls
:func:`jax.distributed.initialize` before JAX starts: the coordinator address, the number of
processes and this process's id come from ``--coordinator``, ``--num-processes`` and
``--process-id``, else from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
``JAX_PROCESS_ID``, else from JAX's detection of the cluster (SLURM, Open MPI, Kubernetes, TPU
pods). Every process then sees the devices of all: the mesh of :mod:`.devices` spans them, every
process runs the same program on its own devices, and Orbax saves and restores the sharded state
from every process. Only process 0 prints, writes the progress CSV, the status file, the
configuration and the evaluation, and holds the run directory's lock.
"""
from __future__ import annotations

import os
from typing import Any

from oe3jax.schema import ConfigError

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_STARTED: list[tuple[Any, ...]] = []  # the arguments this process initialised with (once per process)


def _int(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None
    if out < 0:
        raise ConfigError(f"{name}: expected 0 or more, got {out}")
    return out


def wanted(flag: bool) -> bool:
    """Whether to start the distributed runtime: ``--distributed`` or a coordinator in the environment."""
    return flag or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """:func:`jax.distributed.initialize` from the flags, else the environment variables, else
    JAX's cluster detection; a one-line :class:`ConfigError` when they do not fit."""
    import jax

    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num = num_processes if num_processes is not None else _int("JAX_NUM_PROCESSES", os.environ.get("JAX_NUM_PROCESSES"))
    pid = process_id if process_id is not None else _int("JAX_PROCESS_ID", os.environ.get("JAX_PROCESS_ID"))
    if _STARTED:
        return
    if num is not None and num < 1:
        raise ConfigError(f"--num-processes: expected 1 or more, got {num}")
    if num is not None and pid is not None and not 0 <= pid < num:
        raise ConfigError(f"--process-id: expected 0 to {num - 1} (--num-processes {num}), got {pid}")
    # CPU devices of several processes exchange data (gathers for checkpoints and metrics) via gloo
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)
        _STARTED.append((coordinator, num, pid))
    except (ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"--distributed: {first} (give --coordinator HOST:PORT, --num-processes N and "
                          f"--process-id I, or set {', '.join(ENV_VARS)})") from None


def is_primary() -> bool:
    """Whether this is process 0 (the one that prints and writes); True without distribution."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches this point (nothing to wait for in a single process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
