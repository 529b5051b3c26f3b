"""Test helper: issue 21's hostile specs, one per kind of attack, each of which `archdsl check` must refuse with a
positioned error (exit 1, no traceback) and, on 2 quiet cores, within 2 s. Used by tests/test_hostile.py (under a
memory cap) and benchmarks/hostile_specs.py (timed).

`SPECS`: name -> spec text. `run_all(dir)` checks each in this process through the command line and returns
name -> {"rc", "out", "seconds", "cpu_seconds"}; `python hostile.py DIR [NAME ...]` prints that as JSON (the
test and the benchmark run it in a child process with an address-space cap)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path


def _model(stmts: str, inp: str = "3, 8, 8") -> str:
    return f"model m() {{\n    input({inp})\n    {stmts}\n}}\n"


_LONG = "n" * 9000
_FAN = "block b0() { relu() }\n" + "".join(
    f"block b{i}() {{ {' '.join(f'b{i - 1}()' for _ in range(10))} }}\n" for i in range(1, 7))

SPECS: dict[str, str] = {
    # values built by expressions: one budget, charged as they are built
    "nested comprehensions": _model("let big = [[i for i in range(100000)] for j in range(100000)]\n    relu()"),
    "repeated lists in a comprehension": _model("let big = [[0] * 100000 for j in range(100000)]\n    relu()"),
    "comprehensions in a loop": _model("for k in range(100000) { let c = [i for i in range(100)] }\n    relu()"),
    "huge comparison in a loop": _model("let big = range(100000)\n    for i in range(100000) { require big == big }"
                                        "\n    relu()"),
    # runaway repetition: refused at once, at the loop or the row of calls
    "nested loops": _model("for a in range(30) { for b in range(10) { for c in range(10) { for d in range(10) { "
                           "for e in range(10) { relu() } } } } }"),
    "empty nested loops": _model("for i in range(100000) { for j in range(100000) { } }"),
    "repeats": _model("for i in range(100000) { for j in range(100000) { relu() } }"),
    "fan-out blocks": _FAN + _model("b6()"),
    "binary recursion": "block t(n: int) { if n > 0 { t(n - 1); t(n - 1) } else { relu() } }\n" + _model("t(40)"),
    "choice points in a loop": _model("for i in range(100000) { conv(choice(1, 2)) }"),
    # names: charged as made
    "long names in a loop": _model(f"for i in range(100000) {{ {_LONG}: relu() }}"),
    "long names in a recursion": f"block t(n: int) {{ if n > 0 {{ {_LONG}: t(n - 1)\n    {_LONG[:-1]}: t(n - 1) "
                                 f"}} else {{ relu() }} }}\n" + _model("t(60)"),
    # the parser: bounded by the token count; errors cost one parse
    "dense tokens": "model m() {\n" + "\n".join(f"    let a{i} = [" + ",".join("1" for _ in range(1100)) + "]"
                                                for i in range(200)) + "\n    input(3, 8, 8)\n}\n",
    "choice options written out": _model("conv(choice(" + ",\n        ".join(
        ", ".join(str(20 * i + j + 1) for j in range(20)) for i in range(4900)) + "))"),
    "20 syntax errors in 100 KB": _model("\n    ".join("conv(8, k=3) +* relu()" if i % 200 == 100 else
                                                      f"l{i}: conv(8, k=3)" for i in range(4000))),
    "many errors": _model("\n    ".join("cnov(8)" for _ in range(4000))),
    # sizes that cannot be built: check says so, as load would
    "huge conv": _model("conv(10 ** 12)"),
    "huge input": _model("conv(8)", "3, 1000000, 1000000"),
    "huge padding": _model("conv(8, k=3, pad=1000000000)"),
    "huge linear": _model("gap()\n    flatten()\n    linear(1000000000000000)"),
    # bytes and strings
    "terminal escapes": _model("conv(8)\x1b[2J\x07\x00"),
    "unterminated string": _model('let s = "abc\n    relu()'),
    # parameter domains
    "negative eps": _model("bn(eps=-1.0)"),
    "infinite probability": _model("dropout(p=1e308 * 10)"),
}


def run_all(directory: str | Path, names: list[str] | None = None) -> dict[str, dict]:
    """Write each spec to `directory` and run `archdsl check` on it in this process (as the command line does,
    output captured). Returns name -> {"rc", "out", "seconds", "cpu_seconds", "file"}."""
    from archdsl.cli import main

    out = {}
    for i, name in enumerate(names or SPECS):
        path = Path(directory) / f"hostile{i:02d}.arch"
        path.write_text(SPECS[name], encoding="utf-8")
        buf = io.StringIO()
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = main(["check", str(path)])
            except SystemExit as e:
                rc = e.code
            except BaseException as e:  # noqa: BLE001 - what the test must see, not a crash of the runner
                rc, _ = 99, buf.write(f"Traceback (runner): {type(e).__name__}: {e}")
        out[name] = {"rc": rc, "out": buf.getvalue()[:2000], "seconds": round(time.perf_counter() - t0, 3),
                     "cpu_seconds": round(time.process_time() - c0, 3), "file": str(path)}
    return out


if __name__ == "__main__":
    print(json.dumps(run_all(sys.argv[1], sys.argv[2:] or None)))
