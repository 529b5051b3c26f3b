"""docs/tutorial.md and docs/adding_an_op.md cannot drift from archdsl.

tutorial.md: every ```arch block and spec file it uses checks (the mistake it shows on purpose fails with the
message shown), every `archdsl ...` command it quotes parses with the real command line (nothing slow is run),
and the output it quotes for `archdsl check` is what archdsl prints (the same lines, params and MACs).
adding_an_op.md: its Python listings are saved as the files they name (in a directory added to the ops
package) and imported, registering the page's example ops in a copy of the registry that the fixture throws
away; the page's specs check, build and run with the ops, the counted parameters equal the modules' real ones,
the re-parameterization is exact, the standalone source runs, and the quoted outputs are real.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from md_fences import Fence, fences

from archdsl import cli, docs
from archdsl.api import ArchError, check_file, check_text
from archdsl.check import signature
from archdsl.codegen.deploy import deploy
from archdsl.codegen.module import build_module
from archdsl.ops import registry

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIAL_MD = DOCS / "tutorial.md"
ADD_OP_MD = DOCS / "adding_an_op.md"


def run_cli(argv: list[str]) -> tuple[int, str]:
    """`archdsl ARGV` in this process: (exit code, stdout + stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue() + err.getvalue()


def assert_lines_shown(shown: str, real: str, where: str) -> None:
    """Every line of a quoted output (except `...` elisions) is a line of the real output."""
    real_lines = {ln.rstrip() for ln in real.splitlines()}
    for ln in shown.splitlines():
        if ln.strip() in ("", "...") or ln.lstrip().startswith("..."):
            continue
        assert ln.rstrip() in real_lines, f"{where}: this quoted line is not in the real output:\n{ln}\n" \
            f"real output:\n{real}"


# ================================================================ docs/adding_an_op.md

ADD_OP = fences(ADD_OP_MD)
FILES = [f for f in ADD_OP if f.lang == "python" and f.info.startswith("file=archdsl/ops/")]
LAYER_CODE = [f for f in FILES if f.info.endswith("_nn.py")]  # the families' torch halves
OP_CODE = [f for f in FILES if not f.info.endswith("_nn.py")]
NEW_OPS = ("star", "acb")


def test_adding_an_op_has_its_listings():
    assert len(LAYER_CODE) == 2 and len(OP_CODE) == 2


@pytest.mark.parametrize("name", NEW_OPS)
def test_example_ops_are_not_bundled(name):
    """The page adds ops archdsl does not have; if one is added for real, the page needs another example."""
    assert registry.get(name) is None, f"op {name!r} is now bundled: docs/adding_an_op.md needs a new example"


@pytest.fixture
def new_ops(monkeypatch, tmp_path) -> dict[str, registry.Op]:
    """Save the page's listings as the files they name in a directory that the fixture adds to the archdsl.ops
    package, and import them (torch halves first), as the registry would. The registry has no unregister:
    registration goes into a copy of it that replaces the module's dict for the test only, and the package path
    and the modules are set with monkeypatch, so everything is restored afterwards."""
    import archdsl.ops

    registry.all_ops()  # the bundled families are loaded before the registry is swapped
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    pkg = tmp_path / "ops"
    pkg.mkdir()
    monkeypatch.setattr(archdsl.ops, "__path__", [*archdsl.ops.__path__, str(pkg)])
    for f in LAYER_CODE + OP_CODE:
        path = pkg / Path(f.info).name
        path.write_text(f.text, encoding="utf-8")
        name = "archdsl.ops." + path.stem
        monkeypatch.delitem(sys.modules, name, raising=False)
        try:
            monkeypatch.setitem(sys.modules, name, importlib.import_module(name))
        except Exception as e:  # the listing's line in the page, not the temp file's
            raise AssertionError(f"{ADD_OP_MD}:{f.line}: the listing {f.info} does not import: {e!r}") from e
    ops = {name: registry.get(name) for name in NEW_OPS}
    assert all(ops.values()), f"the listings did not register {NEW_OPS}"
    return ops


def test_registry_is_left_as_it_was():
    # runs after the fixture's users in file order; holds in any order
    assert "star" not in registry.all_ops() and "archdsl.ops.star" not in sys.modules
    assert "archdsl.ops.star_nn" not in sys.modules


def test_a_family_file_saved_in_ops_is_registered_by_itself(tmp_path, monkeypatch):
    """Section 2.3: the registry imports every module of the ops package; the page's star.py, saved as a file
    of that package (here a second directory of it), registers `star` with no other edit."""
    import archdsl.ops

    for f in FILES:
        if "/star" in f.info:
            (tmp_path / Path(f.info).name).write_text(f.text, encoding="utf-8")
    registry.all_ops()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(archdsl.ops, "__path__", [*archdsl.ops.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.delitem(sys.modules, "archdsl.ops.star", raising=False)
    monkeypatch.delitem(sys.modules, "archdsl.ops.star_nn", raising=False)
    families = registry.family_modules()
    assert "star" in families and "star_nn" not in families and "convview" not in families
    try:
        assert registry.get("star") is not None and "archdsl.ops.star" in sys.modules
        assert "archdsl.ops.star_nn" not in sys.modules  # the torch half waits for a build
    finally:
        sys.modules.pop("archdsl.ops.star", None)


@pytest.mark.parametrize("name", NEW_OPS)
def test_example_op_samples(new_ops, name):
    """What tests/test_registry.py runs on every registered op, on the new ones."""
    op = new_ops[name]
    assert op.user and op.samples
    assert f"{name}({signature(op)})" in op.doc().splitlines()[0]
    for params, ins in op.samples:
        p = op.Params(**params)
        out = op.infer(p, ins)
        module = op.build(p, ins).double().train()
        assert op.cost(p, ins, out).params == sum(t.numel() for t in module.parameters())
        x = torch.randn(*ins[0].torch_shape(2), dtype=torch.float64, requires_grad=True)
        y = module(x)
        assert tuple(y.shape) == out.torch_shape(2)
        y.square().sum().backward()
        assert torch.isfinite(x.grad).all()


def _arch_blocks(kind: str) -> list[Fence]:
    blocks = [f for f in ADD_OP if f.lang == "arch"]
    return [f for f in blocks if f.info.startswith(kind)]


@pytest.mark.parametrize("block", _arch_blocks("params="), ids=lambda b: b.id)
def test_adding_an_op_specs(new_ops, block):
    """The page's specs check with the new ops; the checked count is the built module's real count; a forward
    pass runs; the deploy form computes the same function (random BN statistics) with the count it checks to."""
    g = check_text(block.text, file=f"adding_an_op_{block.id}.arch")
    params = int(block.info[len("params="):])
    assert g.total().params == params
    torch.manual_seed(0)
    model = build_module(g)
    assert sum(t.numel() for t in model.parameters()) == params
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    c, h, w = g.input_shape.c, g.input_shape.h, g.input_shape.w
    x = torch.randn(2, c, h, w)
    dep = deploy(model)
    with torch.no_grad():
        y, yd = model(x), dep(x)
    assert y.shape == (2, 10)
    assert (y - yd).abs().max() / y.abs().max() < 1e-5
    assert sum(t.numel() for t in dep.parameters()) == dep.graph.total().params


@pytest.mark.parametrize("block", _arch_blocks("error"), ids=lambda b: b.id)
def test_adding_an_op_error_block(new_ops, block):
    expected = block.info[len("error"):].lstrip(":").strip()
    with pytest.raises(ArchError) as info:
        check_text(block.text, file="m.arch")
    assert expected in info.value.render()


def _spec(title: str) -> str:
    """The text of the page's spec whose first line names `title`."""
    return next(f.text for f in _arch_blocks("params=") if f.text.startswith(f"# {title}"))


def _quoted_after(marker: str) -> str:
    """The ```text block that follows the first paragraph containing `marker`."""
    text = ADD_OP_MD.read_text(encoding="utf-8")
    at = text.index(marker)
    line = text[:at].count("\n") + 1
    return next(f.text for f in ADD_OP if f.line > line and f.lang == "text")


def test_adding_an_op_quoted_outputs(new_ops, tmp_path, monkeypatch):
    """The outputs the page shows are what the commands print with the ops registered."""
    monkeypatch.chdir(tmp_path)
    star = _spec("starnet_mini.arch")
    Path("starnet_mini.arch").write_text(star, encoding="utf-8")
    typo = star.replace("star(mlp_ratio * dim)             #", 'star(mlp_ratio * dim, act="relu7") #')
    assert typo != star
    Path("starnet_typo.arch").write_text(typo, encoding="utf-8")
    Path("acnet_mini.arch").write_text(_spec("acnet_mini.arch"), encoding="utf-8")

    rc, out = run_cli(["check", "starnet_mini.arch"])
    assert rc == 0
    assert_lines_shown(_quoted_after("`archdsl check starnet_mini.arch`, with the op registered"), out, "star check")
    rc, out = run_cli(["check", "starnet_mini.arch", "--deploy", "--json"])
    assert json.loads(out)["params"] == 503_338  # quoted in section 2.4
    rc, out = run_cli(["check", "starnet_typo.arch"])
    assert rc == 1
    assert_lines_shown(_quoted_after("(`archdsl check starnet_typo.arch`, exit code 1)"), out, "star error")
    rc, out = run_cli(["check", "acnet_mini.arch", "--deploy"])
    assert rc == 0
    assert_lines_shown(_quoted_after("`archdsl check acnet_mini.arch --deploy`:"), out, "acb deploy")
    rc, out = run_cli(["show", "acnet_mini.arch", "--deploy", "--no-spans"])
    assert rc == 0
    assert_lines_shown(_quoted_after("`archdsl show acnet_mini.arch --deploy --no-spans`"), out, "acb show")
    # the page's own layer class is written into the standalone source like a bundled one: it runs, and gives
    # the built model's output bit for bit
    rc, out = run_cli(["compile", "starnet_mini.arch", "-o", "star.py"])
    assert rc == 0, out
    text = Path("star.py").read_text()
    assert "class Star(nn.Module):" in text and "@recorded" not in text and "archdsl" not in text.split('"""', 2)[2]
    ns: dict = {}
    exec(compile(text, "star.py", "exec"), ns)
    built = build_module(check_file("starnet_mini.arch")).eval()
    standalone = ns["model"]().eval()
    standalone.load_state_dict(built.state_dict())
    x = torch.randn(2, *check_file("starnet_mini.arch").input_shape.to_json())
    with torch.no_grad():
        assert torch.equal(standalone(x), built(x))


def test_adding_an_op_quoted_ops_md_entry(new_ops):
    quoted = next(f.text for f in ADD_OP if f.lang == "text" and f.text.startswith("### `star`"))
    section = "\n".join(docs._op_section(new_ops["star"])) + "\n"
    assert quoted.strip() == section[section.index("### `star`"):].strip()


# ================================================================ docs/tutorial.md

TUTORIAL = fences(TUTORIAL_MD)
TUTORIAL_DIR = DOCS / "tutorial"
# the spec the tutorial breaks on purpose, and the error it shows for it
MISTAKES = {"docs/tutorial/mistake.arch": "add: input shapes differ: input 0 is 16x16x16 nhwc, input 1 is 16x16x16"}
# the tutorial's search wrote its best network here; the repository keeps a verbatim copy
BEST = "tutorial-out/top/01_d2244abf1caa7614.arch"
BEST_COPY = "docs/tutorial/best_found.arch"


@dataclass
class Command:
    line: int  # of the fence holding it
    argv: list[str]  # without the leading "archdsl"
    output: str  # what the tutorial shows it printing ("" for a command of a ```sh block)


def commands() -> list[Command]:
    """Every `archdsl ...` command of the tutorial: the `$ archdsl` lines of ```console blocks (with the output
    shown under them) and the `archdsl` lines of ```sh blocks."""
    out: list[Command] = []
    for f in TUTORIAL:
        if f.lang == "console":
            cur: Command | None = None
            for ln in f.text.splitlines():
                if ln.startswith("$ "):
                    words = shlex.split(ln[2:], comments=True)
                    cur = Command(f.line, words[1:], "") if words[:1] == ["archdsl"] else None
                    if cur is not None:
                        out.append(cur)
                elif cur is not None:
                    cur.output += ln + "\n"
        elif f.lang == "sh":
            for ln in f.text.splitlines():
                words = shlex.split(ln, comments=True)
                if words[:1] == ["archdsl"]:
                    out.append(Command(f.line, words[1:], ""))
    return out


COMMANDS = commands()
CHECKS = [c for c in COMMANDS if c.argv[0] == "check"]


def test_tutorial_has_its_parts():
    used = {c.argv[0] for c in COMMANDS}
    assert {"check", "viz", "bench", "search", "report", "compile"} <= used, used
    assert any("--resume" in c.argv for c in COMMANDS)
    assert any(c.argv[0] == "search" and "--objective" in c.argv for c in COMMANDS)
    forms = {c.argv[c.argv.index("--form") + 1] for c in COMMANDS if "--form" in c.argv}
    assert forms == {"train", "fast"} and any(c.argv[0] == "viz" and "--deploy" in c.argv for c in COMMANDS)


def test_tutorial_search_has_its_own_out():
    """The README's quick start writes search-out/, and a search refuses a directory holding earlier trials: every
    search of the tutorial names its --out, the main one is tutorial-out (resumed there), and no command of the
    page reads search-out/."""
    searches = [c for c in COMMANDS if c.argv[0] == "search"]
    outs = [cli.make_parser().parse_args(c.argv).out for c in searches]
    assert all("--out" in c.argv for c in searches) and "search-out" not in outs
    assert outs.count("tutorial-out") == 2 and any("--resume" in c.argv and "tutorial-out" in c.argv for c in searches)
    text = TUTORIAL_MD.read_text(encoding="utf-8")
    assert not re.search(r"(?m)^\s*\$ .*search-out", text) and "search-out/top" not in text


def strict_parser() -> argparse.ArgumentParser:
    """archdsl's parser, refusing abbreviations (argparse would accept `--trial` for `--trials`)."""
    parser = cli.make_parser()
    parser.allow_abbrev = False
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.allow_abbrev = False
    return parser


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: f"L{c.line}-{c.argv[0]}")
def test_tutorial_command_parses(cmd):
    """Each quoted command exists with those options: the real parser accepts it (nothing is run)."""
    parser = strict_parser()
    try:
        args = parser.parse_args(cmd.argv)
    except SystemExit:
        pytest.fail(f"docs/tutorial.md:{cmd.line}: `archdsl {shlex.join(cmd.argv)}` does not parse")
    spec = getattr(args, "file", None)
    if spec:
        spec = BEST_COPY if spec == BEST else spec  # the search's output exists only after a search
        assert (ROOT / spec).is_file(), f"docs/tutorial.md:{cmd.line}: {spec} does not exist"


def _real(argv: list[str]) -> tuple[int, str]:
    """Run `archdsl ARGV`, reading the search's best network from the repository's copy."""
    rc, out = run_cli([BEST_COPY if a == BEST else a for a in argv])
    return rc, out.replace(BEST_COPY, BEST)


@pytest.mark.parametrize("cmd", CHECKS, ids=lambda c: f"L{c.line}-{'-'.join(c.argv[1:3])}")
def test_tutorial_check_output_is_real(cmd):
    """`archdsl check` as quoted prints the lines the tutorial shows, and its params / MACs are check_file's."""
    rc, out = _real(cmd.argv)
    assert rc == (1 if cmd.argv[1] in MISTAKES else 0), out
    assert_lines_shown(cmd.output, out, f"docs/tutorial.md:{cmd.line} `archdsl {shlex.join(cmd.argv)}`")
    if rc:
        return
    args = cli.make_parser().parse_args(cmd.argv)
    g = check_file(BEST_COPY if args.file == BEST else args.file, cli.overrides(args.set),
                   cli.input_shape(args.input))
    if args.deploy:
        from archdsl.passes import deploy_graph

        g, _ = deploy_graph(g)
    total = g.total()
    for m in re.finditer(r"params ([\d,]+) \(.*?MACs ([\d,]+)", cmd.output):
        assert (int(m[1].replace(",", "")), int(m[2].replace(",", ""))) == (total.params, total.macs)
    for m in re.finditer(r'"(params|macs)": (\d+)', cmd.output):
        assert int(m[2]) == (total.params if m[1] == "params" else total.macs)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.argv[0] == "compile"], ids=lambda c: f"L{c.line}")
