"""Error-message golden tests: every tests/golden/errors/*.arch (and imports/*.arch) must fail with exactly the
ArchError text in the .txt beside it. Also: every diagnostic points inside its file, only ArchError is raised,
many errors come in one report, docs/errors.md documents every case, and near-miss specs that must pass do.

Files in subfolders other than imports/ (imports/lib/, outside/) are helpers imported by the cases, not cases.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archdsl.api import check_file, check_text, require_resolved
from archdsl.errors import ArchError

ROOT = Path(__file__).resolve().parent.parent
ERRORS = ROOT / "tests" / "golden" / "errors"
CASES = sorted([*ERRORS.glob("*.arch"), *(ERRORS / "imports").glob("*.arch")])


def case_id(path: Path) -> str:
    return path.relative_to(ERRORS).with_suffix("").as_posix()


# Cases checked with options (what `archdsl check --set ... --model ...` would pass).
OPTIONS: dict[str, dict] = {
    "set_unknown_name": {"overrides": {"widht": "64"}},
    "set_outside_domain": {"overrides": {"k": "4"}},
    "set_wrong_type": {"overrides": {"width": "1.5"}},
    "unknown_model": {"model": "larg"},
}
# Cases that check fine but must then fail archdsl.api.require_resolved (as `archdsl compile` does).
RESOLVE = {"open_choice_unresolved"}
# Cases whose point is that every error is reported at once: case -> number of diagnostics.
MANY = {"syntax_many": 3, "many_errors": 5, "many_shape_errors": 4, "block_shadows_op": 2,
        "unknown_op_param_alias": 3}


def run_case(path: Path) -> ArchError:
    """Check one case the way the CLI would; it must raise ArchError and nothing else."""
    cid = case_id(path)
    try:
        graph = check_file(path.relative_to(ROOT), **OPTIONS.get(cid, {}))
        if cid in RESOLVE:
            require_resolved(graph)
    except ArchError as err:
        return err
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{cid}: raised {type(exc).__name__} instead of ArchError: {exc}")
    pytest.fail(f"{cid}: checked without error")


def test_cases_exist():
    assert len(CASES) >= 40
    assert not set(OPTIONS) - {case_id(p) for p in CASES}, "OPTIONS names a case that does not exist"


@pytest.mark.parametrize("path", CASES, ids=case_id)
def test_error_golden(path, golden):
    golden(f"errors/{case_id(path)}.txt", run_case(path).render() + "\n")


def test_no_orphan_golden_text():
    cases = {case_id(p) for p in CASES}
    orphans = [t for t in ERRORS.rglob("*.txt") if t.relative_to(ERRORS).with_suffix("").as_posix() not in cases]
    assert not orphans, f"golden texts without a case: {orphans}"


@pytest.mark.parametrize("path", CASES, ids=case_id)
def test_diagnostics_point_inside_their_file(path):
    err = run_case(path)
    assert err.diagnostics
    for d in err.diagnostics:
        s = d.span
        src = Path(s.file)
        assert not src.is_absolute(), f"{s}: diagnostics print paths relative to the working directory"
        lines = src.read_text(encoding="utf-8").splitlines()
        assert 1 <= s.line <= len(lines), f"{s}: line outside the file ({len(lines)} lines)"
        assert 1 <= s.col <= len(lines[s.line - 1]) + 1, f"{s}: column outside line {s.line}"
        assert (s.end_line, s.end_col) > (s.line, s.col), f"{s}: empty span"
        assert s.end_line <= len(lines)
        rendered = d.render()
        assert "^" in rendered, f"{s}: the diagnostic quotes no source line"
        assert d.message and not d.message.endswith((".", " ")), f"{s}: message {d.message!r}"


@pytest.mark.parametrize("cid,count", sorted(MANY.items()))
def test_all_errors_reported_at_once(cid, count):
    err = run_case(ERRORS / f"{cid}.arch")
    assert len(err.diagnostics) == count, err.render()
    assert err.render().endswith(f"\n{count} errors")
    lines = [d.span.line for d in err.diagnostics]
    assert len(set(zip(lines, [d.span.col for d in err.diagnostics], strict=True))) == count


def test_docs_catalogue_covers_every_case():
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    named = set(re.findall(r"test: `([\w/]+)`", doc))
    cases = {case_id(p) for p in CASES}
    assert named, "docs/errors.md names no tests"
    assert not named - cases - PASSING_DOC_TESTS, f"docs/errors.md names missing tests: {sorted(named - cases)}"
    assert not cases - named, f"cases missing from docs/errors.md: {sorted(cases - named)}"
    assert all(callable(globals().get(t)) for t in PASSING_DOC_TESTS)


def test_docs_catalogue_entries_each_name_an_existing_test():
    """Every entry (### message) of docs/errors.md names a test: a golden case or tests/FILE.py::test_name, and
    each such test exists."""
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    entries = re.split(r"^### ", doc, flags=re.M)[1:]
    assert len(entries) > 60
    for entry in entries:
        title = entry.split("\n", 1)[0]
        assert "test: `" in entry, f"catalogue entry without a test: {title}"
    refs = re.findall(r"test: `(tests/[\w/]+\.py)::(\w+)`", doc)
    assert len(refs) >= 25
    for file, name in refs:
        text = (ROOT / file).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", text, flags=re.M), f"docs/errors.md names {file}::{name}: no such test"


# ---------------------------------------------------------------- near misses that must pass

PASSING_DOC_TESTS = {"test_terminating_recursion_passes"}


def test_terminating_recursion_passes():
    """A block calling itself with a shrinking parameter terminates and is fine, even 40 calls deep."""
    text = """
block tower(dim: int, n: int) {
    conv(dim)
    if n > 1 { tower(dim, n - 1) }
}

model net() {
    input(3, 32, 32)
    t: tower(16, 40)
}
"""
    g = check_text(text, file="recursion.arch")
    assert sum(1 for n in g.nodes() if n.op == "conv") == 40


def test_halving_recursion_passes():
    """Recursion on a halving width (a pyramid) stops at the base case."""
    text = """
block pyramid(dim: int) {
    conv(dim, s=2)
    if dim > 16 { pyramid(dim // 2) }
}

model net() {
    input(3, 256, 256)
    p: pyramid(128)
}
"""
    g = check_text(text, file="pyramid.arch")
    assert [n.raw_params()["out"] for n in g.nodes() if n.op == "conv"] == [128, 64, 32, 16]


def test_near_misses_of_error_cases_pass():
    """Each fixed version of an error case checks: the errors are about the mistake, not the construct."""
    text = """
block stage(dim: int, heads: int) {
    require dim % heads == 0, "dim must be a multiple of heads"
    conv(dim)
}

model net(dims: list[int] = [32, 64, 128]) {
    input(3, 32, 32)
    stem: conv(dims[-1] // 4, k=4, pad=0)
    s1: stage(96, 4)
    res: residual(drop_path=0.1) { conv(96); bn() }
    mix: split(ratios=[0.5, 0.25, 0.25]) { identity(); dwconv(3); dwconv(5) }
    g: conv(64, groups=4)
    nhwc()
    layernorm()
    nchw()
    pool: gap()
    head: linear(10)
}
"""
    g = check_text(text, file="near_miss.arch")
    assert g.output_shape is not None and g.output_shape.c == 10


def test_set_inside_domain_and_resolved_choice_pass():
    path = (ERRORS / "set_outside_domain.arch").relative_to(ROOT)
    g = check_file(path, overrides={"k": "5"})
    require_resolved(g)  # fixed by the override
    path = (ERRORS / "open_choice_unresolved.arch").relative_to(ROOT)
    require_resolved(check_file(path, overrides={"width": "32"}))


def test_a_byte_order_mark_is_not_a_syntax_error(tmp_path):
    """Editors on Windows save UTF-8 with a BOM: the spec checks as without it, positions unchanged."""
    spec = tmp_path / "bom.arch"
    body = "model m() {\n    input(3, 8, 8)\n    stem: conv(4, k=1)\n    head: { pool: gap(); fc: linear(10) }\n}\n"
    spec.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert check_file(spec).total().params == check_text(body).total().params
    bad = tmp_path / "bad.arch"
    bad.write_bytes(b"\xef\xbb\xbf" + body.replace("conv(4", "conv(-4").encode())
    with pytest.raises(ArchError, match=r"bad.arch:3:16"):
        check_file(bad)


def test_control_characters_of_a_spec_never_reach_the_terminal(tmp_path):
    """ESC, BEL and NUL in a spec (a name, a string) are shown escaped in messages, and as '?' in the quoted line
    (its caret stays under the right column)."""
    spec = tmp_path / "ctl.arch"
    spec.write_text('model m() {\n    input(3, 8, 8)\n    x\x1b[2J\x07: conv(-4, k=1)\n}\n', encoding="utf-8")
    with pytest.raises(ArchError) as e:
        check_file(spec)
    text = str(e.value)
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text
    assert "x?[2J?: conv(-4" in text


def test_thousands_of_errors_render_the_first_hundred_and_count_the_rest():
    from archdsl.errors import Diagnostic, Span

    err = ArchError(Diagnostic(Span("f.arch", i, 1, i, 2), f"error {i}") for i in range(1, 1001))
    text = str(err)
    assert "error 100\n" in text + "\n" and "error 101" not in text
    assert "... and 900 more errors (the first 100 are shown)" in text and text.endswith("1000 errors")


def test_what_is_not_a_spec_file_is_named_before_anything_is_read(tmp_path):
    """A device (/dev/zero: endless), a FIFO (blocks), a directory or a /proc pseudo-file (quoting it would print
    the environment) is refused by what it is, for the spec and for an import; nothing is read from it."""
    import os

    fifo = tmp_path / "pipe.arch"
    os.mkfifo(fifo)
    for path, what in (("/dev/zero", "is a special file"), (str(fifo), "is a special file"),
                       (str(tmp_path), "is a directory"), ("/proc/self/environ", "is a kernel pseudo-file (/proc)")):
        with pytest.raises(ArchError, match=re.escape(what)) as e:
            check_file(path)
        assert "SHELL=" not in str(e.value) and "PATH=" not in str(e.value)
    (tmp_path / "zero.arch").symlink_to("/dev/zero")
    (tmp_path / "dir.arch").mkdir()
    spec = tmp_path / "m.arch"
    spec.write_text('import "zero.arch"\nimport "dir.arch"\n'
                    'model m() {\n    input(3, 8, 8)\n    stem: conv(4, k=1)\n}\n')
    with pytest.raises(ArchError) as e:
        check_file(spec)
    text = str(e.value)
    assert "cannot import 'zero.arch': /dev/zero is a special file" in text
    assert "cannot import 'dir.arch':" in text and "is a directory" in text


def test_an_unterminated_string_is_named():
    with pytest.raises(ArchError) as e:
        check_text('model m() {\n    input(3, 8, 8)\n    stem: conv(4, k=1, act="relu)\n}\n')
    text = str(e.value)
    assert '<string>:3:28: error: the string "relu) is never closed' in text and "strings do not span lines" in text
    assert "is never closed" in text and "'{'" not in text


def test_end_of_file_is_positioned_by_newlines_only():
    """Found by the 10,000-input fuzz run: str.splitlines() also breaks at \\x1e, so an override '#\\x1e0' put its
    end-of-file error on a line 2 the text does not have."""
    from archdsl.parse import parse_expr

    with pytest.raises(ArchError) as e:
        parse_expr("#\x1e0", "--set p")
    d = e.value.diagnostics[0]
    assert (d.span.line, d.span.col) == (1, 4) and d.message.startswith("unexpected end of file")
