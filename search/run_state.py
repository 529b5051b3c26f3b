"""The search output directory as the report reads it (stage 6, reporting): `read_run(RUN_DIR)` -> `RunState`.

Takes: a search output directory (search/records.py's files, summary.json, baselines.json, top/*.arch). It is only
read: the lock is never taken and nothing is written; a search still appending records is fine (a partial last
line is left out and said so). Returns: a RunState (settings, records, problems, summary, whether the search is
running, finished, interrupted or stopped), or raises ReportError with one line.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .records import FINISHED_STATUSES, LOCK, RUN_JSON, TRIALS, RunDir, RunDirError

__all__ = ["ReportError", "RunState", "read_run", "STATUSES", "FINISHED", "SUMMARY"]


def _num(value: Any) -> float | None:
    """A finite int or float as a float; None for anything else (bools, strings, NaN, missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None

STATUSES = {  # in the order the page lists them, with what each means
    "ok": "measured within the budget, scored",
    "over_budget": "measured over the budget",
    "predicted_over_budget": "predicted over the budget, never built",
    "rejected": "rejected by the spec's checks",
    "duplicate": "the same network as an earlier trial",
    "failed": "raised an error (see Failures)",
    "screened": "one-shot: its inherited score was below the top's, so it was never measured",
    "unmeasured": "no clean latency: other programs kept the cores busy; measured again later or on --resume",
}
FINISHED = FINISHED_STATUSES  # they count against --trials
SUMMARY = "summary.json"
_TRIAL_DIR = re.compile(r"^run_trial_([0-9a-f]+)_\d+")


class ReportError(Exception):
    """The directory cannot be reported on: missing, not a search output directory, unreadable."""


@dataclass
class RunState:
    """What the directory holds, read once. `state`: "running", "finished", "interrupted" or "stopped"."""

    path: Path
    settings: dict
    records: list[dict]
    problems: list[str] = field(default_factory=list)
    summary: dict | None = None
    state: str = "stopped"
    state_note: str = ""
    running: list[str] = field(default_factory=list)  # Ray trial ids started by the live search, no record yet
    top_files: dict[str, Path] = field(default_factory=dict)  # architecture hash -> top/<rank>_<hash>.arch
    baselines: list[dict] = field(default_factory=list)  # baselines.json: hand-designed specs scaled to the budget
    _rows: dict[int, int] = field(default_factory=dict, repr=False)  # id(record) -> its index in records

    @property
    def metric(self) -> str:
        """"score" (the objective's value), or "accuracy" for records written before there was a score."""
        return "score" if any(_num(r.get("score")) is not None for r in self.records) or not self.records \
            else "accuracy"

    @property
    def budget(self) -> float | None:
        return _num(self.settings.get("budget_ms"))

    def anchor(self, record: dict) -> str:
        """The id of the record's row in the all-trials table: trial-<n>, or rec-<line> for the outcomes decided
        before any trial started (rejected, duplicate, predicted over budget), which have no trial number."""
        trial = record.get("trial")
        if isinstance(trial, int) and not isinstance(trial, bool):
            return f"trial-{trial}"
        if not self._rows:
            self._rows.update({id(r): i for i, r in enumerate(self.records)})
        return f"rec-{self._rows.get(id(record), 0)}"


# ------------------------------------------------------------------------------------------------ reading

def read_run(run_dir: str | os.PathLike) -> RunState:
    """Read RUN_DIR without the lock. Raises ReportError (one line) when it is not a readable search directory."""
    path = Path(run_dir)
    if not path.exists():
        raise ReportError(f"{path} does not exist")
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory")
    if not (path / RUN_JSON).exists():
        raise ReportError(f"{path} is not a search output directory: it has no {RUN_JSON}")
    run = RunDir(path)  # not opened: its load() reads only, and repairs nothing
    try:
        settings = run.read_settings()
        loaded = run.load()
    except RunDirError as err:
        raise ReportError(str(err)) from None
    except OSError as err:
        raise ReportError(f"cannot read {path / TRIALS}: {err.strerror or err}") from None
    from .rescore import apply_rescores, load_rescores

    # the best trials trained again with more seeds (--rescore) rank by their mean, as in the search's own summary
    records = apply_rescores(loaded.records, load_rescores(path, loaded.records, settings.get("seed")))
    st = RunState(path=path, settings=settings, records=records, problems=list(loaded.problems))
    try:
        summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
        st.summary = summary if isinstance(summary, dict) else None
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:  # written in place at the end: may be caught half-written
        st.problems.append(f"{path / SUMMARY}: not readable ({err}); ignored")
    try:
        data = json.loads((path / "baselines.json").read_text(encoding="utf-8"))
        st.baselines = [b for b in data if isinstance(b, dict) and b.get("name")] if isinstance(data, list) else []
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:
        st.problems.append(f"{path / 'baselines.json'}: not readable ({err}); ignored")
    for f in sorted((path / "top").glob("*_*.arch")):
        st.top_files.setdefault(f.stem.split("_", 1)[1], f)
    holder = _lock_holder(path)
    if holder is not None:
        st.state = "running"
        st.state_note = f"running: pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
        recorded = {str(r.get("trial_id")) for r in st.records}
        st.running = [t for t in _started_trials(path, holder.get("started")) if t not in recorded]
    elif st.summary is not None and sum(int(v) for v in (st.summary.get("counts") or {}).values()
                                        if isinstance(v, int)) >= len(st.records):
        st.state = "interrupted" if st.summary.get("interrupted") else "finished"
        took = _num(st.summary.get("seconds"))
        st.state_note = ("interrupted: finished trials are kept; continue it with archdsl search ... --resume"
                         if st.state == "interrupted" else "finished" + (f" in {took:.0f} s" if took else ""))
    else:
        st.state_note = ("stopped before finishing (killed?): no summary of the last trials; continue it with "
                         "archdsl search ... --resume")
    return st


def _lock_holder(path: Path) -> dict | None:
    """The lock file's {pid, host, started} when the search holding it still runs, else None. The holder writes
    them when it takes the lock and empties the file when it lets go; a killed search leaves them behind, so on
    this host the pid must also be alive, and not have started after the lock was taken (a reused pid). The lock
    itself is never taken: trying it could make a search starting at that moment refuse to run."""
    try:
        info = json.loads((path / LOCK).read_text(encoding="utf-8"))
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.get("host") in (None, socket.gethostname()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, another user's
            pass
        began = _process_start(pid)
        try:
            locked = datetime.fromisoformat(str(info.get("started"))).timestamp()
        except ValueError:
            locked = None
        if began is not None and locked is not None and began > locked + 2:
            return None
    return info


def _process_start(pid: int) -> float | None:
    """When process `pid` started (Unix time, from Linux's /proc); None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _started_trials(path: Path, since: Any) -> list[str]:
    """Ray trial ids whose trial directory (RUN_DIR/ray/*/run_trial_<id>_...) appeared since the lock was taken."""
    try:
        t0 = datetime.fromisoformat(str(since)).timestamp()
    except ValueError:
        return []
    out = []
    for d in sorted((path / "ray").glob("*/run_trial_*")):
        m = _TRIAL_DIR.match(d.name)
        try:
            if m and d.is_dir() and d.stat().st_mtime >= t0 - 1:
                out.append(m.group(1))
        except OSError:
            continue
    return out