def test_tutorial_compile_counts(cmd):
    """`wrote FILE (model: N parameters)`: N is the checked count of the form compiled (nothing is written)."""
    args = cli.make_parser().parse_args(cmd.argv)
    g = check_file(BEST_COPY if args.file == BEST else args.file)
    if args.deploy:
        from archdsl.passes import deploy_graph

        g, _ = deploy_graph(g)
    m = re.search(r"\(\w+: ([\d,]+) parameters\)", cmd.output)
    assert m and int(m[1].replace(",", "")) == g.total().params


def test_best_found_is_the_search_output():
    """The copy is the search's file: its header figures are what it checks to, and the tutorial quotes its head."""
    text = (ROOT / BEST_COPY).read_text(encoding="utf-8")
    assert text.startswith("# found by archdsl search (trial 28, rank 1 under 3 ms)\n")
    total = check_file(BEST_COPY).total()
    assert f"{total.params:,} params, {total.macs:,} MACs" in text.splitlines()[2]
    head = next(f.text for f in TUTORIAL if f.lang == "console" and f"$ head -13 {BEST}" in f.text)
    assert head.splitlines()[1:] == text.splitlines()[:13]
    assert f"(trial 28, {total.params:,} params)" in TUTORIAL_MD.read_text(encoding="utf-8")


