"""Files of a run directory that survive a kill or a full disk, and the lock that keeps one
process per run directory.

- :func:`atomic_write_text` writes a temporary file in the same directory, flushes it to disk and
  renames it over the target: a reader sees the old file or the new one, never a torn one.
- :func:`append_text` appends and syncs; it never truncates what is there.
- Any failure to write becomes :class:`StorageError`, one line naming the file and the cause.
- :class:`RunLock` holds an exclusive ``flock`` on ``<run_dir>/.lock`` while a process trains;
  the kernel releases it when the process ends, however it ends, so a kill leaves no stale lock.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import tempfile
from pathlib import Path


class StorageError(RuntimeError):
    """A file of the run that could not be written; the message names it and says what is intact.

    ``no_space`` tells a full disk (or quota) from any other cause (a path that is a directory,
    no permission), which making room does not cure."""

    def __init__(self, message: str, no_space: bool = False):
        super().__init__(message)
        self.no_space = no_space


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or type(exc).__name__


def storage_error(path: Path, exc: OSError, what: str = "write") -> StorageError:
    return StorageError(f"cannot {what} {path}: {_describe(exc)}", no_space=exc.errno in (errno.ENOSPC, errno.EDQUOT))


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once (temporary file, fsync, rename)."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:  # mkdir says only "File exists" or "Not a directory"
            raise StorageError(f"cannot write {path}: {blocker} is a file, not a directory") from None
        raise storage_error(path, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` and sync it to disk."""
    try:
        with open(path, "a", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise storage_error(path, exc, "append to") from None


class RunDirBusy(RuntimeError):
    """Another live process trains in the run directory."""


class RunLock:
    """An exclusive lock on a run directory for the life of this process (or until :meth:`release`)."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(self.run_dir, exc, "create the run directory") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise storage_error(self.path, exc, "open the run directory's lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirBusy(
                f"run directory {self.run_dir} is in use by {holder}; wait for it to finish, "
                "stop it, or choose another --run-dir"
            ) from None
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        try:  # who holds it, for the message of a second process (the lock holds without it)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} (started {stamp})\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
