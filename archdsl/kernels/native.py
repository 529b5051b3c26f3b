"""Build and load the native kernel library: csrc/*.cpp -> one cached shared library -> ctypes handle.

Takes nothing but the environment; returns the loaded library (``lib()``) or ``None`` with a one-line reason
(``why_unavailable()``). Nothing happens at import: the library is compiled on first use, into
``$ARCHDSL_CACHE_DIR/kernels`` (else ``$XDG_CACHE_HOME/archdsl/kernels``, else ``~/.cache/archdsl/kernels``),
under a name that hashes the sources, the flags, the compiler's ``--version``, the torch version and this
CPU's model and flags (``-march=native`` code is CPU-specific). Compiles write a temp file and rename it
(atomic) under a file lock, so concurrent processes neither race nor see half-written libraries.

The library links the OpenMP runtime that torch ships (``torch/lib/libgomp.so.1``, via rpath, and anyway
the same soname torch has already loaded), so kernels and torch share one thread pool.

``ARCHDSL_NO_NATIVE=1`` disables the library; so do a missing compiler or a failed build. The wrappers in
``archdsl.kernels.ops`` then compute the same results with their plain PyTorch references.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

CSRC = Path(__file__).parent / "csrc"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
ABI_VERSION = 2

# name -> argtypes (all return void but ak_abi_version). The kernels take one block of int64 arguments
# (pointers as integers): ctypes converts one pointer ~10x faster than a long typed argument list.
_P, _F = ctypes.c_void_p, ctypes.c_float
SIGNATURES: dict[str, tuple] = {
    "ak_dwconv_nhwc": (_P,),
    "ak_mixer_nhwc": (_P,),
    "ak_dwconv_ln_nhwc": (_P, _F),
    "ak_layernorm_rows": (_P, _F),
    "ak_bias_act": (_P,),
    "ak_scale_channels": (_P,),
}


@dataclass
class BuildInfo:
    """What the last build() did: the library path, whether it compiled (False: reused the cache), seconds."""

    path: Path
    compiled: bool
    seconds: float


class BuildError(RuntimeError):
    pass


_lock = threading.Lock()
_state: dict = {}  # "lib": CDLL | None, "why": str | None, "info": BuildInfo | None


def cache_dir() -> Path:
    if os.environ.get("ARCHDSL_CACHE_DIR"):
        return Path(os.environ["ARCHDSL_CACHE_DIR"]) / "kernels"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "archdsl" / "kernels"


def compiler() -> list[str]:
    """The C++ compiler command ($CXX, may carry arguments, else g++ / c++ on PATH); raises BuildError."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shlex.split(cxx)
    for name in ("g++", "c++"):
        if shutil.which(name):
            return [name]
    raise BuildError("no C++ compiler (set CXX or install g++)")


def _torch_lib_dir() -> str:
    import torch

    return str(Path(torch.__file__).parent / "lib")


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags")]
    return "\n".join(sorted(set(keep)))


def _compiler_version(cxx: list[str]) -> str:
    try:
        r = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"C++ compiler {shlex.join(cxx)!r} does not run: {e}") from None
    if r.returncode != 0:
        raise BuildError(f"C++ compiler {shlex.join(cxx)!r} --version failed (exit {r.returncode})")
    return r.stdout


def sources() -> dict[str, str]:
    """File name -> text of every csrc/*.cpp and *.h (all of them enter the hash; the .cpp are compiled)."""
    return {p.name: p.read_text() for p in sorted(CSRC.iterdir()) if p.suffix in (".cpp", ".h")}


