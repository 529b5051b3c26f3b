"""The command line as a user runs it: exit codes, the table, the JSON fields, and no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from archdsl.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archdsl", *args], capture_output=True, text=True, timeout=120)


def test_check_table_and_exit_code():
    r = run("check", "examples/convnext_tiny.arch")
    assert r.returncode == 0, r.stderr
    assert "28,589,128" in r.stdout and "stages.2.blocks.0-8 (x9)" in r.stdout


def test_check_json_fields(capsys):
    assert main(["check", "examples/convnext_tiny.arch", "--json", "--set", "kernel=31"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("params", "macs", "flops", "activations", "output_shape", "choices"):
        assert key in data
    assert data["params"] == 34_630_216 and data["flops"] == 2 * data["macs"]
    assert data["output_shape"] == [1000]


def test_input_override(capsys):
    assert main(["check", "examples/convnext_tiny.arch", "--json", "--input", "3x64x64"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [3, 64, 64] and data["params"] == 28_589_128


def test_spec_error_is_positioned_without_traceback(tmp_path: Path):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m() {\n    input(3, 32, 32)\n    cnov(64, k=3)\n    conv(16, k=4)\n}\n")
    r = run("check", str(bad))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert ":3:5: error: unknown op 'cnov' (did you mean 'conv'?)" in r.stderr
    assert "^^^^" in r.stderr


def test_usage_errors():
    assert run("check", "examples/convnext_tiny.arch", "--input", "3x224").returncode == 2
    assert run("check", "examples/convnext_tiny.arch", "--set", "novalue").returncode == 2
    r = run("check", "does/not/exist.arch")
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_show_is_deterministic_and_reads_back():
    from archdsl.check import check
    from archdsl.printer import format_ir, read_ir

    a, b = run("show", "examples/convnext_atto.arch"), run("show", "examples/convnext_atto.arch")
    assert a.returncode == 0 and a.stdout == b.stdout
    assert format_ir(check(read_ir(a.stdout))) == a.stdout


def test_ops_lists_registry(capsys):
    assert main(["ops", "--json"]) == 0
    names = {o["name"] for o in json.loads(capsys.readouterr().out)}
    assert {"conv", "dwconv", "inception_dw", "dilated_reparam", "se", "eca", "grn"} <= names


@pytest.mark.parametrize("example", sorted(Path("examples").glob("*.arch")), ids=lambda p: p.stem)
def test_show_golden(example, golden):
    from archdsl.api import check_file
    from archdsl.printer import format_ir

    golden(f"ir/{example.stem}.ir", format_ir(check_file(example)))


def test_output_files_that_cannot_be_written_are_one_line(tmp_path, capsys):
    """compile -o into a missing directory, onto a directory or a full device: exit 1 and one line, never 70; a
    report named other than .html is refused (it is an HTML page)."""
    from archdsl.cli import main

    spec = "examples/convnext_atto.arch"
    for target in (tmp_path / "nodir" / "x.py", tmp_path, Path("/dev/full")):
        assert main(["compile", spec, "-o", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("archdsl: error: cannot write") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "x.pdf")]) == 2
    assert "name it .html" in capsys.readouterr().err and not (tmp_path / "x.pdf").exists()


def test_a_long_choice_listing_is_bounded(tmp_path, capsys):
    """20,000 choice points, or one whose value is a 100k-element list, print a bounded table (it once printed
    1.4 MB): long values clipped, the first 200 rows, then a count."""
    from archdsl.cli import main

    spec = tmp_path / "many.arch"
    spec.write_text("model m() {\n    input(3, 8, 8)\n    let big = choice(range(1, 100000))\n"
                    "    for i in range(300) { let w = choice(1, 2, 3) }\n    stem: conv(4, k=1)\n}\n")
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "... and 101 more (archdsl check --json lists them all)" in out and len(out) < 80_000
    assert max(len(line) for line in out.splitlines()) < 300