def test_tutorial_python_example_runs():
    """The Python example, on the repository's copy of the search's best network, prints what the tutorial shows."""
    code = next(f for f in TUTORIAL if f.lang == "python")
    shown = next(f for f in TUTORIAL if f.lang == "text" and f.line > code.line)
    assert BEST in code.text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.text.replace(BEST, BEST_COPY), f"{TUTORIAL_MD}:{code.line}", "exec"), {})
    assert out.getvalue() == shown.text


ARCH = [f for f in TUTORIAL if f.lang == "arch"]
QUOTES = [f for f in ARCH if f.info.startswith("file=")]
ERRORS = [f for f in ARCH if f.info.startswith("error")]


def test_tutorial_arch_blocks_are_classified():
    assert len(QUOTES) >= 4 and ERRORS and len(QUOTES) + len(ERRORS) == len(ARCH)


@pytest.mark.parametrize("block", QUOTES, ids=lambda b: b.info[len("file="):])
def test_tutorial_quotes_files_verbatim(block):
    path = ROOT / block.info[len("file="):]
    assert block.text == path.read_text(encoding="utf-8"), \
        f"docs/tutorial.md:{block.line} no longer matches {path.relative_to(ROOT)}: copy the file into the doc"


@pytest.mark.parametrize("block", ERRORS, ids=lambda b: b.id)
def test_tutorial_error_block_fails(block):
    expected = block.info[len("error"):].lstrip(":").strip()
    with pytest.raises(ArchError) as info:
        check_text(block.text, file=str(TUTORIAL_DIR / f"tutorial_md_{block.id}.arch"))
    assert expected in info.value.render()


