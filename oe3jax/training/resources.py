"""What a run needs from the machine and from the program's integer types, checked before compiling.

Each check raises a one-line :class:`~oe3jax.schema.ConfigError` naming the flag or key, the reason
and the accepted values; none writes anything.

- :func:`check_seed_range`: run ``i`` of a study uses the uint32 seed ``seed + i``.
- :func:`check_step_counts`: the int32 counters of the train states (env steps, updates,
  gradient steps) hold the whole run, after ``total_steps`` is rounded up to whole updates.
- :func:`check_train_memory` (and the generic :func:`check_memory`): the train states of every
  seed fit in the memory available, computed from their shapes without allocating anything; for
  a replay buffer the error names the largest ``buffer_size`` that fits.
- :func:`check_writable_dir`, :func:`check_writable_file`: an output path (``--run-dir``,
  ``--out``, ``--markdown``) can be created and written: not an existing file, not under a
  file, in a writable directory.
"""
from __future__ import annotations

import decimal
import math
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oe3jax.schema import BUFFER_SIZE_MAX, INT32_MAX, SEED_MAX, TOTAL_STEPS_MAX, ConfigError


# --------------------------------------------------------------------------------------------
# Integer ranges
# --------------------------------------------------------------------------------------------

def check_seed_range(cfg: Mapping[str, Any]) -> None:
    """``seed + seeds - 1`` must be a uint32 seed (at most :data:`SEED_MAX`)."""
    seed, seeds = int(cfg["seed"]), int(cfg["seeds"])
    if seed + seeds - 1 > SEED_MAX:
        raise ConfigError(
            f"seeds: expected at most {SEED_MAX - seed + 1} with seed {seed} (run i uses seed + i, a uint32 "
            f"seed of at most {SEED_MAX}), got {seeds}"
        )


def check_step_counts(cfg: Mapping[str, Any], total_updates: int, num_envs: int, steps_per_env: int) -> None:
    """The run's counters fit the int32 counters of the train states.

    ``total_updates`` updates of ``num_envs * steps_per_env`` env steps each: the env steps of one
    seed (all environments together) must not exceed :data:`TOTAL_STEPS_MAX`, nor the gradient
    steps (``updates x <algo>.gradient_steps``, where the algorithm has that key) :data:`INT32_MAX`.
    """
    algo = cfg["algo"]
    per_update = int(num_envs) * int(steps_per_env)
    if per_update > TOTAL_STEPS_MAX:
        raise ConfigError(
            f"{algo}.num_envs: one update takes {per_update:,} env steps ({num_envs:,} envs x {steps_per_env:,}), "
            f"more than the int32 step counters hold ({TOTAL_STEPS_MAX:,}); expected {algo}.num_envs at most "
            f"{TOTAL_STEPS_MAX // int(steps_per_env):,}"
        )
    rounded = int(total_updates) * per_update
    if rounded > TOTAL_STEPS_MAX:
        largest = TOTAL_STEPS_MAX // per_update * per_update
        raise ConfigError(
            f"total_steps: {cfg['total_steps']:,} rounded up to whole updates of {per_update:,} env steps is "
            f"{rounded:,}, more than the int32 step counters hold; expected total_steps at most {largest:,}"
        )
    section = cfg.get(algo)
    grad = section.get("gradient_steps") if isinstance(section, Mapping) else None
    if grad is not None and int(total_updates) * int(grad) > INT32_MAX:
        raise ConfigError(
            f"{algo}.gradient_steps: {total_updates:,} updates x {grad:,} gradient steps exceed the int32 "
            f"gradient-step counter ({INT32_MAX:,}); expected {algo}.gradient_steps at most "
            f"{INT32_MAX // int(total_updates):,}, or fewer total_steps"
        )


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def format_bytes(nbytes: int) -> str:
    """``1,561.00 GB``; huge values in scientific notation (exact for any int, no float overflow)."""
    nbytes = int(nbytes)
    if nbytes < 10**15:
        return f"{nbytes / 1e9:,.2f} GB"
    return f"{decimal.Decimal(nbytes) / decimal.Decimal(10**9):.3e} GB"


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), None without a limit."""
    for limit_path, used_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_path).read_text().strip()
            used = int(Path(used_path).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(int(limit) - used, 0)
    return None


def host_available_memory() -> int | None:
    """Bytes of host memory available: ``MemAvailable`` (else free pages), within any cgroup limit."""
    avail = _meminfo_available()
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    group = _cgroup_available()
    if group is not None:
        avail = group if avail is None else min(avail, group)
    return avail


def available_memory() -> tuple[int | None, str]:
    """``(bytes, where)``: free memory of the default JAX device when it reports it (a GPU),
    else the host's available memory; ``(None, ...)`` when neither can be read."""
    import jax

    try:
        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
    except Exception:  # a backend without memory statistics
        stats = None
    if stats and "bytes_limit" in stats:
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return free, f"{device.platform}:{device.id} ({device.device_kind}) has"
    return host_available_memory(), "this machine has"


