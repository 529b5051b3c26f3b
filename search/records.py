"""The output directory of one `archdsl search`: its settings, trial records, and the lock that keeps one writer.

Takes: a directory path, the search's settings (a JSON-ready dict) and trial records (dicts, schema below).
Returns: `RunDir`, which holds the lock for the whole search, appends records durably and loads them back,
reporting (and on resume moving aside) lines a kill or a disk cut short or altered.

Files in the directory:
    run.json               the settings the caller passed, plus `created`, `archdsl_version` and, after a resume,
                           `resumed`: [{time, changed: {key: [old, new]}}] for the settings that changed
    trials.jsonl           one JSON object per finished trial, appended, fsynced; earlier lines are never rewritten
                           (except to move corrupt ones aside on resume)
    trials.corrupt.jsonl   lines moved out of trials.jsonl on resume (partial or altered), kept verbatim
    trials.csv             a flat table regenerated from the records
    .lock                  flock'ed for the whole search; holds the holder's pid, host and start time

Record schema (the caller builds it; `append` adds the last two fields):
    trial         int            sequence number of the trial in this directory
    trial_id      str            the tuner's id for it
    status        str            "ok" | "over_budget" | "predicted_over_budget" | "rejected" | "duplicate" | "failed"
                                 | "screened" (one-shot: its inherited score is below the top-k's, so never measured)
                                 | "unmeasured" (no clean latency: other programs kept the cores busy; measured again)
    retry         int            0, or how many times this point had been left unmeasured before this trial
    score         float | null   the objective's value (optional; = accuracy for objective "accuracy")
    point         {name: value}  the choice-point values of the architecture
    hash          str | null     structural hash of the built graph (null when it did not build)
    accuracy      float | null   validation accuracy (null when not trained)
    epochs        int            epochs trained
    latency_ms    float | null   measured latency (median); null when not measured
    latency_bound "lower"        only where latency_ms is a disturbed measurement's lower bound (bench/measure.py),
                                 far over the budget: the trial is over_budget on it, with no clean figure
    latency       dict | null    the full measurement (quantiles, repeats, ...) as the bench reports it
    predicted_ms  float | null   the latency predictor's estimate
    params, macs, activations    int | null  exact costs from the checker
    error         str | null     why the trial failed or was rejected
    node          str | null     the host the trial ran on; latency_node: the host that measured it
    seconds       {phase: float} wall time per phase (check, build, train, measure, ...)
    time          str            ISO time the trial finished
    record_v      1              the record format version
    checksum      str            16 hex digits of sha256 over the canonical JSON of all the other fields
Non-finite floats (NaN, inf) are stored as null: JSON has none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .trials_csv import CSV_COLUMNS, csv_columns, csv_text

try:  # POSIX only; elsewhere the directory is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunDir", "RunDirError", "LoadResult", "MUST_MATCH", "RECORD_VERSION", "CSV_COLUMNS", "checksum",
           "measurement_counts", "measurement_text",
           "csv_columns"]

RECORD_VERSION = 1
# outcomes of Ray trials that count against --trials ("screened": --objective oneshot, scored but below the bar,
# never measured)
FINISHED_STATUSES = ("ok", "over_budget", "failed", "screened")
# Settings that must be equal for a resumed search to continue the earlier one (the caller may name others).
MUST_MATCH = ("spec_sha256", "budget_ms", "objective", "dataset")

RUN_JSON = "run.json"
TRIALS = "trials.jsonl"
CORRUPT = "trials.corrupt.jsonl"
CSV_NAME = "trials.csv"
LOCK = ".lock"
_RESERVED = ("created", "archdsl_version", "resumed")


class RunDirError(Exception):
    """The output directory cannot be used as asked: locked by another search, holds an earlier search, ..."""


@dataclass
class LoadResult:
    """The valid records of trials.jsonl in file order, and a human-readable line (with its line number) for
    every line that was dropped. `bad_lines` holds those lines verbatim as (line number, bytes)."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bad_lines: list[tuple[int, bytes]] = field(default_factory=list)


