"""Disturbance detection for timing loops: did anything take a core from the code being timed?

Takes: nothing (reads /proc). Returns: `ThreadProbe` (read around each timed round), `LoadWindow` (the whole
machine's load over a measurement) and `wait_for_quiet` (bounded backoff until the machine is free).

Signals, each measured in the run itself, so no earlier run is needed:
  - run-queue wait of each measuring thread: /proc/self/task/TID/schedstat, second field (nanoseconds the
    thread was runnable but not running). A measuring thread that waits during a timed round was preempted,
    so that round's time includes someone else's work: the round is discarded. The measuring threads are the
    calling thread plus every thread of the process that ran during the warm-up (torch's OpenMP workers).
  - involuntary context switches of the process (getrusage): the same event, where schedstat is missing.
  - other processes' CPU time and the hypervisor's steal time over the whole measurement: /proc/stat's busy
    and steal jiffies minus this process's own CPU time, in cores.
  - whether the measuring threads run side by side (`TeamProbe`, with 2 or more threads): a small 3x3 conv at
    the measuring thread count, timed after each round, against its one-thread time. On a quiet 2-vCPU KVM
    guest the host now and then runs the two vCPUs so that threads that share work stall each other: for
    seconds to a minute a 2-thread conv takes 2.7x its usual time (2.3x its ONE-thread time) while one-thread
    work, independent work on both cores, the run queues and the steal counter are all unchanged, so none of the
    signals above sees it, and a network read in that state measures up to 2.7x slow. Such rounds are discarded.
On a platform without /proc the probes say so (`probe: "rusage"` or `"none"`) and the engine falls back on the
reference workload's drift check alone.
"""

from __future__ import annotations

import math
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import stats

__all__ = ["ThreadProbe", "Boost", "Disturbance", "busy_processes", "SPIN", "LoadWindow", "LoadSample",
           "wait_for_quiet", "round_disturbed", "usable_cores", "WAIT_ABS_NS", "WAIT_REL", "STEAL_TOL", "TeamProbe",
           "BOUND_WAIT",
           "TEAM_TOL", "TEAM_FRAC", "TEAM_MIN"]

# A round is disturbed when its measuring threads waited in the run queue for more than
# WAIT_ABS_NS + WAIT_REL x the round's duration. On a quiet machine the wait is 0 in nearly every round (a kernel
# worker now and then takes a few microseconds); a neighbour process sharing a core makes it a time slice
# (0.75-3 ms on Linux), far above this bound.
WAIT_ABS_NS = 20_000
WAIT_REL = 0.02
STEAL_TOL = 0.05  # cores of steal time over a measurement that make it disturbed
# A discarded round still bounds the latency from below: a measuring thread kept off its core for w seconds delays
# the round by about w (its team mates wait for it at the next barrier), so the round's time less BOUND_WAIT x its
# threads' summed run-queue wait is under the undisturbed time (2x for the cache a neighbour's slice evicts). With
# light background work (a cluster's daemons: 3-5% of a core) a 50 ms round nearly always waits 2-4% of its
# length, over WAIT_REL: such a network can never be measured cleanly, but its bound can show it far over a budget.
# Rounds the team probe flagged are never bounded: their slowdown shows in no wait.
BOUND_WAIT = 2.0
# A round is disturbed when the team probe (a conv at the measuring thread count) took more than TEAM_TOL x the
# same conv on one thread. Side by side it takes 0.86x (2 vCPUs, AMD EPYC KVM guest), with noise up to ~1.15x;
# with the threads stalling each other 2.3-2.8x.
TEAM_TOL = 1.5
# One probe call can run fast while the state lasts (10-20% of the slow rounds pass), so the state is judged over
# the measurement too: more than TEAM_FRAC of its rounds (and at least TEAM_MIN) flagged makes it disturbed, even
# when enough rounds passed. On a quiet machine a round is flagged now and then (a kernel thread's slice).
TEAM_FRAC = 0.1
TEAM_MIN = 3

_TASKS = "/proc/self/task"


# A busy loop that ends by itself: `python -c SPIN SECONDS [CPU]` (pinned to CPU when given).
SPIN = ("import os, sys, time\n"
        "if len(sys.argv) > 2: os.sched_setaffinity(0, {int(sys.argv[2])})\n"
        "end = time.monotonic() + float(sys.argv[1])\n"
        "while time.monotonic() < end: pass\n")


