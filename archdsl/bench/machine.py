"""This machine's identity and the small per-machine caches beside the latency table (stage: the timing library).

Takes: nothing (the environment: /proc/cpuinfo, torch, $ARCHDSL_CACHE_DIR). Returns: `fingerprint()` (what timings
depend on, with a short stable hash), `machine_hash()` (the same without torch's thread count), `cpu_flags()`,
`default_cache_dir()`, and atomic `load_json_cache` / `save_json_cache` for small JSON files there
(reference_best.json, regime.json).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["fingerprint", "machine_hash", "cpu_flags", "ISA_FLAGS", "default_cache_dir", "load_json_cache",
           "save_json_cache", "torch_threads"]

# The instruction-set extensions the kernels' speed depends on (oneDNN, the native kernels, bfloat16): part of the
# fingerprint, because one CPU model name (a hypervisor's "AMD EPYC") covers hosts with and without AVX-512.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (/proc/cpuinfo "flags" on x86, "Features" on ARM); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, int | None]:
    """(CPU model name, physical core count) from /proc/cpuinfo; (None, None) where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None, None
    model = None
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        kv = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                kv[key.strip()] = value.strip()
        model = model or kv.get("model name") or kv.get("Hardware") or kv.get("cpu model")
        if "core id" in kv:
            cores.add((kv.get("physical id", "0"), kv["core id"]))
    return model, (len(cores) or None)


def fingerprint() -> dict[str, Any]:
    """What the timings depend on: CPU model, its instruction-set extensions (`isa`: those of ISA_FLAGS it has),
    physical/logical/usable cores, torch threads and version, the CUDA device (if any), and `hash`, a stable
    12-hex-digit digest of those fields."""
    import torch

    model, physical = _cpuinfo()
    logical = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    fp: dict[str, Any] = {
        "cpu_model": model or platform.processor() or platform.machine() or "unknown",
        "isa": " ".join(f for f in ISA_FLAGS if f in cpu_flags()),
        "machine": platform.machine(),
        "physical_cores": physical or logical,
        "logical_cores": logical,
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_device": cuda,
    }
    fp["hash"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    return fp


def default_cache_dir() -> Path:
    """`$ARCHDSL_CACHE_DIR`, else `$XDG_CACHE_HOME/archdsl/latency`, else ~/.cache/archdsl/latency."""
    env = os.environ.get("ARCHDSL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "archdsl" / "latency"


def load_json_cache(path: Path) -> dict[str, Any]:
    """A small JSON object kept in the cache dir (`reference_best.json`, `regime.json`); {} when the file is
    missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_json_cache(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically (a per-process temp file, then os.replace); a cache that cannot be written
    is left as it was (best effort: the caller's value still holds for this process)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def machine_hash() -> str:
    """12 hex digits over `fingerprint()` minus torch_threads (threads are part of each signature)."""
    fp = {k: v for k, v in fingerprint().items() if k not in ("hash", "torch_threads")}
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch.set_num_threads(threads) for the body, the old count restored afterwards; None leaves them alone."""
    if threads is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)