def measurement_counts(records: Iterable[dict]) -> dict[str, int]:
    """How clean a search's latency measurements were: `measurements` (measurement attempts), `disturbed`
    (attempts discarded because other programs took the cores), `retried` (trials that measured again a point
    left unmeasured), `unmeasured` (points still without a clean measurement), `rounds` / `discarded_rounds`
    (timed rounds, and those dropped because a measuring thread waited for a CPU)."""
    out = dict.fromkeys(("measurements", "disturbed", "retried", "unmeasured", "rounds", "discarded_rounds"), 0)
    last: dict[str, str] = {}
    for r in records:
        lat = r.get("latency")
        if isinstance(lat, dict):
            out["measurements"] += int(lat.get("tries") or 1)
            out["disturbed"] += int(lat.get("disturbed_tries") or (1 if lat.get("disturbed") else 0))
            d = lat.get("disturbance") if isinstance(lat.get("disturbance"), dict) else {}
            out["rounds"] += int(d.get("rounds") or 0)
            out["discarded_rounds"] += int(d.get("discarded") or 0)
        if int(r.get("retry") or 0) > 0:
            out["retried"] += 1
        if r.get("hash") and r.get("status") in ("ok", "over_budget", "failed", "unmeasured"):
            last[r["hash"]] = r["status"]
    out["unmeasured"] = sum(1 for s in last.values() if s == "unmeasured")
    return out