def busy_processes(seconds: float, cpus=None, per_cpu: int = 1, new_session: bool = False) -> list:
    """Start local load: `per_cpu` busy-loop processes pinned to each CPU of `cpus`, or `per_cpu` unpinned ones
    when `cpus` is None; each ends by itself after `seconds` (kill them sooner with .kill()). `new_session` puts
    them in a session of their own, as an unrelated program would be. For tests, the search's test hook and
    benchmarks; returns the Popen objects."""
    import subprocess
    import sys

    where = [None] if cpus is None else list(cpus)
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)] + ([] if c is None else [str(c)]),
                             start_new_session=new_session)
            for c in where for _ in range(per_cpu)]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _schedstat(tid: int) -> tuple[int, int] | None:
    """(ns on the CPU, ns waiting in the run queue) of one thread of this process; None when unreadable."""
    try:
        with open(f"{_TASKS}/{tid}/schedstat", "rb") as fh:
            f = fh.read().split()
        return int(f[0]), int(f[1])
    except (OSError, ValueError, IndexError):
        return None


def _all_threads() -> dict[int, tuple[int, int]]:
    out = {}
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return out
    for t in tids:
        if t.isdigit():
            s = _schedstat(int(t))
            if s is not None:
                out[int(t)] = s
    return out


class ThreadProbe:
    """Run-queue wait of the measuring threads, read cheaply (one pread per thread) around each timed round.

    Use: `begin_warmup()` before the warm-up runs, `end_warmup()` after them (picks the threads that ran), then
    `read()` before and after each round; the difference is the wait in nanoseconds. `nivcsw()` is the process's
    involuntary context switch count (the fallback signal)."""

    def __init__(self) -> None:
        self.caller = threading.get_native_id()
        self.probe = "schedstat" if _schedstat(self.caller) is not None else "rusage"
        self._fds: dict[int, int] = {}
        self._before: dict[int, tuple[int, int]] = {}
        self._t0 = 0.0

    @property
    def threads(self) -> int:
        return len(self._fds)

    def begin_warmup(self) -> None:
        if self.probe == "schedstat":
            self._before = _all_threads()
            self._t0 = time.perf_counter()

    def tids(self) -> list[int]:
        return list(self._fds)

    def end_warmup(self) -> None:
        """Keep the threads that were on a CPU for at least 10% of the warm-up (and the calling thread): torch's
        OpenMP workers run most of it, a Ray process's background threads a few percent."""
        if self.probe != "schedstat":
            return
        wall_ns = max(1.0, (time.perf_counter() - self._t0) * 1e9)
        chosen = {self.caller}
        for tid, (cpu, _) in _all_threads().items():
            if cpu - self._before.get(tid, (0, 0))[0] >= 0.10 * wall_ns:
                chosen.add(tid)
        self.close()
        for tid in chosen:
            try:
                self._fds[tid] = os.open(f"{_TASKS}/{tid}/schedstat", os.O_RDONLY)
            except OSError:
                pass
        if not self._fds:
            self.probe = "rusage"

    def read(self) -> int:
        """Total run-queue wait (ns) of the measuring threads so far; threads that ended are dropped."""
        total = 0
        for tid, fd in list(self._fds.items()):
            try:
                total += int(os.pread(fd, 128, 0).split()[1])
            except (OSError, ValueError, IndexError):
                os.close(fd)
                del self._fds[tid]
        return total

    @staticmethod
    def nivcsw() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()


class TeamProbe:
    """Do the measuring threads run side by side? A 64-channel 3x3 conv on a 14x14 map (torch, inference) timed
    once per round at the measuring thread count, divided by its time on one thread (the best of several calls,
    taken by `calibrate()` before the warm-up; one-thread work is not slowed by the state this looks for).
    `check()` returns that ratio for one call; above TEAM_TOL the round is disturbed. Inactive (`active` False)
    with one thread, without torch, or with ARCHDSL_TEAM_PROBE=0."""

    _one_thread_best: float | None = None  # this process's best one-thread time: the same in every state

    def __init__(self) -> None:
        self.active = False
        self.threads = 1
        self.one_thread = math.nan
        self.worst = 0.0
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return
        self.threads = torch.get_num_threads()
        self.active = self.threads >= 2 and os.environ.get("ARCHDSL_TEAM_PROBE", "1") != "0"
        if self.active:
            g = torch.Generator().manual_seed(0)
            self._w = torch.randn(64, 64, 3, 3, generator=g) * 0.05
            self._x = torch.randn(1, 64, 14, 14, generator=g)
            self._conv = torch.nn.functional.conv2d

    def _call(self) -> float:
        t0 = time.perf_counter()
        self._conv(self._x, self._w, None, 1, 1)
        return time.perf_counter() - t0

    def calibrate(self) -> None:
        if not self.active:
            return
        import torch

        with torch.inference_mode():
            torch.set_num_threads(1)
            try:
                for _ in range(2):
                    self._call()
                one = min(self._call() for _ in range(5))
            finally:
                torch.set_num_threads(self.threads)
            for _ in range(3):
                self._call()
        best = TeamProbe._one_thread_best
        TeamProbe._one_thread_best = one if best is None else min(best, one)
        self.one_thread = TeamProbe._one_thread_best

    def check(self) -> float:
        """The probe conv's time at the measuring thread count / its one-thread time (one call)."""
        r = self._call() / self.one_thread
        self.worst = max(self.worst, r)
        return r


