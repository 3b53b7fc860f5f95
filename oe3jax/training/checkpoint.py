"""Whole-train-state checkpoints with Orbax, and the checks that make a resume safe.

One :class:`Checkpoints` object manages ``<run_dir>/checkpoints/<algo>/``. Each step directory
(named by the number of env steps per environment done) holds two items:

``state``
    The whole train state of every seed (a pytree of arrays: parameters, optimizer states,
    env states, PRNG key data, normaliser statistics, counters, replay buffer), saved with
    ``StandardSave`` and restored against an abstract tree from ``jax.eval_shape``.
``meta``
    JSON: the resolved config, the versions of oe3jax/jax/flax/orbax, the scenario fingerprint,
    the algorithm, the seeds, the runner's counters and the number of CSV rows written so far;
    plus two integrity fields added by :meth:`Checkpoints.save`:

    - ``state_arrays``: ``{path: {"dtype", "shape", "sha256"}}`` for every leaf of the state,
      the SHA-256 of the leaf's bytes (C order), computed on the host from the state being saved;
    - ``meta_sha256``: the SHA-256 of the canonical JSON (sorted keys, no spaces) of every other
      field, so that no field (``csv_rows``, the config, the array digests) changes unnoticed;
    - ``compacted`` (when some replay buffer is not yet full): ``{path: full shape}`` of the buffer
      arrays saved only up to the most slots any seed has filled. Slots past a buffer's filled size
      have never been written and hold zeros, so :meth:`Checkpoints.restore` pads them back with
      zeros and the state is the one saved, bit for bit; a half-empty buffer is neither digested
      nor written whole at every save.

Every read checks them: :func:`read_meta` the metadata digest, :meth:`Checkpoints.restore` (and
:meth:`Checkpoints.verify`) the recorded layout against the one wanted, then every restored array
against its digest. A step that fails any check raises :class:`DamagedCheckpoint`, one line naming
the step and what is wrong; it is never skipped silently. Resuming from an earlier step is the
user's choice (``--resume-from STEP``, see :meth:`Checkpoints.resume_step` and
:meth:`Checkpoints.discard_after`).

Orbax writes a step into ``<step>.orbax-checkpoint-tmp-<time>`` and renames it when complete, so a
save cut off by a kill leaves only a temporary directory, which is ignored (and removed at the
next start): the last complete step is used instead. Saves run in the background; the digests are
computed from a host copy taken when :meth:`Checkpoints.save` is called, in Orbax's background
commit of the ``meta`` item, so an asynchronous save stays asynchronous. A failed save is reported
by the next :meth:`Checkpoints.save` or :meth:`Checkpoints.wait` as one line naming the failed step
and the steps that are intact. Orbax's own log records and the asyncio noise that a failed read or
write leaves behind are silenced (see :func:`_quiet`): the :class:`CheckpointError` says it all.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import warnings
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from oe3jax.learning.buffer import BufferState
from oe3jax.training.devices import host_copy
from oe3jax.training.distributed import barrier, is_primary

TMP_MARKER = ".orbax-checkpoint-tmp"
DISCARDED_MARKER = ".discarded-"
COMPACTED_KEY = "compacted"
INTEGRITY_KEYS = ("state_arrays", "meta_sha256", COMPACTED_KEY)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the directory."""