def measurement_text(counts: dict[str, int]) -> str:
    """One line for the progress, the summary and the plot: '3 of 14 latency measurements disturbed by other
    programs (2 retried, 1 left unmeasured)'; '' when nothing was measured."""
    if not counts.get("measurements"):
        return ""
    text = (f"{counts['disturbed']} of {counts['measurements']} latency measurements disturbed by other "
            f"programs")
    if counts["disturbed"] or counts["retried"] or counts["unmeasured"]:
        text += f" ({counts['retried']} retried later, {counts['unmeasured']} left unmeasured)"
    return text


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _finite(value: Any) -> Any:
    """`value` as JSON will hold it: non-finite floats as None (recursively), tuples as lists, numpy scalars as
    Python numbers, paths as strings."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        value = value.tolist()  # a numpy scalar becomes a Python number, an array a list
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def checksum(record: dict) -> str:
    """16 hex digits of sha256 over the canonical JSON (sorted keys, no spaces) of every field but `checksum`."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(_canonical(body).encode("utf-8")).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists, paths strings), for comparing settings."""
    return json.loads(json.dumps(obj, default=str))


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and os.replace (never half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class RunDir:
    """The output directory of one search.

    `RunDir.open(path, settings, resume=...)` takes it for a search (lock held until `close()`; also a context
    manager: `with RunDir.open(...) as run:`). `RunDir(path)` alone reads it without the lock: `load`,
    `read_settings` and `write_csv` work on a finished or running search (for reports).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.settings: dict | None = None  # the run.json contents, once open
        self._lock_fd: int | None = None
        self._unchecked = False  # resumed, and trials.jsonl not yet cleaned of partial/corrupt lines

    # -- paths
    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def trials_path(self) -> Path:
        return self.path / TRIALS

    @property
    def corrupt_path(self) -> Path:
        return self.path / CORRUPT

    @property
    def csv_path(self) -> Path:
        return self.path / CSV_NAME

    @property
    def is_open(self) -> bool:
        return self._lock_fd is not None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}{', open' if self.is_open else ''})"

    # -- opening and closing
    @classmethod
    def open(cls, path: str | os.PathLike, settings: dict, *, resume: bool,
             must_match: Iterable[str] = MUST_MATCH, defaults: dict | None = None) -> RunDir:
        """Take the directory `path` (created if missing) for a search; returns the open RunDir.

        Takes the exclusive lock (RunDirError if another process holds it). Not resuming: refuses a directory
        that already holds trials, else writes run.json = settings + created + archdsl_version. Resuming: needs
        run.json whose `must_match` keys equal those of `settings` (RunDirError naming the keys that differ) and
        updates it with the new settings (recording what changed); the next `load()` (or the first `append`)
        moves partial and corrupt lines of trials.jsonl aside and reports them. `defaults`: the value a must-match
        key has when an older run.json, or `settings`, does not name it (a setting added since).
        """
        reserved = [k for k in _RESERVED if k in settings]
        if reserved:
            raise ValueError(f"settings may not use the reserved keys {', '.join(reserved)}")
        run = cls(path)
        if resume and not run.path.is_dir():
            raise RunDirError(f"{run.path} does not exist: there is no search to resume there "
                              f"(drop --resume to start one)")
        run._lock()
        try:
            if resume:
                run._resume(settings, tuple(must_match), defaults or {})
            else:
                run._start(settings)
        except BaseException:
            run.close()
            raise
        return run

    def close(self) -> None:
        """Release the lock (idempotent). The lock file stays, emptied."""
        fd, self._lock_fd = self._lock_fd, None
        self._unchecked = False
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunDir:
        if not self.is_open:
            raise RunDirError(f"{self.path} is not open: use `with RunDir.open(path, settings, resume=...)`")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot write to {self.path}: {err.strerror or err}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise RunDirError(f"another search ({holder}) is writing to {self.path}; "
                                  f"wait for it or use another --out") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._lock_fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        """"pid N, started T" from the lock file (the holder may not have written it yet)."""
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            text = f"pid {int(info['pid'])}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "pid unknown, just started"
        host = info.get("host")
        if host and host != socket.gethostname():
            text += f", on host {host}"
        return text

    def _start(self, settings: dict) -> None:
        if self.trials_path.exists() and self.trials_path.stat().st_size > 0:
            found = self._read(repair=False)  # refusing: report, change nothing
            n, bad = len(found.records), len(found.bad_lines)
            extra = f" (and {bad} unreadable line{'' if bad == 1 else 's'})" if bad else ""
            raise RunDirError(f"{self.path} holds {n} trial{'' if n == 1 else 's'}{extra} of an earlier search: "
                              f"add --resume to continue it, or choose another --out")
        self.settings = {**_jsonable(settings), "created": _now(), "archdsl_version": _version()}
        _write_atomic(self.run_json, (json.dumps(self.settings, indent=2) + "\n").encode("utf-8"))

    def _resume(self, settings: dict, must_match: tuple[str, ...], defaults: dict) -> None:
        old = self.read_settings()
        old = {**_jsonable(defaults), **old}
        new = {**_jsonable(defaults), **_jsonable(settings)}  # a setting not given is at its default
        differ = [k for k in must_match if old.get(k) != new.get(k)]
        if differ:
            what = "; ".join(f"{k} was {_short(old.get(k))}, now {_short(new.get(k))}" for k in differ)
            raise RunDirError(f"cannot resume the search in {self.path}: its settings differ ({what}); "
                              f"resume with the same settings, or choose another --out")
        changed = {k: [old.get(k), v] for k, v in new.items() if old.get(k) != v}
        changed.update({k: [v, None] for k, v in old.items() if k not in new and k not in _RESERVED})
        resumed = list(old.get("resumed") or []) + [{"time": _now(), "changed": changed}]
        self.settings = {**new, "created": old.get("created"), "archdsl_version": _version(), "resumed": resumed}
        self._unchecked = True
        _write_atomic(self.run_json, (json.dumps(self.settings, indent=2) + "\n").encode("utf-8"))

    def read_settings(self) -> dict:
        """The run.json of the directory; RunDirError when there is none or it does not read."""
        try:
            text = _read(self.run_json, 16 << 20).decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise RunDirError(f"{self.path} has no {RUN_JSON}: there is no search to resume there "
                              f"(drop --resume to start one)") from None
        except OSError as err:
            raise RunDirError(f"cannot read {self.run_json}: {err.strerror or err}") from None
        try:
            data = json.loads(text)
        except ValueError as err:
            raise RunDirError(f"{self.run_json} is not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise RunDirError(f"{self.run_json} does not hold a JSON object")
        return data

    # -- records
    def append(self, record: dict) -> dict:
        """Add `record_v` and `checksum` to (a copy of) `record` and append it to trials.jsonl as one line,
        flushed and fsynced before returning, so a kill loses at most the record being written. Returns the
        record as written. Needs the lock."""
        if not self.is_open:
            raise RunDirError(f"{self.path} is not open: open it before appending records")
        if self._unchecked:  # never append after a partial line
            self.load()
        body = {k: _finite(v) for k, v in record.items() if k not in ("record_v", "checksum")}
        body["record_v"] = RECORD_VERSION
        body["checksum"] = checksum(body)
        line = (json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()
        created = not self.trials_path.exists()
        fd = os.open(self.trials_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:  # one write in practice; loop in case the kernel takes part of it
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path)
        return body

    def load(self) -> LoadResult:
        """Read trials.jsonl: the valid records in file order, and a problem line for each dropped line.

        A last line that does not parse (a write cut short by a kill) is "partial last line"; any other line
        that does not parse, is not a record, or whose checksum does not match is corrupt. Dropped lines are
        never used. A complete last record missing only its newline is kept. When this RunDir holds the lock
        (an open search), the dropped lines are also appended verbatim to trials.corrupt.jsonl and trials.jsonl
        is rewritten atomically with the valid lines only, so appends continue on a clean file.
        """
        return self._read(repair=self.is_open)

    def _read(self, repair: bool) -> LoadResult:
        try:
            data = _read(self.trials_path, MAX_TRIALS_BYTES)
        except FileNotFoundError:
            self._unchecked = False
            return LoadResult()
        except OSError as err:
            raise RunDirError(f"cannot read {self.trials_path}: {err.strerror or err}") from None
        result = LoadResult()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the file ends with a newline
        last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
        kept: list[bytes] = []
        moved = f"; moved to {CORRUPT}" if repair else ""
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            lineno = i + 1
            record, why = _parse(raw)
            if record is not None:
                result.records.append(record)
                kept.append(raw)
                continue
            if why == "json" and i == last:
                text = "partial last line (a write cut short, e.g. by a kill): dropped"
            elif why == "json":
                text = "corrupt: not valid JSON, skipped"
            else:
                text = f"corrupt: {why}, skipped"
            result.problems.append(f"{self.trials_path}:{lineno}: {text}{moved}")
            result.bad_lines.append((lineno, raw))
        clean = not result.bad_lines and (not data or data.endswith(b"\n")) and len(kept) == len(lines)
        if repair and not clean:
            if result.bad_lines:
                with open(self.corrupt_path, "ab") as f:
                    f.write(b"".join(raw + b"\n" for _, raw in result.bad_lines))
                    f.flush()
                    os.fsync(f.fileno())
            _write_atomic(self.trials_path, b"".join(raw + b"\n" for raw in kept))
        if repair:
            self._unchecked = False
        return result

    def write_csv(self, records: Iterable[dict] | None = None) -> Path:
        """Write trials.csv (atomically) from `records` (default: the valid records of trials.jsonl): the
        CSV_COLUMNS, then seconds_<phase> and point.<name> columns. Returns its path."""
        rows = list(self.load().records if records is None else records)
        _write_atomic(self.csv_path, csv_text(rows).encode("utf-8"))
        return self.csv_path


def _parse(raw: bytes) -> tuple[dict | None, str]:
    """(record, "") for a valid line; (None, "json") when it does not parse; (None, why) when it is not a record."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError
        return None, "json"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    if obj.get("record_v") != RECORD_VERSION:
        return None, f"unknown record version {_short(obj.get('record_v'), 20)}"
    if not isinstance(obj.get("checksum"), str):
        return None, "no checksum"
    try:
        ok = checksum(obj) == obj["checksum"]
    except ValueError:  # NaN in a line no archdsl wrote
        ok = False
    if not ok:
        return None, "checksum mismatch (the line was altered)"
    return obj, ""


def _version() -> str:
    from ..version import __version__

    return __version__


MAX_TRIALS_BYTES = 1 << 30  # a trials.jsonl past this is not one a search wrote (~3 KB a record)


def _read(path: Path, limit: int) -> bytes:
    """limits.read_bounded, its refusal as a RunDirError ("cannot read PATH: it is a directory, ...")."""
    from archdsl.limits import FileRefused, read_bounded

    try:
        return read_bounded(path, limit, "not a file a search wrote")
    except FileRefused as e:
        raise RunDirError(str(e)) from None
