"""The per-operator latency table: every distinct operator configuration a search space can produce, timed once.

Takes: a .arch search space (or checked deploy-form graphs). Returns: a `LatencyTable` (signature -> median ms,
cached on disk as JSON lines) and a `TableReport` (how many configurations were measured, reused, rejected).

A configuration's signature is (op, its parameters, its input shapes with their layout, dtype, batch, threads).
Each record is keyed by the signature plus `machine_hash()` (the fingerprint without torch's thread count,
which the signature already holds), carries that hash and a checksum of its own content. On load, a line that
is not valid JSON or whose checksum does not match (corrupt), and a record of another machine (foreign), are
reported and never used: their configurations are measured again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .machine import default_cache_dir, machine_hash, torch_threads

__all__ = ["LatencyTable", "LoadReport", "TableReport", "signature", "sig_key", "graph_signatures",
           "sample_space", "build_table", "measure_signature", "machine_hash", "default_cache_dir", "is_free"]

TABLE_FILE = "ops.jsonl"
FREE_OPS = ("input",)  # besides every op marked is_view: costs nothing, never measured


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------------------------
# signatures


def is_free(graph, name: str) -> bool:
    """True for nodes that cost nothing at run time: the input, views and identities."""
    from ..ops import registry

    op = graph.node(name).op
    return name == graph.input_node or op in FREE_OPS or bool(getattr(registry.get(op), "is_view", False))


def signature(graph, name: str, *, dtype: str = "float32", batch: int = 1, threads: int = 1) -> dict[str, Any]:
    """The configuration of node `name`: {"op", "params", "in_shapes": [[c, h, w, layout], ...], "dtype",
    "batch", "threads"}. Plain JSON, so equal configurations give equal signatures in any process."""
    node = graph.node(name)
    params = node.params.model_dump(mode="json") if node.params is not None else {}
    shapes = [[s.c, s.h, s.w, s.layout] for s in graph.attrs(name)["in_shapes"]]
    return {"op": node.op, "params": params, "in_shapes": shapes, "dtype": dtype, "batch": batch,
            "threads": threads}


def sig_key(sig: dict[str, Any], machine: str) -> str:
    """The cache key of a signature on a machine (20 hex digits)."""
    return _digest({"sig": sig, "machine": machine}, 20)


def graph_signatures(graph, **kw: Any) -> list[dict[str, Any]]:
    """The signatures of every non-free node of `graph`, in data-flow order (duplicates kept)."""
    return [signature(graph, n, **kw) for n in graph.order() if not is_free(graph, n)]


def sample_space(space_path: str | os.PathLike, n: int, input_shape: tuple[int, int, int] | None = None,
                 seed: int = 0, max_tries: int | None = None) -> tuple[list[tuple[dict, Any]], int]:
    """`n` random points of the space's choice points, each as (point, deploy-form graph). The choice points of
    the spec at its first values are drawn first, in order; a choice point met only at other values (behind an
    `if`) is drawn when elaboration meets it (`ChoicePoint.sample`: every domain type). Points the spec rejects
    (ArchError) are skipped. Returns (points, number rejected)."""
    from ..api import check_file
    from ..errors import ArchError
    from ..passes import deploy_graph

    rng = random.Random(seed)
    base = check_file(space_path, None, input_shape)
    out: list[tuple[dict, Any]] = []
    rejected = 0
    tries = max_tries if max_tries is not None else 20 * n + 20
    for _ in range(tries):
        if len(out) >= n:
            break
        point = {c.name: c.sample(rng) for c in base.choices}

        def met(cp, point=point):
            point[cp.name] = cp.sample(rng)
            return point[cp.name]

        try:
            # values, never text: a sampled string such as "none" is that string, not the constant `none`
            g = check_file(space_path, None, input_shape, strict_overrides=False, sampler=met, values=point)
        except ArchError:
            rejected += 1
            continue
        dg, _ = deploy_graph(g)
        out.append((point, dg))
    return out, rejected


# ---------------------------------------------------------------------------------------------------------
# the on-disk table


@dataclass
class LoadReport:
    valid: int = 0
    corrupt: list[str] = field(default_factory=list)  # "line N: why"
    foreign: int = 0  # records of another machine (kept in the file, never used here)

    def lines(self) -> list[str]:
        out = [f"table: corrupt record ({c}); ignored, its configuration is measured again" for c in self.corrupt]
        if self.foreign:
            out.append(f"table: {self.foreign} record(s) from another machine's fingerprint; not used here")
        return out


def _checksum(rec: dict[str, Any]) -> str:
    return _digest({k: v for k, v in rec.items() if k != "checksum"})


class LatencyTable:
    """Signature -> timing record, for one machine, backed by `cache_dir/ops.jsonl`."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, machine: str | None = None):
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = self.dir / TABLE_FILE
        self.machine = machine or machine_hash()
        self.records: dict[str, dict[str, Any]] = {}  # this machine's, by key
        self.foreign: list[dict[str, Any]] = []  # kept on save, so a shared cache serves every machine
        self.report = LoadReport()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    self.report.corrupt.append(f"line {i}: not JSON ({e.msg})")
                    continue
                if not isinstance(rec, dict) or not {"key", "sig", "machine", "median_ms", "checksum"} <= rec.keys():
                    self.report.corrupt.append(f"line {i}: missing fields")
                    continue
                if rec["checksum"] != _checksum(rec):
                    self.report.corrupt.append(f"line {i}: checksum mismatch")
                    continue
                if rec["machine"] != self.machine:
                    self.report.foreign += 1
                    self.foreign.append(rec)
                    continue
                if rec["key"] != sig_key(rec["sig"], self.machine):
                    self.report.corrupt.append(f"line {i}: key does not match its signature")
                    continue
                self.records[rec["key"]] = rec
                self.report.valid += 1

    def get(self, sig: dict[str, Any]) -> dict[str, Any] | None:
        return self.records.get(sig_key(sig, self.machine))

    def ms(self, sig: dict[str, Any]) -> float:
        """The median latency of a configuration, ms (KeyError when not in the table)."""
        rec = self.get(sig)
        if rec is None:
            raise KeyError(f"configuration not in the latency table: {json.dumps(sig, sort_keys=True)}")
        return rec["median_ms"]

    def add(self, sig: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
        """Record a timing (a dict with at least median_ms) for `sig` on this machine; returns the record. A timing
        flagged `disturbed` (other programs took the cores) is refused with ValueError: it would be trusted
        forever."""
        if timing.get("disturbed") or timing.get("median_ms") is None:
            raise ValueError(f"refusing to store a disturbed timing of {sig.get('op')!r}: "
                             f"{(timing.get('disturbance') or {}).get('reason')}")
        rec = {"key": sig_key(sig, self.machine), "sig": sig, "machine": self.machine,
               **{k: timing[k] for k in ("median_ms", "p10_ms", "p90_ms", "min_ms", "runs", "rel_ci", "stable")
                  if k in timing},
               "measured_at": round(time.time(), 3)}
        rec["checksum"] = _checksum(rec)
        self.records[rec["key"]] = rec
        return rec

    def save(self) -> Path:
        """Rewrite the file (atomically): this machine's records, then the foreign ones; corrupt lines go."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{TABLE_FILE}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in [*self.records.values(), *self.foreign]:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
        return self.path

    def __len__(self) -> int:
        return len(self.records)


# ---------------------------------------------------------------------------------------------------------
# measuring one configuration


def measure_signature(sig: dict[str, Any], *, max_seconds: float = 1.0, rel_ci: float = 0.02,
                      seed: int = 0, quiet_wait: float = 10.0, **measure_kw: Any) -> dict[str, Any]:
    """Build the single op of `sig`, run it on random inputs of its in_shapes (batch, dtype, threads of the
    signature) and time it with `measure_until_clean` (disturbed rounds discarded; a disturbed result measured
    again once the machine quiets down, for at most `quiet_wait` s). Returns the Measurement's JSON (ms); check
    its `disturbed` flag."""
    import torch

    from ..ops import registry
    from ..shapes import Shape
    from .measure import measure_until_clean

    op = registry.get(sig["op"])
    if op is None:
        raise KeyError(f"unknown op {sig['op']!r}")
    params = op.Params.model_validate(sig["params"])
    shapes = [Shape(c, h, w, layout) for c, h, w, layout in sig["in_shapes"]]
    dtype = getattr(torch, sig["dtype"])
    with torch_threads(sig["threads"]):
        gen = torch.Generator().manual_seed(seed)
        mod = op.build(params, shapes).eval().to(dtype)
        xs = [torch.randn(s.torch_shape(sig["batch"]), generator=gen).to(dtype) for s in shapes]
        with torch.inference_mode():
            mod(*xs)  # a trial run outside the timing
        m, _ = measure_until_clean(lambda: mod(*xs), quiet_wait=quiet_wait, threads=sig["threads"],
                                   max_seconds=max_seconds, rel_ci=rel_ci, **measure_kw)
    return m.to_json()


# ---------------------------------------------------------------------------------------------------------
# building the table


@dataclass
class TableReport:
    points: int = 0  # architectures sampled
    rejected: int = 0  # sampled points the spec rejected
    nodes: int = 0  # non-free nodes over all sampled architectures
    configs: int = 0  # distinct configurations among them
    measured: int = 0
    reused: int = 0
    unmeasured: int = 0  # configurations whose every measurement was disturbed: not stored, measured next time
    load: LoadReport = field(default_factory=LoadReport)
    path: str = ""
    seconds: float = 0.0

    def text(self) -> str:
        lines = self.load.lines()
        lines.append(f"{self.points} architectures sampled ({self.rejected} rejected by the spec), {self.nodes} "
                     f"operator nodes, {self.configs} distinct configurations")
        lines.append(f"measured {self.measured}, reused {self.reused} from {self.path} ({self.seconds:.1f} s)")
        if self.unmeasured:
            lines.append(f"UNMEASURED {self.unmeasured}: other programs kept the cores busy, so their timings were "
                         "discarded (never stored); run the same command again when the machine is quiet")
        return "\n".join(lines) + "\n"


def fill_table(table: LatencyTable, graphs: list, *, dtype: str = "float32", batch: int = 1, threads: int = 1,
               max_seconds: float = 1.0, rel_ci: float = 0.02, measure_kw: dict | None = None,
               progress: Callable[[str], None] | None = None) -> TableReport:
    """Measure every configuration of `graphs` not already in `table` (and save it). Returns the counts."""
    t0 = time.perf_counter()
    rep = TableReport(points=len(graphs), load=table.report, path=str(table.path))
    distinct: dict[str, dict[str, Any]] = {}
    for g in graphs:
        for sig in graph_signatures(g, dtype=dtype, batch=batch, threads=threads):
            rep.nodes += 1
            distinct.setdefault(sig_key(sig, table.machine), sig)
    rep.configs = len(distinct)
    todo = [s for s in distinct.values() if table.get(s) is None]
    rep.reused = rep.configs - len(todo)
    for i, sig in enumerate(todo, 1):
        timing = measure_signature(sig, max_seconds=max_seconds, rel_ci=rel_ci, **(measure_kw or {}))
        if timing.get("disturbed"):
            rep.unmeasured += 1
        else:
            table.add(sig, timing)
            rep.measured += 1
        if progress and (i % 25 == 0 or i == len(todo)):
            progress(f"measured {i}/{len(todo)} configurations")
        if i % 50 == 0:
            table.save()  # an interrupted build keeps what it measured
    table.save()
    rep.seconds = time.perf_counter() - t0
    return rep


def build_table(space_path: str | os.PathLike, samples: int = 20, input_shape: tuple[int, int, int] | None = None,
                *, batch: int = 1, threads: int = 1, dtype: str = "float32", seed: int = 0,
                cache_dir: str | os.PathLike | None = None, max_seconds: float = 1.0, rel_ci: float = 0.02,
                progress: Callable[[str], None] | None = None,
                **measure_kw: Any) -> tuple[LatencyTable, TableReport]:
    """Sample `samples` architectures of the space (deploy form), and measure each distinct operator
    configuration among them that the cache does not already hold for this machine. Returns (table, report)."""
    points, rejected = sample_space(space_path, samples, input_shape, seed)
    table = LatencyTable(cache_dir)
    rep = fill_table(table, [g for _, g in points], dtype=dtype, batch=batch, threads=threads,
                     max_seconds=max_seconds, rel_ci=rel_ci, measure_kw=measure_kw, progress=progress)
    rep.rejected = rejected
    return table, rep
