"""The long fuzz run: tests/test_fuzz_errors.py with many more inputs per strategy, and a JSON record of the run.

Takes: --total N (generated inputs shared over the strategies, run one process per core; the suite's default
is 10,000), --examples K (in-process inputs per strategy; default 60), --seed, --out FILE.
Returns: exit 0 when nothing but ArchError escaped archdsl's parse/check; writes {cases, inputs, checked,
arch_errors, round_trips, failures, seconds, total, seed} to --out (default benchmarks/results_fuzz_long_cpu2.json).

    python benchmarks/fuzz_long.py --total 60000    # 60,480 inputs in 680 s on 2 cores (results_fuzz_long_cpu2.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Collect:
    """A pytest plugin that keeps the fuzz counts and the failing tests."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.stats: dict = {}

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed:
            self.failures.append(f"{report.nodeid}: {report.longreprtext[-2000:]}")

    def pytest_sessionfinish(self, session) -> None:
        from conftest import FUZZ_STATS  # tests/conftest.py, on sys.path once pytest has loaded it

        self.stats = dict(session.config.stash.get(FUZZ_STATS, {}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=60000, help="generated inputs in all (default 60000)")
    ap.add_argument("--examples", type=int, default=60, help="in-process inputs per strategy (default 60)")
    ap.add_argument("--seed", type=int, default=None, help="seed of both runs (default: random)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results_fuzz_long_cpu2.json"))
    args = ap.parse_args()
    os.environ["ARCHDSL_FUZZ_EXAMPLES"] = str(args.examples)
    os.environ["ARCHDSL_FUZZ_TOTAL"] = str(args.total)
    plugin = _Collect()
    t0 = time.perf_counter()
    argv = [str(ROOT / "tests" / "test_fuzz_errors.py"), "-q", "-p", "no:cacheprovider", "-x"]
    if args.seed is not None:
        argv.append(f"--hypothesis-seed={args.seed}")
        os.environ["ARCHDSL_FUZZ_SEED"] = str(args.seed)
    code = pytest.main(argv, plugins=[plugin])
    out = {**plugin.stats, "failures": plugin.failures, "seconds": round(time.perf_counter() - t0, 1),
           "total": args.total, "examples": args.examples, "seed": args.seed, "exit": int(code)}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "failures"}), f"failures: {len(plugin.failures)}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