class DamagedCheckpoint(CheckpointError):
    """A complete step whose files do not hold what was saved (missing, changed or unreadable).

    ``step``, ``step_dir``, ``reason`` and ``previous`` (the complete step before it, or None)
    are attributes; the message tells how to resume from ``previous`` on the command line, or,
    from :meth:`for_api`, with ``load_policy(..., step=previous)``.
    """

    def __init__(self, step_dir: Path | str, reason: str, *, api: bool = False, by_path: bool = False):
        self.step_dir = Path(step_dir)
        self.step = int(self.step_dir.name) if self.step_dir.name.isdigit() else None
        self.reason = reason
        earlier = [s for s in complete_steps(self.step_dir.parent) if self.step is None or s < self.step]
        self.previous = earlier[-1] if earlier else None
        self.api = api
        if self.previous is None:
            advice = "no earlier complete checkpoint is left" + (
                "" if api or by_path else "; rerun with --fresh to start over")
        elif by_path:
            advice = (f"give {self.step_dir.parent / str(self.previous)} instead to use the previous complete "
                      "checkpoint")
        elif api:
            advice = f"pass step={self.previous} to load the previous complete checkpoint"
        else:
            advice = (f"rerun with --resume-from {self.previous} to resume from the previous complete "
                      "checkpoint, or --fresh to start over")
        where = f"step {self.step} at {self.step_dir}" if self.step is not None else str(self.step_dir)
        super().__init__(f"checkpoint: {where} is damaged: {reason}; {advice}")

    def for_api(self) -> DamagedCheckpoint:
        """The same error, advising ``step=`` (for :func:`oe3jax.load_policy`) instead of CLI flags."""
        return DamagedCheckpoint(self.step_dir, self.reason, api=True)

    def by_path(self) -> DamagedCheckpoint:
        """The same error, advising the path of the previous complete step (for tools, such as
        ``scripts/evaluate.py``, that take a checkpoint directory instead of a run directory)."""
        return DamagedCheckpoint(self.step_dir, self.reason, by_path=True)


class ResumeMismatch(ValueError):
    """A checkpoint made by another configuration (scenario, algorithm, network, ...)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _cause(exc: BaseException, limit: int = 240) -> str:
    """The root cause of an Orbax/TensorStore error in a few words.

    Orbax wraps read errors in ``Exception('... See full TensorStore details: <method>')`` and
    TensorStore appends its whole JSON spec; the innermost cause is what a user can act on, and
    an operating-system error (full disk, no permission) is named by its ``strerror``.
    """
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ if exc.__cause__ is not None else (
            None if exc.__suppress_context__ else exc.__context__)
        if nxt is None:
            break
        exc = nxt
    if isinstance(exc, OSError) and exc.errno:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{os.strerror(exc.errno)}{where}"
    text = (str(exc).strip().splitlines() or [""])[0]
    code = _OS_ERROR_CODE.search(text)
    if code:
        return os.strerror(int(code.group(1)))
    text = text.split(" [tensorstore_spec=")[0].split(" See full TensorStore details")[0]
    text = f"{type(exc).__name__}: {text}" if type(exc).__name__ not in ("ValueError", "Exception") else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Silencing Orbax: its failures come back as one CheckpointError line
# --------------------------------------------------------------------------------------------

_ORBAX_DIR = os.path.dirname(os.path.abspath(ocp.__file__))
_DIRS: set[str] = set()  # checkpoint directories opened in this process
_QUIET_LOCK = threading.Lock()
_QUIET_DONE = False


class _DropOrbaxRecords(logging.Filter):
    """Orbax logs through absl: warnings about read-only managers, and the tracebacks of a failed
    background save (several per failure). :class:`Checkpoints` reports failures itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not os.path.abspath(record.pathname).startswith(_ORBAX_DIR)


def _mentions_checkpoint(text: str) -> bool:
    return any(d in text for d in _DIRS)


def _raised_in_orbax(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) passed through Orbax's code."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_ORBAX_DIR):
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


