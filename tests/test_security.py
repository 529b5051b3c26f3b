"""Loading a spec is as safe as loading JSON: no code path can run spec text as Python, and imports stay inside
the spec's directory (plus --import-path) unless allowed.

The source scan reads every module of the installed packages (archdsl, archdsl.search, the grammar) with `ast`:
no call of eval / exec / compile / __import__, no importlib.import_module of a computed name (but a module of
the calling package itself, f"{__package__}.{name}": the op registry imports the family files it finds in
archdsl/ops/, never a name from data), no pickle / marshal /
dill / shelve loads, no yaml.load, and every torch.load passes weights_only=True.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from archdsl.api import check_file
from archdsl.errors import ArchError

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "archdsl").rglob("*.py"), *(ROOT / "search").rglob("*.py")])
BANNED_BUILTINS = {"eval", "exec", "compile", "__import__", "execfile"}
BANNED_MODULE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("marshal", "load"), ("marshal", "loads"),
                       ("dill", "load"), ("dill", "loads"), ("shelve", "open"), ("yaml", "load"),
                       ("cloudpickle", "load"), ("cloudpickle", "loads"), ("runpy", "run_path"),
                       ("runpy", "run_module"), ("importlib", "import_module")}


def _violations(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        where = f"{path.relative_to(root)}:{node.lineno}"
        constant = bool(node.args) and all(isinstance(a, ast.Constant) for a in node.args)
        if isinstance(f, ast.Name) and f.id in BANNED_BUILTINS:
            out.append(f"{where}: {f.id}(...)")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if (f.value.id, f.attr) == ("importlib", "import_module") and (constant or _own_package(node)):
                continue  # a module of ours named in the source, or found in our own package; not in data
            if (f.value.id, f.attr) in BANNED_MODULE_CALLS:
                out.append(f"{where}: {f.value.id}.{f.attr}(...)")
            if (f.value.id, f.attr) == ("torch", "load"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    out.append(f"{where}: torch.load without weights_only=True")
    return out


def _own_package(call: ast.Call) -> bool:
    """importlib.import_module(f"{__package__}.{...}"): a module inside the calling package."""
    arg = call.args[0] if len(call.args) == 1 else None
    return (isinstance(arg, ast.JoinedStr) and len(arg.values) >= 2
            and isinstance(arg.values[0], ast.FormattedValue) and isinstance(arg.values[0].value, ast.Name)
            and arg.values[0].value.id == "__package__"
            and isinstance(arg.values[1], ast.Constant) and str(arg.values[1].value).startswith("."))


def test_scan_sees_the_packages():
    names = {str(p.relative_to(ROOT)) for p in SOURCES}
    assert {"archdsl/parse.py", "archdsl/interp.py", "archdsl/elaborate/__init__.py", "archdsl/cli/__init__.py",
            "archdsl/ops/registry.py", "search/driver.py", "search/trial.py"} <= names
    assert _violations(Path(__file__)) == []  # this file only names the banned calls in strings


def test_scan_would_catch_each_banned_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, torch\neval(x)\nexec(x)\npickle.loads(b)\ntorch.load(f)\n"
                   "torch.load(f, weights_only=False)\nimportlib.import_module('ok.module')\n"
                   "importlib.import_module(x)\nimportlib.import_module(f'{__package__}.{name}')\n"
                   "importlib.import_module(f'{pkg}.{name}')\nimportlib.import_module(f'{__package__}{name}')\n")
    found = _violations(bad, tmp_path)
    assert [v.split(": ", 1)[1] for v in found] == ["eval(...)", "exec(...)", "pickle.loads(...)",
                                                    "torch.load without weights_only=True",
                                                    "torch.load without weights_only=True",
                                                    "importlib.import_module(...)", "importlib.import_module(...)",
                                                    "importlib.import_module(...)"]


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_code_execution_from_data(path):
    assert _violations(path) == []


def test_spec_text_that_looks_like_python_is_not_run(tmp_path):
    """Python-looking text in every place a value goes is a syntax or name error, never executed."""
    marker = tmp_path / "ran"
    payloads = [f"__import__('os').system('touch {marker}')", f"open('{marker}', 'w')",
                "().__class__.__bases__[0].__subclasses__()", "exec('1')", "eval('1')", "lambda: 1", "x.__dict__"]
    for i, code in enumerate(payloads):
        spec = tmp_path / f"p{i}.arch"
        spec.write_text(f"model m() {{\n    input(3, 8, 8)\n    conv({code})\n}}\n")
        with pytest.raises(ArchError):
            check_file(spec)
        with pytest.raises(ArchError):  # the same text as an override value
            check_file(spec, {"x": code})
    assert not marker.exists()


def test_self_import_is_a_cycle(tmp_path):
    spec = tmp_path / "a.arch"
    spec.write_text('import "a.arch"\nmodel m() {\n    input(3, 8, 8)\n    relu()\n}\n')
    with pytest.raises(ArchError, match=r"import cycle: .*a\.arch -> .*a\.arch"):
        check_file(spec)


def test_imports_stay_inside_the_spec_directory(tmp_path):
    (tmp_path / "outside.arch").write_text("block b() { relu() }\n")
    inner = tmp_path / "proj"
    inner.mkdir()
    (inner / "link.arch").symlink_to(tmp_path / "outside.arch")
    for target in ("../outside.arch", "link.arch", str(tmp_path / "outside.arch")):
        spec = inner / "m.arch"
        spec.write_text(f'import "{target}"\nmodel m() {{\n    input(3, 8, 8)\n    b()\n}}\n')
        with pytest.raises(ArchError, match="leaves the spec's directory|absolute import path"):
            check_file(spec)
        assert check_file(spec, allow_outside=True) is not None  # the flag allows it


def test_a_code_executing_pickle_as_weights_is_refused_in_archdsls_words(tmp_path, capsys):
    """torch.load(weights_only=True) refuses it; its message would advise weights_only=False (unsafe for a hostile
    file): archdsl says what the file holds instead, in one line, and nothing runs."""
    import os
    import pickle

    from archdsl.cli import main

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"w": Evil()}))
    assert main(["compile", "examples/convnext_atto.arch", "--deploy", "--weights", str(bad),
                 "-o", str(tmp_path / "x.py")]) in (1, 2)
    err = capsys.readouterr().err
    assert "never loads" in err and "weights_only=False" not in err and err.count("\n") == 1
    assert not marker.exists()
