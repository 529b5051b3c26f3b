"""The measurement lock: at most one timing loop at a time, and no heavy work beside it, across processes.

Takes: an optional lock-file path and timeout. Returns: context managers.

`measurement_lock()` is exclusive. Within a process a re-entrant threading lock serializes threads (and lets
`compare` call `measure` while holding it); across processes an `fcntl.flock` (LOCK_EX) on a lock file (default
`$ARCHDSL_LOCK_DIR/measure.lock`, else `~/.cache/archdsl/measure.lock`) serializes concurrent searches, so two
processes never time models at the same moment.

`compute_lock()` is shared (LOCK_SH on the same file): heavy work that would steal the cores from a timing loop
(a search trial's training steps) holds it in short slices. Any number of holders run together; a measurement
waits until the current slices end, and holds the machine alone while it times. Writers have priority: a
measurement first takes a turnstile file (`<lock>.turnstile`) that every new compute slice must pass, so a
stream of training steps cannot starve it. A process that holds the measurement lock passes through
`compute_lock()` without waiting (its own work is what is being timed).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

try:  # POSIX only; elsewhere the threading lock alone applies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


__all__ = ["LockTimeout", "measurement_lock", "compute_lock", "default_lock_path"]


class LockTimeout(TimeoutError):
    """The measurement lock was not acquired within the timeout (another measurement is running)."""


_THREAD_LOCK = threading.RLock()
_depth = 0  # nesting depth of the holding thread (guarded by _THREAD_LOCK); the file lock is taken once
_owner: int | None = None  # the thread that holds the measurement lock
_POLL_S = 0.01


def default_lock_path() -> Path:
    """`$ARCHDSL_LOCK_DIR/measure.lock`, else `$XDG_CACHE_HOME/archdsl/measure.lock`, else ~/.cache/archdsl/."""
    base = os.environ.get("ARCHDSL_LOCK_DIR")
    if not base:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(cache, "archdsl")
    return Path(base) / "measure.lock"


@contextlib.contextmanager
def measurement_lock(path: str | os.PathLike | None = None, timeout: float | None = None) -> Iterator[Path]:
    """Hold the measurement lock for the body. `timeout=None` waits forever; otherwise raises LockTimeout after
    `timeout` seconds. Re-entrant in the holding thread (a nested call does not touch the file again, whatever
    its path). Yields the lock file's path."""
    global _depth, _owner
    lock_path = Path(path) if path is not None else default_lock_path()
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    got = _THREAD_LOCK.acquire() if timeout is None else _THREAD_LOCK.acquire(timeout=max(0.0, timeout))
    if not got:
        raise LockTimeout(f"another thread holds the measurement lock (waited {timeout:g} s)")
    fd = None
    try:
        if _depth == 0 and fcntl is not None:
            fd = _acquire_file(lock_path, deadline, timeout)
        _depth += 1
        _owner = threading.get_ident()
        try:
            yield lock_path
        finally:
            _depth -= 1
            if _depth == 0:
                _owner = None
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        _THREAD_LOCK.release()


def _flock(fd: int, deadline: float | None, what: str, timeout: float | None) -> None:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"another process holds the measurement lock {what} "
                                  f"(waited {timeout:g} s)") from None
            time.sleep(_POLL_S)


def _acquire_file(lock_path: Path, deadline: float | None, timeout: float | None) -> int:
    """Take the turnstile (so no new compute slice starts), then the lock itself, then let the turnstile go."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    turn = os.open(_turnstile(lock_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(turn, deadline, str(lock_path), timeout)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, deadline, str(lock_path), timeout)
        except BaseException:
            os.close(fd)
            raise
        return fd
    finally:
        os.close(turn)  # closing the descriptor releases the turnstile


@contextlib.contextmanager
def compute_lock(path: str | os.PathLike | None = None) -> Iterator[None]:
    """Hold the shared side of the measurement lock for the body: heavy work (a training step) that must not
    run while a model is timed. Keep the body short (one step), so a waiting measurement starts soon."""
    if fcntl is None or _owner == threading.get_ident():  # no flock here, or this thread is the one measuring
        yield
        return
    lock_path = Path(path) if path is not None else default_lock_path()
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    turn = os.open(_turnstile(lock_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(turn, fcntl.LOCK_EX)  # wait behind a measurement that is queued or running
        fcntl.flock(turn, fcntl.LOCK_UN)
    finally:
        os.close(turn)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _turnstile(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".turnstile")