BOOST_NICE = -20


class Boost:
    """Raise the measuring threads' scheduling priority while they are timed, where this process may (root or
    CAP_SYS_NICE): each thread's nice value and, with the kernel's autogroups, this session's group, are set
    to BOOST_NICE and restored afterwards. A busy program at normal priority then rarely takes a measuring
    thread's core, so OpenMP barriers are not stretched by its time slices and most rounds stay clean. Off with
    ARCHDSL_MEASURE_BOOST=0. `state` says what was done (for the Measurement's record)."""

    def __init__(self, tids: list[int]):
        self.tids = tids
        self._old: dict[int, int] = {}
        self._group: int | None = None
        self.state: dict[str, Any] = {"applied": False}

    def __enter__(self) -> "Boost":
        if os.environ.get("ARCHDSL_MEASURE_BOOST", "1") == "0":
            self.state = {"applied": False, "why": "ARCHDSL_MEASURE_BOOST=0"}
            return self
        for tid in self.tids:
            try:
                old = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, BOOST_NICE)
                self._old[tid] = old
            except OSError as e:  # not permitted (an ordinary user), or the thread ended
                self.state = {"applied": False, "why": f"setpriority: {e.strerror}"}
                self.__exit__()
                return self
        try:  # with autogroups, nice only ranks threads inside one session: raise the session's group too
            with open("/proc/self/autogroup", encoding="ascii") as fh:
                self._group = int(fh.read().split("nice")[1])
            with open("/proc/self/autogroup", "w", encoding="ascii") as fh:
                fh.write(str(BOOST_NICE))
        except (OSError, ValueError, IndexError):
            self._group = None
        self.state = {"applied": True, "nice": BOOST_NICE, "autogroup": self._group is not None}
        return self

    def __exit__(self, *exc) -> None:
        for tid, old in self._old.items():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, old)
            except OSError:
                pass
        self._old = {}
        if self._group is not None:
            try:
                with open("/proc/self/autogroup", "w", encoding="ascii") as fh:
                    fh.write(str(self._group))
            except OSError:
                pass
            self._group = None


def round_disturbed(wait_ns: int, nivcsw: int, round_s: float, probe: str) -> bool:
    """Whether one timed round was disturbed: its measuring threads waited for a CPU beyond the tolerance
    (schedstat), or, without schedstat, the process was preempted at all."""
    if probe == "schedstat":
        return wait_ns > WAIT_ABS_NS + WAIT_REL * round_s * 1e9
    return nivcsw > 0


@dataclass
class LoadSample:
    """The machine's load over a window: other processes' CPU use and steal time in cores, the window's length."""

    others_cpu: float | None
    steal: float | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)
        return {"others_cpu": r(self.others_cpu), "steal": r(self.steal), "window_s": round(self.seconds, 3)}