def check_memory(nbytes: int, what: str, hint: str = "", available: int | None = None,
                 where: str = "this machine has") -> None:
    """Raise a one-line ConfigError when ``nbytes`` (a planned allocation) exceed the memory available.

    ``what`` names the key and the allocation (``"sac.buffer_size: the replay buffer"``), ``hint``
    what to change. ``available`` (bytes) defaults to :func:`available_memory`; when it cannot be
    read the check passes.
    """
    if available is None:
        available, where = available_memory()
        if available is None:
            return
    if int(nbytes) > int(available):
        raise ConfigError(
            f"{what} needs {format_bytes(nbytes)} but {where} {format_bytes(available)} available"
            + (f"; {hint}" if hint else "")
        )


def tree_nbytes(tree: Any) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf, in Python ints (no overflow)."""
    import jax
    import numpy as np

    return sum(math.prod(int(d) for d in leaf.shape) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree_util.tree_leaves(tree))


def state_nbytes(algo: Any, env: Any, env_params: Any, cfg: Mapping[str, Any]) -> int:
    """Bytes of one seed's train state, from its shapes (``jax.eval_shape``: nothing allocated)."""
    import jax
    import jax.numpy as jnp

    key = jax.ShapeDtypeStruct(jax.random.PRNGKey(0).shape, jnp.uint32)
    return tree_nbytes(jax.eval_shape(lambda k: algo.init(k, env, env_params, dict(cfg)), key))


def check_train_memory(
    algo: Any, env: Any, env_params: Any, cfg: Mapping[str, Any], *, copies: int = 2,
    available: int | None = None, where: str = "this machine has",
) -> None:
    """The train states of all seeds, ``copies`` times, fit in the memory available.

    ``copies`` is 2 when the compiled chunk keeps its input state alive beside its output (no
    buffer donation, as on CPU), 1 when the input is donated. For an algorithm with a replay
    buffer (``algo.buffer_nbytes``) the error names the largest ``<algo>.buffer_size`` that fits.
    """
    import numpy as np

    name = cfg["algo"]
    seeds = int(cfg["seeds"])
    per_seed = state_nbytes(algo, env, env_params, cfg)
    total = per_seed * seeds * copies
    if available is None:
        available, where = available_memory()
        if available is None:
            return
    if total <= available:
        return
    layout = f"{seeds:,} seed{'s' if seeds > 1 else ''} x {format_bytes(per_seed)}"
    if copies > 1:
        layout += f", {copies} copies: the chunk's input and output"
    if hasattr(algo, "buffer_nbytes") and isinstance(cfg.get(name), Mapping) and "buffer_size" in cfg[name]:
        section = cfg[name]
        obs_dim = int(np.prod(env.observation_space(env_params).shape))
        act_dim = int(np.prod(env.action_space(env_params).shape))

        def buffer_bytes(size: int, dtype: str) -> int:
            over = {**section, "buffer_size": size, "buffer_dtype": dtype}
            return int(algo.buffer_nbytes({**cfg, name: over}, obs_dim, act_dim)[0])

        dtype = section.get("buffer_dtype", "float32")
        fixed = per_seed - buffer_bytes(int(section["buffer_size"]), dtype)  # the state but the buffer

        def largest_fitting(dtype: str) -> int:
            per_item = buffer_bytes(2, dtype) - buffer_bytes(1, dtype)
            return min((available // (seeds * copies) - fixed - buffer_bytes(1, dtype) + per_item) // per_item,
                       BUFFER_SIZE_MAX)

        largest = largest_fitting(dtype)
        smallest = max(int(section.get("batch_size", 1)), int(section.get("num_envs", 1)), 1)
        if largest >= smallest:
            hint = f"the largest {name}.buffer_size that fits is {largest:,}"
            if dtype == "float32":
                hint += f" ({largest_fitting('bfloat16'):,} with --set {name}.buffer_dtype=bfloat16)"
        else:
            hint = f"no {name}.buffer_size fits" + (f" with {seeds:,} seeds; use fewer --seeds" if seeds > 1 else "")
        check_memory(total, f"{name}.buffer_size: the train state ({layout})", hint, available, where)
    most_seeds = available // (per_seed * copies)
    hint = (f"use at most {most_seeds:,} seeds" if most_seeds >= 1 else
            f"make the state smaller ({name}.num_envs, the network sizes)")
    check_memory(total, f"seeds: the train state ({layout})", hint, available, where)


# --------------------------------------------------------------------------------------------
# Output paths
# --------------------------------------------------------------------------------------------

def _probe(directory: Path, flag: str, target: Path) -> None:
    """Create and remove a temporary entry in ``directory``: the one sure test of writability
    (``os.access`` says yes to root, and knows nothing of full disks or some mounts)."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: cannot write {target}: {directory} is not writable (permission denied)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=directory))
    except OSError as exc:
        raise ConfigError(
            f"{flag}: cannot write {target}: creating an entry in {directory} fails "
            f"({exc.strerror or exc.__class__.__name__})"
        ) from None


def _kind(path: Path, flag: str, target: Path) -> str | None:
    """``"dir"``, ``"file"`` (anything else), or None when nothing is there."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot use {target} ({exc.strerror or exc.__class__.__name__})") from None
    return "dir" if stat.S_ISDIR(mode) else "file"


