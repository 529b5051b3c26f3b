"""The measurement lock: at most one timing loop at a time, across threads and across processes of this user.

Takes: an optional lock-file path and timeout. Returns: a context manager. Within a process a re-entrant
threading lock serializes threads (and lets `compare` call `measure` while holding it); across processes an
`fcntl.flock` on a lock file (default `$ARCHDSL_LOCK_DIR/measure.lock`, else `~/.cache/archdsl/measure.lock`)
serializes concurrent searches, so two processes never time models at the same moment and share the cores.
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


class LockTimeout(TimeoutError):
    """The measurement lock was not acquired within the timeout (another measurement is running)."""


_THREAD_LOCK = threading.RLock()
_depth = 0  # nesting depth of the holding thread (guarded by _THREAD_LOCK); the file lock is taken once
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
    global _depth
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
        try:
            yield lock_path
        finally:
            _depth -= 1
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        _THREAD_LOCK.release()


def _acquire_file(lock_path: Path, deadline: float | None, timeout: float | None) -> int:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"another process holds the measurement lock {lock_path} "
                                      f"(waited {timeout:g} s)") from None
                time.sleep(_POLL_S)
    except BaseException:
        os.close(fd)
        raise
