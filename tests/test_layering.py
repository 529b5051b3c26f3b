"""The import graph follows the pipeline (README, "Layout"): no import cycle, and no module imports one of a
later stage, counting imports inside functions too (a lazy import is still a dependency).

The stages, in order: 0 foundations (errors, limits, shapes, the IR, the version, the grammar, and the timing
library bench/{stats,lock,disturb,machine,regime,measure,anchors}); 1 parse; 2 elaborate (with the expression
interpreter and the op registry, which elaboration asks for op signatures); 3 check (the op families, the
reports, api, concrete specs); 4 passes; 5 codegen (kernels, weights, the bench command's model / table /
predictor); 6 search; 7 the command line (archdsl/cli/, bench/cli.py, search/cli.py, search/train_cmd.py), viz,
docs, the package's own __init__.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"archdsl": ROOT / "archdsl", "archdsl.search": ROOT / "search"}

STAGES = [  # (module or package prefix, stage); the first match wins, so the more specific come first
    ("archdsl.errors", 0), ("archdsl.limits", 0), ("archdsl.shapes", 0), ("archdsl.ir", 0), ("archdsl.version", 0),
    ("archdsl.grammar", 0), ("archdsl.bench.stats", 0), ("archdsl.bench.lock", 0), ("archdsl.bench.disturb", 0),
    ("archdsl.bench.machine", 0), ("archdsl.bench.regime", 0), ("archdsl.bench.measure", 0),
    ("archdsl.bench.anchors", 0),
    ("archdsl.syntax", 1), ("archdsl.syntax_errors", 1), ("archdsl.parse", 1), ("archdsl.program", 1),
    ("archdsl.fmt", 1),
    ("archdsl.values", 2), ("archdsl.choices", 2), ("archdsl.builtins", 2), ("archdsl.interp", 2),
    ("archdsl.elaborate", 2), ("archdsl.ops.registry", 2),
    ("archdsl.ops", 3), ("archdsl.check", 3), ("archdsl.report", 3), ("archdsl.printer", 3), ("archdsl.api", 3),
    ("archdsl.concrete", 3),
    ("archdsl.passes", 4),
    ("archdsl.bench.cli", 7),
    ("archdsl.codegen", 5), ("archdsl.kernels", 5), ("archdsl.weights", 5), ("archdsl.weights_import", 5),
    ("archdsl.bench", 5),
    ("archdsl.search.cli", 7), ("archdsl.search.train_cmd", 7),
    ("archdsl.search", 6),
    ("archdsl.viz", 7), ("archdsl.viz_labels", 7), ("archdsl.viz_notes", 7), ("archdsl.docs", 7), ("archdsl.cli", 7),
    ("archdsl.__main__", 7), ("archdsl", 7),
]

def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for base, d in PACKAGES.items():
        for f in d.rglob("*.py"):
            parts = [p for p in f.relative_to(d).with_suffix("").parts if p != "__init__"]
            if base == "archdsl" and parts[:1] == ["search"]:
                continue
            mods[".".join([base, *parts])] = (f, f.name == "__init__.py")
    return mods


def import_graph() -> nx.DiGraph:
    """module -> module it imports (module level or inside a function). `from . import x` is an import of the
    submodule x, not of the package's __init__ (which Python has run already)."""
    mods = _modules()
    g = nx.DiGraph()
    for name, (path, is_pkg) in mods.items():
        g.add_node(name)
        pkg = name if is_pkg else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs + ([base] if len(subs) < len(node.names) else [])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            g.add_edges_from((name, t) for t in targets if t in mods and t != name)
    return g


def test_every_relative_import_names_something_that_exists():
    """A lazy `from . import gone` (inside a function) fails only when that function runs: every relative import
    must name a module, or a name the module (or package __init__) defines at its top level."""
    mods = _modules()
    missing = []
    for name, (path, is_pkg) in mods.items():
        pkg = name if is_pkg else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
            base = ".".join(up + ([node.module] if node.module else []))
            if base not in mods:
                missing.append(f"{name}: from {'.' * node.level}{node.module or ''} ({base} does not exist)")
                continue
            defined = _top_level_names(mods[base][0])
            missing += [f"{name}: from {'.' * node.level}{node.module or ''} import {a.name}" for a in node.names
                        if f"{base}.{a.name}" not in mods and a.name not in defined and a.name != "*"]
    assert missing == []


def _top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports (anywhere in it: generous, so only a name defined nowhere is caught)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for tgt in targets:
                out |= {n.id for n in ast.walk(tgt) if isinstance(n, ast.Name)}
    return out