def build(srcs: dict[str, str] | None = None, out_dir: Path | None = None, name: str = "archdsl_kernels") -> BuildInfo:
    """Compile srcs (default: csrc/) into out_dir (default: cache_dir()) unless a library with the same hash
    is already there. Returns BuildInfo; raises BuildError (no compiler, compile error)."""
    import torch

    srcs = sources() if srcs is None else srcs
    out_dir = cache_dir() if out_dir is None else Path(out_dir)
    cxx = compiler()
    torch_lib = _torch_lib_dir()
    link_flags = [f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}"]
    h = hashlib.sha256()
    for part in (*(f"{k}\0{v}" for k, v in sorted(srcs.items())), " ".join([*FLAGS, *link_flags]),
                 _compiler_version(cxx), torch.__version__, _cpu_id()):
        h.update(part.encode())
        h.update(b"\0\0")
    path = out_dir / f"{name}_{h.hexdigest()[:20]}.so"
    if path.exists():
        return BuildInfo(path, False, 0.0)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot create cache dir {out_dir}: {e}") from None
    t0 = time.perf_counter()
    with open(out_dir / ".lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)  # another process may be compiling the same library
        try:
            if path.exists():
                return BuildInfo(path, False, 0.0)
            with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
                _compile_and_link(cxx, srcs, Path(tmp), link_flags)
                os.replace(Path(tmp) / "lib.so", path)
        finally:
            fcntl.flock(lockf, fcntl.LOCK_UN)
    return BuildInfo(path, True, time.perf_counter() - t0)


def _run(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        first = next((ln for ln in err.splitlines() if "error" in ln), err.strip()[:300])
        raise BuildError(f"compile failed (exit {proc.returncode}): {first}")


def _compile_and_link(cxx: list[str], srcs: dict[str, str], tmp: Path, link_flags: list[str]) -> None:
    """Compile every .cpp of srcs in parallel (one compiler process each), then link tmp/lib.so."""
    for fname, text in srcs.items():
        (tmp / fname).write_text(text)
    compile_flags = [f for f in FLAGS if f != "-shared"]
    cpps = sorted(f for f in srcs if f.endswith(".cpp"))
    jobs: list[subprocess.Popen] = []
    try:
        for f in cpps:
            jobs.append(_run([*cxx, *compile_flags, "-c", str(tmp / f), "-o", str(tmp / f"{f}.o")]))
        for proc in jobs:
            _wait(proc)
        _wait(_run([*cxx, *FLAGS, *(str(tmp / f"{f}.o") for f in cpps), *link_flags, "-o", str(tmp / "lib.so")]))
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"compiler failed to run: {e}") from None
    finally:
        for proc in jobs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _load() -> None:
    if os.environ.get("ARCHDSL_NO_NATIVE", "") not in ("", "0"):
        _state.update(lib=None, why="disabled by ARCHDSL_NO_NATIVE", info=None)
        return
    try:
        import torch  # noqa: F401  (loads torch's libgomp.so.1 first, so the library binds to it)

        info = build()
        lib = ctypes.CDLL(str(info.path))
        lib.ak_abi_version.argtypes, lib.ak_abi_version.restype = (), ctypes.c_int
        if lib.ak_abi_version() != ABI_VERSION:
            raise BuildError(f"library ABI {lib.ak_abi_version()} != {ABI_VERSION}")
        for fname, argtypes in SIGNATURES.items():
            fn = getattr(lib, fname)
            fn.argtypes, fn.restype = argtypes, None
    except (BuildError, OSError, AttributeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        _state.update(lib=None, why=why, info=None)
        warnings.warn(f"archdsl native kernels unavailable ({why}); using PyTorch fallbacks", RuntimeWarning,
                      stacklevel=3)
        return
    _state.update(lib=lib, why=None, info=info)


def lib() -> ctypes.CDLL | None:
    """The loaded library (compiling it on first use), or None when unavailable."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _load()
    return _state["lib"]


def available() -> bool:
    return lib() is not None


def why_unavailable() -> str | None:
    """One line saying why the native library is not used, or None when it is."""
    lib()
    return _state["why"]


def build_info() -> BuildInfo | None:
    """How this process got its library (path, compiled or reused, seconds), or None when unavailable."""
    lib()
    return _state["info"]


def reset() -> None:
    """Forget the loaded library, so the next use re-reads the environment (tests)."""
    with _lock:
        _state.clear()