SPECS = sorted(p.relative_to(ROOT).as_posix() for p in TUTORIAL_DIR.glob("*.arch"))


@pytest.mark.parametrize("spec", SPECS)
def test_tutorial_spec_files_check(spec):
    """Every spec under docs/tutorial/ checks, except the mistake, which fails with the message shown."""
    text = TUTORIAL_MD.read_text(encoding="utf-8")
    assert spec in text, f"{spec} is not used by docs/tutorial.md"
    if spec in MISTAKES:
        with pytest.raises(ArchError) as info:
            check_file(spec)
        assert MISTAKES[spec] in info.value.render() and MISTAKES[spec] in text
        return
    g = check_file(spec)
    assert g.output_shape.to_json() == [10]


def test_mistake_is_one_line_off():
    """mistake.arch is convnext_mini.arch with exactly the change the tutorial's diff shows."""
    diff = next(f.text for f in TUTORIAL if f.lang == "diff")
    old = [ln[1:] for ln in diff.splitlines() if ln.startswith("-")]
    new = [ln[1:] for ln in diff.splitlines() if ln.startswith("+")]
    good = (TUTORIAL_DIR / "convnext_mini.arch").read_text(encoding="utf-8")
    assert good.replace("\n".join(old), "\n".join(new)) == (TUTORIAL_DIR / "mistake.arch").read_text(encoding="utf-8")