def stage(module: str) -> int | None:
    """The first entry naming the module or a package holding it ("archdsl" names the package's own __init__
    only: a new module of archdsl/ must be given its stage here)."""
    return next((s for prefix, s in STAGES
                 if module == prefix or (prefix != "archdsl" and module.startswith(prefix + "."))), None)


def test_every_module_has_a_stage():
    assert [m for m in import_graph() if stage(m) is None] == []


def test_no_import_cycle():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_no_import_runs_back_up_the_stages():
    back = {(u, v) for u, v in import_graph().edges if stage(v) > stage(u)}
    assert back == set(), "imports from a later stage: " + ", ".join(
        f"{u} ({stage(u)}) -> {v} ({stage(v)})" for u, v in sorted(back))


def test_a_familys_torch_half_needs_only_torch_and_other_torch_halves():
    """archdsl/ops/<family>_nn.py holds the family's layer classes: `archdsl compile` copies them into standalone
    source, so they may use torch, the shared `_layer` helpers and other families' torch halves, nothing else of
    archdsl; and no family file imports a torch half but inside a function (checking stays torch-free)."""
    g = import_graph()
    halves = [m for m in g if m.startswith("archdsl.ops.") and m.endswith("_nn")]
    assert {"archdsl.ops.conv_nn", "archdsl.ops.norm_nn", "archdsl.ops.mixers_nn"} <= set(halves)
    for m in halves:
        bad = [v for v in g.successors(m) if not (v.endswith("_nn") or v == "archdsl.ops._layer")]
        assert bad == [], f"{m} imports {bad}"
        tree = ast.parse(_modules()[m][0].read_text(encoding="utf-8"))
        top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert top <= {"torch", "__future__"}, f"{m} imports {top - {'torch', '__future__'}}"
    for fam in [m for m in g if m.startswith("archdsl.ops.") and m.rsplit(".", 1)[1] in _families()]:
        tree = ast.parse(_modules()[fam][0].read_text(encoding="utf-8"))
        eager = [n for n in tree.body if _imports_torch(n)]
        assert eager == [], f"{fam} imports torch or a torch half at module level (line {eager[0].lineno})"


def _imports_torch(n: ast.stmt) -> bool:
    """A module-level import of torch or of a family's torch half."""
    if isinstance(n, ast.Import):
        names = [a.name for a in n.names]
    elif isinstance(n, ast.ImportFrom):
        names = [n.module or ""] + [a.name for a in n.names]
    else:
        return False
    return any(x == "torch" or x.startswith("torch.") or x.endswith("_nn") for x in names)


def _families() -> list[str]:
    from archdsl.ops import registry

    return registry.family_modules()


def test_checking_a_spec_loads_no_torch():
    import subprocess
    import sys

    code = ("import sys; from archdsl.api import check_file; g = check_file(sys.argv[1]); g.total(); "
            "from archdsl.ops import registry; registry.all_ops(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.endswith('_nn')))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "examples" / "convnext_atto.arch")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_graph_sees_lazy_imports_and_relative_ones():
    g = import_graph()
    assert g.has_edge("archdsl.search.trial", "archdsl.bench.anchors")  # inside a function, `from ..bench...`
    assert g.has_edge("archdsl.passes.deploy", "archdsl.ops.convview")  # `from ..ops import convview as cv`
    assert not g.has_edge("archdsl.ops.registry", "archdsl.ops.conv")  # families are found, not imported by name


def test_the_version_is_pyprojects():
    from archdsl.version import __version__

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert __version__ == project["version"]


def test_forms_and_statements_are_tables():
    """Every form the language names has its handler in elaborate/forms.py's table, and the statements that bind
    or check have theirs (no dispatch by building method names)."""
    from archdsl import syntax as S
    from archdsl.elaborate import FORMS, SIMPLE_STATEMENTS
    from archdsl.elaborate.forms import FORM_HANDLERS

    assert set(FORM_HANDLERS) == set(FORMS)
    assert set(SIMPLE_STATEMENTS) == {S.Let, S.Require, S.Scaling, S.Init}


def test_every_module_imports():
    """A name moved between modules leaves no import behind that fails only when its module loads (the layering
    test reads the files; this loads them)."""
    import importlib

    failed = {}
    for m in sorted(import_graph()):
        if m.endswith("__main__"):
            continue
        try:
            importlib.import_module(m)
        except Exception as e:  # noqa: BLE001 - reported below, with the module
            failed[m] = f"{type(e).__name__}: {e}"
    assert failed == {}
