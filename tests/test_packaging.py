"""The wheel ships everything: every package directory is listed in pyproject.toml, and the grammar (the single
source of the language) is package data of archdsl.grammar, loaded through importlib.resources."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_in_the_wheel():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = {"archdsl." + ".".join(p.parent.relative_to(ROOT / "archdsl").parts)
            for p in (ROOT / "archdsl").rglob("__init__.py")} - {"archdsl."}
    dirs = {d.rstrip(".") for d in dirs} | {"archdsl"}
    mapped = {"archdsl.grammar": "grammar", "archdsl.search": "search"}
    for pkg, folder in mapped.items():
        assert cfg["package-dir"][pkg] == folder
        dirs.add(pkg)
    assert dirs <= listed, f"missing from pyproject packages: {sorted(dirs - listed)}"
    assert "*.lark" in cfg["package-data"]["archdsl.grammar"]


def test_kernel_sources_are_package_data():
    """The C++ kernels compile on first use from the installed package, so every source ships in the wheel."""
    from fnmatch import fnmatch

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = cfg["package-data"]["archdsl.kernels"]
    srcs = [p.relative_to(ROOT / "archdsl" / "kernels").as_posix() for p in (ROOT / "archdsl/kernels/csrc").iterdir()]
    assert srcs and all(any(fnmatch(f, pat) for pat in patterns) for f in srcs), (srcs, patterns)


def test_grammar_loads_as_package_data():
    from archdsl.parse import grammar_text

    assert grammar_text() == (ROOT / "grammar" / "archdsl.lark").read_text()


def test_no_torchvision_dependency():
    text = (ROOT / "pyproject.toml").read_text()
    assert "torchvision" not in text and '"torch==2.13.0"' in text
