"""Whole-train-state checkpoints with Orbax, and the checks that make a resume safe.

One :class:`Checkpoints` object manages ``<run_dir>/checkpoints/<algo>/``. Each step directory
(named by the number of env steps per environment done) holds two items:

``state``
    The whole train state of every seed (a pytree of arrays: parameters, optimizer states,
    env states, PRNG key data, normaliser statistics, counters, replay buffer), saved with
    ``StandardSave`` and restored against an abstract tree from ``jax.eval_shape``.
``meta``
    JSON: the resolved config, the versions of oe3jax/jax/flax/orbax, the scenario fingerprint,
    the algorithm, the seeds, the runner's counters and the number of CSV rows written so far.

Orbax writes a step into ``<step>.orbax-checkpoint-tmp-<time>`` and renames it when complete, so a
save cut off by a kill leaves only a temporary directory, which is ignored (and removed at the
next start): the last complete step is used instead. A complete step that cannot be read (a
damaged file) raises :class:`CheckpointError` naming the directory; it is never skipped silently.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

TMP_MARKER = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the directory."""


class ResumeMismatch(ValueError):
    """A checkpoint made by another configuration (scenario, algorithm, network, ...)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------------------------
# Fingerprints and versions
# --------------------------------------------------------------------------------------------

def tree_fingerprint(tree: Any) -> str:
    """A short hash of a pytree's structure, shapes, dtypes and values (e.g. the env params).

    Two scenarios with the same name but different data (profiles, prices, sizes) get different
    fingerprints, so a checkpoint cannot be resumed against the wrong data unnoticed.
    """
    digest = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    digest.update(str(treedef).encode())
    for leaf in leaves:
        arr = np.asarray(jax.device_get(leaf))
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def versions() -> dict[str, str]:
    """Versions of the packages a checkpoint depends on."""
    import flax

    out = {"jax": jax.__version__, "flax": flax.__version__, "orbax": ocp.__version__}
    try:
        from importlib.metadata import version

        out["oe3jax"] = version("oe3jax")
    except Exception:  # not installed as a distribution (running from a checkout)
        out["oe3jax"] = "unknown"
    return out


def tree_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{path: (shape, dtype)}`` of every leaf, for readable shape comparisons."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        _path_name(path): (tuple(int(d) for d in leaf.shape), str(np.dtype(leaf.dtype)))
        for path, leaf in flat
    }


def _path_name(path: tuple) -> str:
    """``env_state/time`` for a leaf, whether its containers are dataclasses or dicts."""
    parts = []
    for entry in path:
        for attr in ("name", "key", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def compare_shapes(saved: Mapping[str, tuple], wanted: Mapping[str, tuple]) -> str | None:
    """The first difference between two :func:`tree_shapes` maps, in words, or None."""
    for key in sorted(set(saved) | set(wanted)):
        if key not in wanted:
            return f"the checkpoint has {key} which this configuration does not"
        if key not in saved:
            return f"this configuration has {key} which the checkpoint does not"
        if tuple(saved[key][0]) != tuple(wanted[key][0]) or saved[key][1] != wanted[key][1]:
            return (
                f"{key} is {saved[key][1]}{list(saved[key][0])} in the checkpoint but "
                f"{wanted[key][1]}{list(wanted[key][0])} with this configuration"
            )
    return None


# --------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------

def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs with a single-device sharding, as StandardRestore expects."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf(x: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or sharding)

    return jax.tree_util.tree_map(leaf, tree)


def complete_steps(directory: Path) -> list[int]:
    """The steps of ``directory`` whose save finished (temporary directories excluded)."""
    if not directory.is_dir():
        return []
    steps = []
    for child in directory.iterdir():
        if child.is_dir() and child.name.isdigit() and TMP_MARKER not in child.name:
            steps.append(int(child.name))
    return sorted(steps)


class Checkpoints:
    """Save and restore the whole train state plus its JSON metadata in one directory.

    ``max_to_keep`` most recent steps are kept; saves run in a background thread when
    ``async_save`` (the arrays are copied to host memory before :meth:`save` returns, so
    training can go on modifying its state). ``read_only`` opens a directory that another
    process may be writing: nothing is created or removed.
    """

    def __init__(
        self, directory: Path | str, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False
    ):
        self.directory = Path(directory).absolute()
        if not read_only:
            self._remove_partial_saves()
        try:
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    # read-only managers keep and save nothing (orbax warns unless told so)
                    max_to_keep=None if read_only else max_to_keep,
                    save_interval_steps=0 if read_only else 1,
                    create=not read_only,
                    read_only=read_only,
                    enable_async_checkpointing=async_save and not read_only,
                ),
                item_handlers={
                    "state": ocp.StandardCheckpointHandler(),
                    "meta": ocp.JsonCheckpointHandler(),
                },
            )
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint: cannot use directory {self.directory}: {_one_line(exc)}"
            ) from None

    def _remove_partial_saves(self) -> None:
        """Delete the temporary directories left by saves that were cut off."""
        if not self.directory.is_dir():
            return
        for child in self.directory.iterdir():
            if TMP_MARKER in child.name and child.is_dir():
                logging.warning("checkpoint: removing incomplete save %s", child)
                shutil.rmtree(child, ignore_errors=True)

    # ---- queries ----------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Complete steps, oldest first."""
        self._manager.reload()
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    # ---- save -------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Start saving ``state`` and ``meta`` as ``step``; errors name the directory.

        A failed save (full disk, unwritable directory) raises :class:`CheckpointError`; the
        steps saved before it are left as they were.
        """
        try:
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    meta=ocp.args.JsonSave(dict(meta)),
                ),
                force=True,
            )
        except Exception as exc:  # orbax wraps OSError in several types
            raise CheckpointError(
                f"checkpoint: saving step {step} in {self.directory} failed ({_one_line(exc)}); "
                "the earlier checkpoints are intact"
            ) from None

    def wait(self) -> None:
        """Block until the background save (if any) has finished; re-raise its error."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint: a save in {self.directory} failed ({_one_line(exc)}); "
                "the earlier checkpoints are intact"
            ) from None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._manager.close()

    # ---- restore ----------------------------------------------------------------------------
    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of ``step``, or :class:`CheckpointError` if unreadable."""
        return read_meta(self.step_dir(step))

    def saved_shapes(self, step: int) -> dict[str, tuple]:
        """``{path: (shape, dtype)}`` of the state as saved (from Orbax's tree metadata)."""
        path = self.step_dir(step)
        try:
            meta = self._manager.item_metadata(step)["state"]
            tree = meta.tree if hasattr(meta, "tree") else meta
            return tree_shapes(tree)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint: {path} is damaged: cannot read its state metadata ({_one_line(exc)}); "
                "delete that directory to resume from the previous step, or start over with --fresh"
            ) from None

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restore ``step`` into the structure, shapes and dtypes of ``abstract_state``."""
        mismatch = compare_shapes(self.saved_shapes(step), tree_shapes(abstract_state))
        if mismatch is not None:
            raise ResumeMismatch(
                f"resume: the checkpoint {self.step_dir(step)} has another state layout: {mismatch}"
            )
        try:
            out = self._manager.restore(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(abstract_state))),
            )
            state = out["state"]
            jax.block_until_ready(state)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint: {self.step_dir(step)} is damaged and cannot be restored "
                f"({_one_line(exc)}); delete that directory to resume from the previous step, "
                "or start over with --fresh"
            ) from None
        return state


def read_meta(step_dir: Path) -> dict[str, Any]:
    """Read ``<step_dir>/meta/metadata`` (Orbax's JsonSave file) with a clear error."""
    step_dir = Path(step_dir)
    path = step_dir / "meta" / "metadata"
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint: {step_dir} is damaged: its meta item is missing; delete that directory "
            "to resume from the previous step, or start over with --fresh"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint: {step_dir} is damaged: its metadata cannot be read ({_one_line(exc)}); "
            "delete that directory to resume from the previous step, or start over with --fresh"
        ) from None