def _proc_stat() -> tuple[int, int] | None:
    """(busy jiffies, steal jiffies) over all CPUs from /proc/stat's first line; None where unreadable."""
    try:
        with open("/proc/stat", "rb") as fh:
            f = fh.readline().split()
        v = [int(x) for x in f[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user/nice
    busy = v[0] + v[1] + v[2] + (v[5] + v[6] if len(v) > 6 else 0)
    return busy, (v[7] if len(v) > 7 else 0)


class LoadWindow:
    """Other processes' CPU time and steal time from `start()` (or construction) to `sample()`."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self._stat = _proc_stat()
        t = os.times()
        self._self = t.user + t.system
        self._t = time.perf_counter()

    def sample(self) -> LoadSample:
        dt = max(1e-9, time.perf_counter() - self._t)
        now = _proc_stat()
        if now is None or self._stat is None:
            return LoadSample(None, None, dt)
        t = os.times()
        own = (t.user + t.system) - self._self
        busy = (now[0] - self._stat[0]) / self.HZ
        steal = (now[1] - self._stat[1]) / self.HZ
        # jiffies are counted in ticks (10 ms at HZ=100): a short window can read a little below zero
        return LoadSample(max(0.0, (busy - own) / dt), max(0.0, steal / dt), dt)


def wait_for_quiet(threads: int, deadline: float, *, window_s: float = 0.25,
                   clock=time.monotonic, sleep=time.sleep) -> tuple[bool, float, LoadSample | None]:
    """Wait, with backoff (window_s, then doubling up to 4 s between looks), until the other processes leave
    `threads` cores free (their CPU use + steal <= usable cores - threads + 0.25), or until `clock()` passes
    `deadline`. Returns (quiet, seconds waited, the last load sample)."""
    t0 = clock()
    cores = usable_cores()
    pause = window_s
    last = None
    while True:
        w = LoadWindow()
        sleep(window_s)
        last = w.sample()
        if last.others_cpu is None:  # no /proc: nothing to wait for
            return True, clock() - t0, last
        if last.others_cpu + (last.steal or 0.0) <= cores - threads + 0.25:
            return True, clock() - t0, last
        if clock() + pause > deadline:
            return False, clock() - t0, last
        sleep(pause)
        pause = min(4.0, pause * 2)


@dataclass
class Disturbance:
    """How disturbed one series of timed rounds was: the counts the engine keeps while it discards rounds, the
    machine's load over them, and the verdict."""

    probe: str
    threads: int
    rounds: int = 0
    discarded: int = 0
    preempted: int = 0
    wait_ns: int = 0
    load: LoadSample | None = None
    raw: list[float] = field(default_factory=list)  # the first candidate's times in the discarded rounds
    boost: dict | None = None  # disturb.Boost's state: whether the measuring threads ran at raised priority
    apart: int = 0  # rounds discarded because the team probe found the measuring threads stalling each other
    team: "TeamProbe | None" = None  # the active probe of these rounds, if any
    # per discarded round that a wait explains (not flagged by the team probe): (the first candidate's time less
    # BOUND_WAIT x the wait, the reference's time in that round or None), seconds
    bounded: list[tuple[float, float | None]] = field(default_factory=list)

    def clean(self) -> int:
        return self.rounds - self.discarded

    def verdict(self, min_clean: int) -> str | None:
        """None when the measurement is clean; else why not, in words."""
        load = self.load
        if self.clean() < min_clean and self.discarded:  # (too few rounds with none discarded: the time cap's doing)
            why = (f"{self.clean()} of {self.rounds} rounds clean, {min_clean} needed; measuring threads waited "
                   f"{self.wait_ns / 1e6:.1f} ms for a CPU")
            if load is not None and load.others_cpu is not None:
                why += f", other processes used {load.others_cpu:.1f} cores"
            return why + self._apart_words()
        if self.apart >= TEAM_MIN and self.apart > TEAM_FRAC * self.rounds:
            return f"{self.apart} of {self.rounds} rounds discarded" + self._apart_words()
        if load is not None and load.steal is not None and load.steal > STEAL_TOL:
            return f"the hypervisor took {load.steal:.2f} cores (steal time) during the measurement"
        return None

    def boundable(self) -> bool:
        """Whether the discarded rounds' bounds hold (`bounded`): the waits were seen per thread (schedstat), the
        host did not run the threads apart for long (TEAM_MIN rounds) and took no steal time."""
        steal = None if self.load is None else self.load.steal
        return self.probe == "schedstat" and self.apart < TEAM_MIN and (steal is None or steal <= STEAL_TOL)

    def _apart_words(self) -> str:
        if not self.apart or self.team is None:
            return ""
        t = self.team.threads
        return (f"; in {self.apart} rounds the {t} measuring threads stalled each other (a {t}-thread probe conv "
                f"took up to {self.team.worst:.1f}x its one-thread time, {TEAM_TOL:g}x allowed: the host ran this "
                f"machine's vCPUs apart, which no load or steal counter shows; if it lasts, measure with one thread)")

    def to_json(self, min_clean: int) -> dict[str, Any]:
        return {"probe": self.probe, "threads_watched": self.threads, "boost": self.boost, "rounds": self.rounds,
                "discarded": self.discarded, "preempted": self.preempted, "threads_apart": self.apart,
                "team_probe_worst": None if self.team is None else round(self.team.worst, 3),
                "wait_ms": round(self.wait_ns / 1e6, 3),
                "discarded_median_ms": round(stats.median(self.raw) * 1e3, 6) if self.raw else None,
                **(self.load.to_json() if self.load else {}),
                "load1": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                "reason": self.verdict(min_clean)}