def check_writable_dir(path: str | os.PathLike, flag: str = "--run-dir", *, rename: bool = False) -> Path:
    """``path`` is a directory, or can be created as one, and can be written; returns it as a Path.

    Raises one line for an existing file (or a broken link), a path under a file, a name longer
    than the file system allows, or a directory where nothing can be created. ``rename=True``
    (``--fresh``, which renames an existing directory aside) also needs its parent writable.
    Nothing is left behind.
    """
    if not os.fspath(path).strip():  # Path("") is the current directory: an unset variable, most likely
        raise ConfigError(f"{flag}: expected a directory path, got an empty string")
    target = Path(path)
    full = target.absolute()
    kind = _kind(full, flag, target)
    if kind == "file":
        raise ConfigError(f"{flag}: {target} is a file, not a directory")
    if kind == "dir":
        _probe(full, flag, target)
        if rename and full.parent != full:
            _probe(full.parent, flag, target)
        return target
    if full.is_symlink():
        raise ConfigError(f"{flag}: {target} is a broken symbolic link")
    existing = next(p for p in full.parents if _kind(p, flag, target) is not None)
    if _kind(existing, flag, target) != "dir":
        raise ConfigError(f"{flag}: cannot create {target}: {existing} is a file, not a directory")
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in full.relative_to(existing).parts:
        if len(os.fsencode(part)) > name_max:
            raise ConfigError(f"{flag}: cannot create {target}: a name in it is longer than {name_max} bytes")
    _probe(existing, flag, target)
    return target


def check_writable_file(path: str | os.PathLike, flag: str) -> Path:
    """``path`` can be written as a file: not a directory, its directory creatable and writable."""
    if not os.fspath(path).strip():
        raise ConfigError(f"{flag}: expected a file path, got an empty string")
    target = Path(path)
    if _kind(target.absolute(), flag, target) == "dir":
        raise ConfigError(f"{flag}: {target} is a directory, not a file")
    parent = target.absolute().parent
    if _kind(parent, flag, target) == "file":
        raise ConfigError(f"{flag}: cannot create {target}: {parent} is a file, not a directory")
    check_writable_dir(parent, flag)
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{flag}: cannot write {target} (permission denied)")
    return target


def compile_cache_dir(setting: str | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The directory that ``compile.cache`` names (None for null: no cache); see its help."""
    if setting is None:
        return None
    if setting != "auto":
        if not setting.strip():
            raise ConfigError("compile.cache: expected 'auto', a directory or null, got an empty string")
        return Path(setting).expanduser()
    named = environ.get("JAX_COMPILATION_CACHE_DIR", "")
    if named.strip():  # a blank variable is an unset one, as for XDG_CACHE_HOME
        return Path(named).expanduser()
    base = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME", "").strip() else Path.home() / ".cache"
    return base / "oe3jax" / "jax"


def use_compile_cache(cfg: Mapping[str, Any], warn: Any = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``compile.cache`` (before the first compilation).

    A later run that compiles the same program (same code, shapes, config, JAX version and
    device) loads it from there instead of compiling it again; the loaded program is the one
    compiled, so the run's results are the same bits. The least recently used programs are deleted
    beyond ``compile.cache_max_gib``. A directory named explicitly must be writable (one-line error);
    with ``auto``, a cache that cannot be created is reported on ``warn`` and the run goes on without.
    With JAX's own switch off (``JAX_ENABLE_COMPILATION_CACHE=false``) the directory is checked but
    nothing is set or created.
    JAX opens the cache of ``JAX_COMPILATION_CACHE_DIR`` at its first compilation, which importing
    the package already makes; that cache is closed here, so that the setting decides (null: none).
    Returns the directory in use, or None.
    """
    import jax

    setting = cfg["compile"]["cache"]
    path = compile_cache_dir(setting)
    if path is not None:
        try:
            check_writable_dir(path, "compile.cache")
            if jax.config.jax_enable_compilation_cache:  # JAX_ENABLE_COMPILATION_CACHE=false: nothing created
                path.mkdir(parents=True, exist_ok=True)
        except (ConfigError, OSError) as exc:
            if setting != "auto":
                raise ConfigError(str(exc).splitlines()[0]) from None
            if warn is not None:
                print(f"warning: no compilation cache ({str(exc).splitlines()[0]})", file=warn)
            path = None
    if not jax.config.jax_enable_compilation_cache:
        path = None
    _point_jax_cache_at(path, cfg["compile"]["cache_max_gib"])
    return path


def _point_jax_cache_at(path: Path | None, max_gib: float) -> None:
    """Point JAX's persistent cache at ``path`` (None: no cache), whether or not JAX opened one."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None if path is None else str(path))
    jax.config.update("jax_compilation_cache_max_size", int(max_gib * 2**30))
    compilation_cache.reset_cache()  # the next compilation opens the cache named above, or none
