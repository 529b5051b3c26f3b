"""The documentation is true: docs/ops.md is what the registry generates and names every op; the worked examples
in docs/examples check with torchvision's exact counts; every complete ```arch block of docs/language.md
checks, every block marked as an error example fails with its message, and the blocks that quote a file quote
it verbatim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from md_fences import Fence, fences

from archdsl import docs
from archdsl.api import ArchError, check_file, check_text
from archdsl.check import signature
from archdsl.codegen.module import build_module
from archdsl.ops import registry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LANGUAGE_MD = DOCS / "language.md"


# ---------------------------------------------------------------- docs/ops.md


def test_ops_md_is_up_to_date():
    assert (DOCS / "ops.md").read_text(encoding="utf-8") == docs.render(), \
        "docs/ops.md is stale: run `python -m archdsl.docs` and commit the result"


@pytest.mark.parametrize("name", list(registry.all_ops()))
def test_every_op_is_documented(name):
    text = (DOCS / "ops.md").read_text(encoding="utf-8")
    assert f"### `{name}`" in text, f"op {name!r} has no section in docs/ops.md"
    op = registry.get(name)
    if op.user:
        assert f"{name}({signature(op)})" in text


def test_docs_check_flag(tmp_path, capsys):
    out = tmp_path / "ops.md"
    assert docs.main(["--check", "--output", str(out)]) == 1  # missing
    assert docs.main(["--output", str(out)]) == 0
    assert docs.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "\nedited by hand\n", encoding="utf-8")
    assert docs.main(["--check", "--output", str(out)]) == 1
    assert "stale" in capsys.readouterr().err


# ---------------------------------------------------------------- docs/examples: torchvision's exact counts

# (file, params, MACs): params as torchvision's mobilenet_v2() / resnet50(); MACs as archdsl counts them
WORKED = [("mobilenet_v2.arch", 3_504_872, 300_774_272), ("resnet50.arch", 25_557_032, 4_089_184_256)]


@pytest.mark.parametrize("file,params,macs", WORKED, ids=[w[0] for w in WORKED])
def test_worked_example_counts(file, params, macs):
    g = check_file(DOCS / "examples" / file)
    total = g.total()
    assert (total.params, total.macs) == (params, macs)
    assert g.output_shape.to_json() == [1000]
    assert not g.choices
    assert sum(p.numel() for p in build_module(g).parameters()) == params


def test_worked_example_variants():
    # values quoted in docs/language.md
    assert check_file(DOCS / "examples" / "resnet50.arch", {"layers": [3, 4, 23, 3]}).total().params == 44_549_160
    assert check_file(DOCS / "examples" / "mobilenet_v2.arch", {"width_mult": 0.5}).total().params == 1_968_680


# ---------------------------------------------------------------- code blocks of docs/language.md


def arch_blocks(path: Path) -> list[Fence]:
    """Every ```arch fenced block. Info strings: `arch`; `arch params=N` (a complete spec with N parameters);
    `arch error: MESSAGE` (must fail with MESSAGE); `arch file=PATH` (a verbatim copy of PATH)."""
    return [f for f in fences(path) if f.lang == "arch"]


BLOCKS = arch_blocks(LANGUAGE_MD)
COMPLETE = [b for b in BLOCKS if not b.info.startswith("error") and re.search(r"(?m)^\s*model\s+\w+\s*\(", b.text)]
ERRORS = [b for b in BLOCKS if b.info.startswith("error")]
QUOTES = [b for b in BLOCKS if b.info.startswith("file=")]


def test_language_md_has_examples():
    assert len(COMPLETE) >= 10 and len(ERRORS) >= 5 and len(QUOTES) == 2


def _check(block: Fence):
    # imports in a snippet resolve as if it were a file in docs/examples
    return check_text(block.text, file=str(DOCS / "examples" / f"language_md_{block.id}.arch"))


@pytest.mark.parametrize("block", COMPLETE, ids=[b.id for b in COMPLETE])
def test_language_md_complete_block_checks(block):
    try:
        g = _check(block)
    except ArchError as e:
        pytest.fail(f"docs/language.md:{block.line}: the example does not check:\n{e.render()}")
    m = re.match(r"params=(\d+)", block.info)
    if m:
        assert g.total().params == int(m.group(1)), f"docs/language.md:{block.line}: parameter count changed"


@pytest.mark.parametrize("block", ERRORS, ids=[b.id for b in ERRORS])
def test_language_md_error_block_fails(block):
    expected = block.info[len("error"):].lstrip(":").strip()
    with pytest.raises(ArchError) as info:
        _check(block)
    assert expected in info.value.render(), f"docs/language.md:{block.line}: expected the error to mention " \
        f"{expected!r}, got:\n{info.value.render()}"


@pytest.mark.parametrize("block", QUOTES, ids=[b.id for b in QUOTES])
def test_language_md_quotes_files_verbatim(block):
    path = ROOT / block.info[len("file="):]
    assert block.text == path.read_text(encoding="utf-8"), \
        f"docs/language.md:{block.line} no longer matches {path.relative_to(ROOT)}: copy the file into the doc"


def test_language_md_python_example_runs(tmp_path):
    """The API example of docs/language.md runs as written (from the repository root, as its paths assume)."""
    blocks = re.findall(r"(?ms)^```python\n(.*?)^```", LANGUAGE_MD.read_text(encoding="utf-8"))
    assert blocks, "docs/language.md has no python example"
    for i, code in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(code, encoding="utf-8")
        r = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"python example {i} of docs/language.md failed:\n{r.stderr}"


def test_language_md_covers_every_construct():
    """The reference names every keyword of the grammar, every form and every built-in function, so a construct
    added to the language without documentation fails here (operators: docs/ops.md, generated)."""
    from archdsl.elaborate import FORMS
    from archdsl.interp import builtin_names
    from archdsl.parse import grammar_text

    doc = LANGUAGE_MD.read_text(encoding="utf-8")
    keywords = set(re.findall(r'"([a-z_]+)"', grammar_text()))
    assert {"block", "model", "import", "fix", "let", "for", "if", "require", "scaling", "init"} <= keywords
    missing = [k for k in sorted(keywords) if not re.search(rf"`[^`\n]*\b{k}\b[^`\n]*`", doc)]
    missing += [f for f in FORMS if not re.search(rf"\b{f}\b", doc)]
    missing += [b for b in sorted(builtin_names()) if not re.search(rf"\b{re.escape(b)}\(", doc)]
    assert not missing, f"docs/language.md does not document: {missing}"


# ---------------------------------------------------------------- docs/export.md

EXPORT_MD = DOCS / "export.md"


def test_export_md_install_names_the_extra():
    """The page installs the `[export]` extra of pyproject.toml, which has what the example imports; README links it."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    (install,) = [f.text for f in fences(EXPORT_MD) if f.lang == "sh"]
    assert ".[export]" in install
    assert {re.match(r"[\w-]+", d)[0] for d in extras["export"]} == {"onnx", "onnxscript", "onnxruntime"}
    assert "(docs/export.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_export_md_example_runs(tmp_path):
    """The page's example, run as written from a copy of the repository root (it writes its .onnx file there),
    prints what the page shows: the exported file takes any batch and agrees with PyTorch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    (code,) = [f for f in fences(EXPORT_MD) if f.lang == "python"]
    shown = next(f for f in fences(EXPORT_MD) if f.lang == "text" and f.line > code.line)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "example.py").write_text(code.text, encoding="utf-8")
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"the example of docs/export.md failed:\n{r.stderr[-3000:]}"
    assert r.stdout == shown.text
    assert (tmp_path / "convnext_atto.onnx").stat().st_size > 4 * 3_693_680  # the weights are inside the file


# ---------------------------------------------------------------- docs/train.md

TRAIN_MD = DOCS / "train.md"


def _train_md_commands() -> list[tuple[int, list[str], str]]:
    """(line, argv without `archdsl`, output shown) of every `$ archdsl` line of a ```console block and every
    `archdsl` line of a ```sh block."""
    import shlex

    out: list[tuple[int, list[str], str]] = []
    for f in fences(TRAIN_MD):
        if f.lang not in ("console", "sh"):
            continue
        for ln in f.text.splitlines():
            words = shlex.split(ln[2:] if ln.startswith("$ ") else ln, comments=True) if ln.strip() else []
            if words[:1] == ["archdsl"] and (f.lang == "sh" or ln.startswith("$ ")):
                out.append((f.line, words[1:], ""))
            elif out and f.lang == "console" and out[-1][0] == f.line:
                out[-1] = (f.line, out[-1][1], out[-1][2] + ln + "\n")
    return out


def test_train_md_commands_parse():
    """Every quoted command parses with the real parser (no abbreviations) and names a spec that exists."""
    from archdsl import cli

    parser = cli.make_parser()
    parser.allow_abbrev = False
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.allow_abbrev = False
    cmds = _train_md_commands()
    assert len(cmds) >= 3 and all(argv[0] == "train" for _, argv, _ in cmds)
    for line, argv, _ in cmds:
        args = parser.parse_args(argv)
        assert (ROOT / args.file).is_file(), f"docs/train.md:{line}: {args.file} does not exist"


def test_train_md_names_every_flag():
    from archdsl import cli

    parser = cli.make_parser()
    (train,) = [a.choices["train"] for a in parser._subparsers._group_actions]
    text = TRAIN_MD.read_text(encoding="utf-8")
    flags = [s for a in train._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    missing = [f for f in flags if f not in text and f not in ("--import-path", "--allow-outside-imports")]
    assert not missing, f"docs/train.md does not mention {missing}"
    assert "(docs/train.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(train.md)" in (DOCS / "search.md").read_text(encoding="utf-8")
    assert "(train.md)" in (DOCS / "tutorial.md").read_text(encoding="utf-8")


def test_train_md_quick_start_and_python_example_run(tmp_path, monkeypatch, capsys):
    """The quick start, run as written (into a temporary --out), prints the lines shown (the figures may differ
    by machine: numbers are masked); the Python example then loads its weights."""
    from archdsl import cli

    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))
    line, argv, shown = next(c for c in _train_md_commands() if c[2])
    out = argv[argv.index("--out") + 1]
    argv[argv.index("--out") + 1] = str(tmp_path / out)
    assert cli.main(argv) == 0
    cap = capsys.readouterr()
    real = (cap.err + cap.out).replace(str(tmp_path / out), out)

    def mask(text: str) -> set[str]:
        return {re.sub(r"\d+(\.\d+)?", "N", ln.rstrip()) for ln in text.splitlines()}

    masked = mask(real)
    for ln in shown.splitlines():
        if ln.strip() != "..." and re.sub(r"\d+(\.\d+)?", "N", ln.rstrip()) not in masked:
            pytest.fail(f"docs/train.md:{line}: this quoted line is not in the real output:\n{ln}\nreal:\n{real}")
    assert "training tiny_space (30,946 params)" in real  # counts are exact
    (code,) = [f for f in fences(TRAIN_MD) if f.lang == "python"]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "example.py").write_text(code.text, encoding="utf-8")
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the example of docs/train.md failed:\n{r.stderr[-3000:]}"
    assert re.fullmatch(r"test accuracy 0\.\d{4} on 359 images\n", r.stdout)