class _DropUnretrievedCheckpointErrors(logging.Filter):
    """``Future exception was never retrieved`` for an Orbax/TensorStore read or write of a
    checkpoint: the sibling of an error that Orbax already raised (and we reported)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "never retrieved" not in text:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (_mentions_checkpoint(text + str(exc)) or _raised_in_orbax(exc))


def _is_closed_loop_callback(unraisable: Any) -> bool:
    """TensorStore completing a read or write of an Orbax operation that already failed calls
    back into the closed asyncio loop of that operation: ``RuntimeError: Event loop is closed``."""
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
        return False
    tb = unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "_check_closed"


def _is_orbax_leftover(unraisable: Any) -> bool:
    """An Orbax coroutine collected with the exception of a read or write that failed (a damaged
    checkpoint, a full disk): ``Exception ignored in: <coroutine object _read_array_index_and_device_put>``
    and TensorStore's whole spec. The failure itself is reported by the CheckpointError; whether
    Python reports the coroutine too depends on when it is collected."""
    code = getattr(unraisable.object, "cr_code", None)
    return (code is not None and "/orbax/" in code.co_filename.replace(os.sep, "/")
            and isinstance(unraisable.exc_value, Exception))


def _quiet() -> None:
    """Install (once) the filters that keep Orbax's internal reports off stderr."""
    global _QUIET_DONE
    with _QUIET_LOCK:
        if _QUIET_DONE:
            return
        _QUIET_DONE = True
        logging.getLogger("absl").addFilter(_DropOrbaxRecords())
        logging.getLogger("asyncio").addFilter(_DropUnretrievedCheckpointErrors())
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if not (_is_closed_loop_callback(unraisable) or _is_orbax_leftover(unraisable)):
                previous(unraisable)

        sys.unraisablehook = hook
        # a save cut off by a write error leaves Orbax's pending write coroutines unawaited; Python
        # reports them when they are collected (often at exit), which says nothing the error did not
        warnings.filterwarnings("ignore", message=r"coroutine 'async_serialize_from_host\b.*' was never awaited",
                                category=RuntimeWarning)


# --------------------------------------------------------------------------------------------
# Fingerprints, digests and versions
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


def _leaf_sha256(arr: np.ndarray) -> str:
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)  # any dtype, 0-d included
    return hashlib.sha256(flat.data).hexdigest()  # hashlib releases the GIL on large buffers


