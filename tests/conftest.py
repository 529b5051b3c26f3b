"""Shared test fixtures: golden-file comparison (`--update-golden` rewrites them) and paths."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
FUZZ_STATS = pytest.StashKey[dict]()  # test_fuzz_errors.py's counts, printed at the end of the run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    stats = config.stash.get(FUZZ_STATS, None)
    if stats:
        terminalreporter.write_line(
            f"fuzz: {stats['cases']:,} generated inputs, {stats['inputs']:,} spec checks ({stats['checked']:,} "
            f"passed, {stats['arch_errors']:,} refused with a positioned ArchError, nothing else raised), "
            f"{stats['round_trips']:,} formatter round trips")


@pytest.fixture(scope="session")
def fuzz_stats(request) -> dict:
    """A dict the fuzz tests fill with their counts; printed in the terminal summary."""
    return request.config.stash.setdefault(FUZZ_STATS, {})


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files instead of comparing")


@pytest.fixture
def golden(request):
    """golden(relative_path, text): compare `text` with tests/golden/<relative_path> (or rewrite it)."""
    update = request.config.getoption("--update-golden")

    def compare(rel: str, text: str) -> None:
        path = GOLDEN / rel
        if update or not path.exists():
            if not update and os.environ.get("CI"):
                pytest.fail(f"golden file {path} is missing (run pytest --update-golden and review the diff)")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        expected = path.read_text(encoding="utf-8")
        if expected != text:
            diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                                f"golden/{rel}", "actual"))
            pytest.fail(f"output differs from golden file (pytest --update-golden to accept):\n{diff}")

    return compare


@pytest.fixture(autouse=True)
def _run_from_root(monkeypatch):
    """Diagnostics print paths relative to the working directory; golden files assume the repo root."""
    monkeypatch.chdir(ROOT)