def array_digests(tree: Any) -> dict[str, dict[str, Any]]:
    """``{path: {"dtype", "shape", "sha256"}}`` of every leaf of ``tree`` (copied to host memory).

    Paths are those of :func:`tree_shapes`, so a state restored into the same structure gets the
    same keys; the digest covers the leaf's bytes only (dtype and shape are compared apart).
    """
    host = host_copy(tree)
    out: dict[str, dict[str, Any]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(host)[0]:
        name = _path_name(path)
        if name in out:
            raise ValueError(f"checkpoint: two leaves of the state are both named {name!r}")
        arr = np.asarray(leaf)
        out[name] = {"dtype": str(arr.dtype), "shape": [int(d) for d in arr.shape], "sha256": _leaf_sha256(arr)}
    return out


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def meta_digest(meta: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``meta`` without its ``meta_sha256`` field.

    The digest is taken of the JSON as it will read back (tuples as lists, keys as strings),
    so the value written at save time and the one computed at load time agree.
    """
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(_canonical(json.loads(json.dumps(body)))).hexdigest()


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
# Replay buffers saved up to their filled size
# --------------------------------------------------------------------------------------------

def compact_buffers(state: Any) -> tuple[Any, dict[str, list[int]]]:
    """``(state with each replay buffer's storage cut to its filled slots, {path: full shape})``.

    A :class:`~oe3jax.learning.buffer.BufferState` writes slot ``i`` only once ``size > i`` and
    its storage starts as zeros, so the slots past the largest ``size`` of its seeds (its leading
    axes) are zeros in every seed, and :func:`expand_buffers` restores them exactly. A full
    buffer, and every other leaf, is left as it is. At least one slot is kept.
    """
    def cut(node: Any) -> Any:
        if not isinstance(node, BufferState):
            return node
        sizes = np.asarray(host_copy(node.size))
        axis = sizes.ndim  # storage is [*seed axes, capacity, ...]
        filled = max(int(sizes.max(initial=0)), 1)
        if filled >= node.capacity:
            return node
        data = jax.tree_util.tree_map(lambda a: jax.lax.slice_in_dim(a, 0, filled, axis=axis), node.data)
        return node.replace(data=data)

    compacted = jax.tree_util.tree_map(cut, state, is_leaf=lambda x: isinstance(x, BufferState))
    full, kept = tree_shapes(state), tree_shapes(compacted)
    return compacted, {k: list(full[k][0]) for k in full if full[k] != kept[k]}


def _compacted_target(abstract_state: Any, recorded: Mapping[str, tuple], cut: Mapping[str, list[int]]) -> Any:
    """``abstract_state`` (whose full shapes match the checkpoint's) with each compacted leaf given
    its recorded, cut shape."""
    def leaf(path: tuple, x: Any) -> Any:
        name = _path_name(path)
        if name in cut:
            return jax.ShapeDtypeStruct(tuple(recorded[name][0]), x.dtype, sharding=getattr(x, "sharding", None))
        return x

    return jax.tree_util.tree_map_with_path(leaf, abstract_state)


def expand_buffers(state: Any, abstract_state: Any, cut: Mapping[str, list[int]]) -> Any:
    """The compacted leaves of a restored ``state`` padded with zeros to ``abstract_state``'s
    shapes (and shardings, where it has them); the other leaves as they are."""
    if not cut:
        return state
    wanted = {_path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}

    def leaf(path: tuple, x: Any) -> Any:
        name = _path_name(path)
        if name not in cut:
            return x
        widths = tuple((0, int(w) - int(h)) for w, h in zip(cut[name], x.shape))
        sharding = getattr(wanted[name], "sharding", None)
        placed = {} if sharding is None else {"out_shardings": sharding}
        return jax.jit(lambda a: jax.numpy.pad(a, widths), **placed)(x)

    return jax.tree_util.tree_map_with_path(leaf, state)


# --------------------------------------------------------------------------------------------
# The metadata item: digests computed in Orbax's background commit
# --------------------------------------------------------------------------------------------

class _PendingMeta:
    """The metadata of one save, completed with the digests of a host copy of the state."""

    def __init__(self, meta: Mapping[str, Any], host_state: Any, compacted: Mapping[str, list[int]]):
        self._meta = dict(meta)
        self._host: Any = host_state
        self._compacted = dict(compacted)

    def result(self) -> dict[str, Any]:
        full = dict(self._meta)
        full["state_arrays"] = array_digests(self._host)
        if self._compacted:
            full[COMPACTED_KEY] = self._compacted
        self._host = None  # release the host copy as soon as it is digested
        full["meta_sha256"] = meta_digest(full)
        return full


class _MetaHandler(ocp.JsonCheckpointHandler):
    """``JsonCheckpointHandler`` that accepts a :class:`_PendingMeta`: the digests are computed
    and the JSON written in Orbax's commit thread, while training goes on."""

    FILENAME = "metadata"

    def __init__(self) -> None:
        super().__init__(filename=self.FILENAME)

    async def async_save(self, directory: Any, item: Any = None, args: Any = None) -> Any:
        pending = args.item if args is not None else item
        if not isinstance(pending, _PendingMeta):
            return await super().async_save(directory, item=item, args=args)

        async def write() -> None:
            data = pending.result()  # blocks only this commit's own thread and event loop
            if is_primary():  # every process saves its part of the state, process 0 the metadata
                (directory / self.FILENAME).write_text(json.dumps(data))

        return [ocp.future.CommitFutureAwaitingContractedSignals(write(), name="oe3jax_meta_save")]


# --------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------

def _handlers() -> Any:
    """The handler of each item, for saving and restoring."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    state, meta = ocp.StandardCheckpointHandler(), _MetaHandler()
    registry.add("state", ocp.args.StandardSave, state)
    registry.add("state", ocp.args.StandardRestore, state)
    registry.add("meta", ocp.args.JsonSave, meta)
    registry.add("meta", ocp.args.JsonRestore, meta)
    return registry


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs with a single-device sharding, as StandardRestore expects."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf(x: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None) or sharding)

    return jax.tree_util.tree_map(leaf, tree)


def complete_steps(directory: Path) -> list[int]:
    """The steps of ``directory`` whose save finished (temporary directories excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = []
    for child in directory.iterdir():
        if child.is_dir() and child.name.isdigit() and TMP_MARKER not in child.name:
            steps.append(int(child.name))
    return sorted(steps)


def _fmt_steps(steps: list[int]) -> str:
    return ", ".join(map(str, steps))


def resume_step(directory: Path | str, requested: int | None = None) -> int | None:
    """The step a resume starts from: the latest complete one (None if there is none), or
    ``requested`` (``--resume-from STEP``), which must be a complete step of ``directory``."""
    steps = complete_steps(Path(directory))
    if requested is None:
        return steps[-1] if steps else None
    if requested not in steps:
        raise CheckpointError(
            f"checkpoint: --resume-from {requested}: no complete checkpoint of step {requested} in "
            f"{Path(directory).absolute()}; complete steps: {_fmt_steps(steps) or 'none'}"
        )
    return requested


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
        _quiet()
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        self._pending: int | None = None  # the step whose background save is in flight
        self._failed = False  # a save failed (and was reported)
        _DIRS.update({str(self.directory), str(self.directory.resolve())})
        if not read_only and is_primary():
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
                    # the step's directories are made before save() returns: made in the background,
                    # a failure to make them (a file in the way, a full disk) left the handlers'
                    # commit threads waiting 20 minutes for them, and the process with them
                    async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
                ),
                handler_registry=_handlers(),
            )
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint: cannot use directory {self.directory}: {_cause(exc)}"
            ) from None

    def _remove_partial_saves(self) -> None:
        """Delete the temporary directories left by saves that were cut off."""
        if not self.directory.is_dir():
            return
        for child in self.directory.iterdir():
            if TMP_MARKER in child.name and child.is_dir():
                print(f"warning: checkpoint: removing {child}, a save that did not finish", file=sys.stderr)
                shutil.rmtree(child, ignore_errors=True)

    # ---- queries ----------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Complete steps (finished saves; not checked, see :meth:`verify`), oldest first."""
        return complete_steps(self.directory)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def previous_step(self, step: int) -> int | None:
        """The complete step before ``step``, or None."""
        earlier = [s for s in self.steps() if s < step]
        return earlier[-1] if earlier else None

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def resume_step(self, requested: int | None = None) -> int | None:
        """See :func:`resume_step`."""
        return resume_step(self.directory, requested)

    def discard_after(self, step: int) -> list[Path]:
        """Move the steps after ``step`` aside (``<step>.discarded-<time>``, ignored from then on),
        so that a run resumed from ``step`` can save them again; returns their new paths."""
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        moved = []
        for later in self.steps() if is_primary() else ():
            if later > step:
                target = self.directory / f"{later}{DISCARDED_MARKER}{stamp}"
                try:
                    self.step_dir(later).rename(target)
                except OSError as exc:
                    raise CheckpointError(
                        f"checkpoint: cannot move {self.step_dir(later)} aside: {_cause(exc)}"
                    ) from None
                moved.append(target)
        barrier("oe3jax-discard-after")
        self._manager.reload()
        return moved

    # ---- save -------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Start saving ``state`` and ``meta`` as ``step``; errors name the step that failed.

        A save still running is waited for first, so that its failure is reported under its own
        step. A failed save (full disk, unwritable directory) raises :class:`CheckpointError`;
        the steps saved before it are left as they were.
        """
        self.wait()
        clash = [k for k in INTEGRITY_KEYS if k in meta]
        if clash:
            raise ValueError(f"checkpoint: meta must not set {', '.join(clash)} (written by save)")
        try:
            # A host copy taken now: training may overwrite (or donate) the device arrays while
            # the background commit digests it.
            state, compacted = compact_buffers(state)
            pending = _PendingMeta(meta, host_copy(state), compacted)
            self._manager.save(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(pending)),
                force=True,
            )
        except Exception as exc:  # orbax wraps OSError in several types
            self._failed = True
            raise CheckpointError(self._save_failed(int(step), exc)) from None
        self._pending = int(step)

    def _save_failed(self, step: int, exc: BaseException) -> str:
        """One line: which step failed, why, and which steps are intact. A step directory that
        a failed save left behind is moved to a temporary name (removed at the next start)."""
        path = self.step_dir(step)
        if path.is_dir():
            try:
                path.rename(self.directory / f"{step}{TMP_MARKER}-failed")
            except OSError:
                pass
        intact = [s for s in self.steps() if s != step]
        if not intact:
            kept = "no earlier checkpoint exists"
        else:
            kept = (f"the earlier checkpoints are intact (step{'s' if len(intact) > 1 else ''} "
                    f"{_fmt_steps(intact)}): rerun the same command to resume from step {intact[-1]}")
        return f"checkpoint: saving step {step} in {self.directory} failed: {_cause(exc)}; {kept}"

    def wait(self) -> None:
        """Block until the background save (if any) has finished; re-raise its error as one
        :class:`CheckpointError` line naming its step."""
        step, self._pending = self._pending, None
        if step is None:  # nothing in flight; a failed save was reported when it was found
            return
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as exc:
            self._failed = True
            raise CheckpointError(self._save_failed(step, exc)) from None

    def close(self) -> None:
        """Wait for the save in flight (its error raised as by :meth:`wait`) and release Orbax."""
        try:
            self.wait()
        finally:
            try:
                self._manager.close()
            except Exception as exc:
                if not self._failed:  # otherwise the same failure, already reported
                    raise CheckpointError(f"checkpoint: closing {self.directory} failed: {_cause(exc)}") from None

    # ---- restore ----------------------------------------------------------------------------
    def read_meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of ``step`` (its digest checked), or :class:`DamagedCheckpoint`."""
        return read_meta(self.step_dir(step))

    def saved_shapes(self, step: int) -> dict[str, tuple]:
        """``{path: (shape, dtype)}`` of the state as saved (from the checked metadata)."""
        return _recorded_shapes(_read_full_meta(self.step_dir(step)))

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restore ``step`` into the structure, shapes and dtypes of ``abstract_state``.

        The metadata digest, the layout and every array's digest are checked: a checkpoint made
        with another layout raises :class:`ResumeMismatch`, a damaged one :class:`DamagedCheckpoint`.
        """
        full = _read_full_meta(self.step_dir(step))
        cut = full.get(COMPACTED_KEY, {})
        recorded = _recorded_shapes(full)
        whole = {k: (tuple(cut[k]) if k in cut else shape, dtype) for k, (shape, dtype) in recorded.items()}
        mismatch = compare_shapes(whole, tree_shapes(abstract_state))
        if mismatch is not None:
            raise ResumeMismatch(
                f"resume: the checkpoint {self.step_dir(step)} has another state layout: {mismatch}"
            )
        target = _compacted_target(abstract_state, recorded, cut) if cut else abstract_state
        return expand_buffers(self._restore_checked(step, target, full), abstract_state, cut)

    def verify(self, step: int, abstract_state: Any = None) -> dict[str, Any]:
        """Read ``step`` back and check it against its digests; return its metadata.

        Without ``abstract_state`` the arrays are restored as saved (shapes from Orbax's tree
        metadata). Raises :class:`DamagedCheckpoint` naming the step and what is wrong.
        """
        if abstract_state is not None:
            self.restore(step, abstract_state)
            return self.read_meta(step)
        full = _read_full_meta(self.step_dir(step))
        self._restore_checked(step, None, full)
        return _public(full)

    def _saved_layout(self, step: int, full: Mapping[str, Any]) -> Any:
        """Abstract arrays from Orbax's tree metadata (``state/_METADATA``), checked against the
        layout recorded in the metadata."""
        try:
            tree = self._manager.item_metadata(step)["state"]
            tree = tree.tree if hasattr(tree, "tree") else tree
            if tree is None:
                raise ValueError("no tree metadata")
            abstract = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)
        except Exception as exc:
            raise DamagedCheckpoint(self.step_dir(step), f"its state metadata cannot be read ({_cause(exc)})") from None
        if tree_shapes(abstract) != _recorded_shapes(full):
            raise DamagedCheckpoint(self.step_dir(step), "its state metadata differs from the recorded layout")
        return abstract

    def _restore_checked(self, step: int, abstract_state: Any, full: Mapping[str, Any]) -> Any:
        """Restore into ``abstract_state`` (None: the saved layout) after checking Orbax's tree
        metadata, then check every array against its recorded digest."""
        path = self.step_dir(step)
        saved = self._saved_layout(step, full)
        if abstract_state is None:
            abstract_state = saved
        try:
            out = self._manager.restore(
                int(step),
                args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(abstract_state))),
            )
            state = out["state"]
            jax.block_until_ready(state)
        except Exception as exc:
            raise DamagedCheckpoint(path, f"its arrays cannot be read ({_cause(exc)})") from None
        try:
            got = array_digests(state)
        except Exception as exc:
            raise DamagedCheckpoint(path, f"its arrays cannot be read ({_cause(exc)})") from None
        want = full["state_arrays"]
        bad = [k for k in want if got.get(k) != want[k]] + [k for k in got if k not in want]
        if bad:
            raise DamagedCheckpoint(
                path, f"{len(bad)} of {len(want)} arrays differ from their recorded digests (first: {bad[0]})"
            )
        return state


def _recorded_shapes(full: Mapping[str, Any]) -> dict[str, tuple]:
    return {k: (tuple(v["shape"]), v["dtype"]) for k, v in full["state_arrays"].items()}


def _public(full: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in full.items() if k not in INTEGRITY_KEYS}


def _read_full_meta(step_dir: Path) -> dict[str, Any]:
    """The metadata with its integrity fields, its own digest checked."""
    step_dir = Path(step_dir)
    path = step_dir / "meta" / _MetaHandler.FILENAME
    if not path.is_file():
        raise DamagedCheckpoint(step_dir, "its meta item is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise DamagedCheckpoint(step_dir, f"its metadata cannot be read ({_one_line(exc)})") from None
    arrays = data.get("state_arrays")
    if not isinstance(data.get("meta_sha256"), str) or not isinstance(arrays, dict):
        raise DamagedCheckpoint(step_dir, "its metadata carries no digests (not written by this version of oe3jax)")
    if meta_digest(data) != data["meta_sha256"]:
        raise DamagedCheckpoint(step_dir, "its metadata differs from its recorded digest")
    for entry in arrays.values():
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("dtype"), str) and isinstance(entry.get("sha256"), str)):
            raise DamagedCheckpoint(step_dir, "its array digests are malformed")
    cut = data.get(COMPACTED_KEY, {})
    if not isinstance(cut, dict) or not all(
            k in arrays and isinstance(v, list) and len(v) == len(arrays[k]["shape"])
            and all(isinstance(d, int) and d >= h for d, h in zip(v, arrays[k]["shape"])) for k, v in cut.items()):
        raise DamagedCheckpoint(step_dir, "its record of the compacted replay buffer is malformed")
    return data


def read_meta(step_dir: Path) -> dict[str, Any]:
    """Read ``<step_dir>/meta/metadata`` (Orbax's JsonSave file), its digest checked, without
    the integrity fields; :class:`DamagedCheckpoint` (one line) if missing, unreadable or changed."""
    return _public(_read_full_meta(Path(step_dir)))
