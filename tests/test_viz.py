"""`archdsl viz`: real Graphviz drawings of the examples (svg, png, html), clusters per scope, node labels,
branches side by side, the deploy form's merges, and the command line's exit codes."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from functools import lru_cache
from pathlib import Path

import pytest

graphviz = pytest.importorskip("graphviz", reason="the Python package graphviz is not installed (pip install graphviz)")

from archdsl import cli, viz  # noqa: E402
from archdsl.api import check_file, check_text  # noqa: E402
from archdsl.passes import deploy_graph  # noqa: E402

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed (apt-get install graphviz)")

EXAMPLES = ("convnext_atto.arch", "inceptionnext_atto.arch", "unireplknet_a.arch")

SMALL = """
block mix(c: int) {
    split(sizes=[c // 2, c // 2], merge="concat") {
        a: dwconv(3)
        b: dwconv(k=5, d=2)
    }
}

model small() {
    input(3, 32, 32)
    stem: conv(16, k=3, s=2, bias=false)
    body: mix(16)
    res: parallel(merge="add") {
        main: { c1: conv(16, k=1); act: relu() }
        side: bn()
    }
    head: { pool: gap(); fc: linear(10) }
}
"""


@lru_cache(maxsize=None)
def example(name: str):
    return check_file(Path("examples") / name)


@lru_cache(maxsize=None)
def small():
    return check_text(SMALL, "small.arch")


def node_line(dot, name: str) -> str:
    """The DOT statement declaring node `name` (its attributes, label included)."""
    for line in dot.source.splitlines():
        if re.match(rf'\s*"?{re.escape(name)}"? \[', line):
            return line
    raise AssertionError(f"no node {name!r} in the DOT source")


def positions(dot) -> dict[str, tuple[float, float]]:
    """Node name -> (x, y) of the laid-out drawing (dot's JSON output)."""
    data = json.loads(dot.pipe(format="json"))
    return {o["name"]: tuple(float(v) for v in o["pos"].split(",")) for o in data["objects"] if "pos" in o}


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """archdsl.cli.main with the viz subcommand (registered here too until cli.py registers it itself)."""
    make = cli.make_parser

    def make_with_viz():
        ap = make()
        sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
        if "viz" not in sub.choices:
            viz.add_viz_parser(sub)
        return ap

    monkeypatch.setattr(cli, "make_parser", make_with_viz)

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(list(args))
        return code, capsys.readouterr().err

    return run


# ---------------------------------------------------------------- real drawings of the examples


@needs_dot
@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_render_to_svg_png_html(name, tmp_path):
    g = example(name)
    svg = viz.render(g, tmp_path / "g.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert g.model in svg and "stages.2.blocks.1" in svg
    png = viz.render(g, tmp_path / "g.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    page = viz.render(g, tmp_path / "g.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == viz.max_depth(g) + 1
    # self-contained: nothing is fetched from elsewhere
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "<link" not in page and "<script src" not in page and "@import" not in page
    assert 'data-depth="0"' in page and "v1-cl-stages" in page.replace("&#45;", "-")


@needs_dot
def test_to_svg_embeds_inline():
    svg = viz.to_svg(small(), id_prefix="r7-")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert 'id="r7&#45;n&#45;stem"' in svg


def test_scopes_become_nested_clusters():
    dot = viz.to_dot(example("convnext_atto.arch"))
    src = dot.source
    for path in ("stem", "stages", "stages.0", "stages.0.blocks", "stages.2.blocks.5", "stages.2.blocks.5.mlp",
                 "stages.3.downsample", "head"):
        assert re.search(rf'subgraph "?cluster_{re.escape(path)}"? {{', src), path
    assert 'label="blocks.5  ·  convnext_block"' in src
    # nesting: the block's cluster opens inside its stage's cluster, before that one closes
    start = src.index('subgraph "cluster_stages.2"')
    assert start < src.index('subgraph "cluster_stages.2.blocks.5"') < src.index('subgraph "cluster_stages.3"')


def test_node_labels_show_op_params_and_shape():
    dot = viz.to_dot(small())
    stem = node_line(dot, "stem")
    assert "<B>conv</B>(16, k=3, s=2, bias=false)" in stem and "16x16x16" in stem
    assert "pad=" not in stem.split("tooltip")[0] and "groups=" not in stem.split("tooltip")[0]  # defaults
    b = node_line(dot, "body.b")
    assert "<B>dwconv</B>(k=5, d=2)" in b and "8x16x16" in b
    assert "(k=3)" in node_line(dot, "body.a")  # a kernel size is shown even at its default
    split = node_line(dot, "body.split")
    assert "[8, 8]x16x16" in split
    side = node_line(dot, "res.side")
    assert "<B>bn</B>" in side and "eps" not in side.split("tooltip")[0]
    assert "<B>linear</B>(10)" in node_line(dot, "head.fc") and ">10<" in node_line(dot, "head.fc")
    assert "tooltip=" in stem and "small.arch:" in stem  # hover: every parameter and the source position


@needs_dot
def test_branches_are_side_by_side():
    pos = positions(viz.to_dot(small()))
    for left, right in (("body.a", "body.b"), ("res.main.c1", "res.side")):
        assert pos[left][1] == pos[right][1], (left, right, pos[left], pos[right])  # one rank
        assert abs(pos[left][0] - pos[right][0]) > 20
    assert pos["body.split"][1] > pos["body.a"][1] > pos["body.concat"][1]  # top to bottom


@needs_dot
def test_inception_split_branches_share_a_rank():
    g = check_file("examples/inceptionnext_atto.arch", {"generic_mixer": "true"})
    pos = positions(viz.to_dot(g))
    heads = [f"stages.1.blocks.0.mixer.{b}" for b in ("identity", "dwconv_hw", "dwconv_w", "dwconv_h")]
    assert len({pos[h][1] for h in heads}) == 1
    assert len({pos[h][0] for h in heads}) == 4


def test_depth_collapses_scopes_into_boxes():
    g = example("convnext_atto.arch")
    dot = viz.to_dot(g, depth=3)
    src = dot.source
    box = node_line(dot, "[stages.0.blocks.1]")
    assert "convnext_block" in box and "7 nodes" in box and "40x56x56" in box and "params" in box
    assert 'id="box-stages.0.blocks.1"' in box
    assert "stages.0.blocks.1.conv_dw" not in src and 'cluster_stages.0.blocks"' in src
    full = viz.to_dot(g).source
    assert "stages.0.blocks.1.conv_dw" in full and "[stages.0.blocks.1]" not in full
    assert viz.max_depth(g) == 5
    top = viz.to_dot(g, depth=0).source
    assert "[stages]" in top and "cluster_" not in top


# ---------------------------------------------------------------- the deploy form


def test_deploy_form_shows_what_was_merged():
    train = example("unireplknet_a.arch")
    deployed, notes = viz.deploy_form(train)
    assert len(deployed) < len(train)
    dot = viz.to_dot(deployed, deploy_notes=notes)
    train_src, src = viz.to_dot(train).source, dot.source
    assert src.count("<B>bn</B>") < train_src.count("<B>bn</B>")  # folded BatchNorms are gone
    mixer = node_line(dot, "stages.1.blocks.0.mixer")
    assert "<B>dwconv</B>(k=13, pad=6)" in mixer
    assert "= dilated_reparam(13), re-parameterized" in mixer and "+ folded: bn norm" in mixer
    fc2 = node_line(dot, "stages.1.blocks.0.ffn.fc2")
    assert "+ folded: bn ffn_norm" in fc2 and "+ folded: layer_scale" in fc2 and "+ bias of grn" in fc2
    assert "deploy form" in src and "fold_bn: 24 changes" in src and "159 training-form nodes -&gt; 123" in src
    box = node_line(viz.to_dot(deployed, deploy_notes=notes, depth=3), "[stages.1.blocks.0]")
    assert "2 merged nodes" in box  # a collapsed block still says that something inside it was merged


def test_merged_branches_are_listed_on_the_kept_conv():
    train = check_text("""
model rep() {
    input(8, 16, 16)
    m: parallel(merge="add") {
        a: { conv: dwconv(7, bias=false); bn: bn() }
        b: { conv: dwconv(k=3, d=2, bias=false); bn: bn() }
        c: bn()
    }
}
""", "rep.arch")
    deployed, reports = deploy_graph(train)
    notes = viz.deploy_notes(train, deployed, reports)
    assert len(deployed) == 2
    assert notes.nodes["m.a.conv"] == ["+ folded: bn", "= 3 branches of add merged:",
                                       "\u2022 dwconv(k=7, bias=false) > bn",
                                       "\u2022 dwconv(k=3, d=2, bias=false) > bn", "\u2022 bn"]
    assert "merge_branches: 1 change" in notes.summary


# ---------------------------------------------------------------- command line


@needs_dot
def test_cli_writes_each_format(run_cli, tmp_path):
    for suffix in ("svg", "png", "html"):
        out = tmp_path / f"g.{suffix}"
        code, err = run_cli("viz", "examples/convnext_atto.arch", "-o", str(out), "--depth", "3")
        assert code == 0, err
        assert out.stat().st_size > 1000 and f"wrote {out}" in err
    assert "box&#45;stages.0.blocks.1" in (tmp_path / "g.svg").read_text()  # --depth 3: blocks are boxes
    code, err = run_cli("viz", "examples/convnext_atto.arch", "--set", "kernel=5", "--input", "3x64x64",
                        "-o", str(tmp_path / "small.svg"))
    assert code == 0, err
    svg = (tmp_path / "small.svg").read_text()
    assert "(k=5)" in svg and "40x16x16" in svg and "40x56x56" not in svg
    code, err = run_cli("viz", "examples/convnext_atto.arch", "-o", str(tmp_path / "no" / "such" / "g.svg"))
    assert code == 1 and "cannot write" in err and "Traceback" not in err


@needs_dot
def test_cli_deploy(run_cli, tmp_path):
    out = tmp_path / "d.svg"
    code, err = run_cli("viz", "examples/unireplknet_a.arch", "--deploy", "-o", str(out))
    assert code == 0, err
    svg = out.read_text(encoding="utf-8")
    assert "deploy form" in svg and "re&#45;parameterized" in svg and "123 nodes" in err


def test_cli_bad_spec_is_positioned(run_cli, tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m() {\n    input(3, 32, 32)\n    cnov(64, k=3)\n}\n")
    out = tmp_path / "g.svg"
    code, err = run_cli("viz", str(bad), "-o", str(out))
    assert code == 1 and not out.exists()
    assert ":3:5: error: unknown op 'cnov' (did you mean 'conv'?)" in err and "Traceback" not in err


def test_cli_bad_suffix(run_cli, tmp_path):
    code, err = run_cli("viz", "examples/convnext_atto.arch", "-o", str(tmp_path / "g.pdf"))
    assert code == 2 and "must end in .svg, .png or .html (got .pdf)" in err
    with pytest.raises(ValueError, match="got .jpeg"):
        viz.render(small(), tmp_path / "g.jpeg")


def test_missing_dot_is_a_clear_error(run_cli, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "g.svg"
    code, err = run_cli("viz", "examples/convnext_atto.arch", "-o", str(out))
    assert code == 1 and not out.exists()
    assert err.strip() == ("archdsl: error: Graphviz's `dot` program is not installed: apt-get install graphviz "
                           "(or brew install graphviz)")
    with pytest.raises(viz.VizUnavailable, match="apt-get install graphviz"):
        viz.to_svg(small())


def test_a_drawing_too_large_for_graphviz_is_refused_with_the_depth_that_fits(tmp_path, monkeypatch, capsys):
    """Issue 21: a 100k-node spec (checked in seconds) kept Graphviz busy past 120 s. A drawing of more than
    MAX_DRAWN boxes is refused at once, naming the deepest --depth that fits; that one is drawn; an .html page
    holds the depths that fit."""
    monkeypatch.setattr(viz, "MAX_DRAWN", 50)
    spec = tmp_path / "grid.arch"
    spec.write_text("model m() {\n    input(3, 8, 8)\n    stages: for i in range(10) {\n"
                    "        blocks: for j in range(10) {\n            c: conv(4, k=1)\n        }\n    }\n}\n")
    g = check_file(spec)
    assert viz.drawn_count(g, None) == 101 and viz.drawn_count(g, 2) == 11
    assert cli.main(["viz", str(spec), "-o", str(tmp_path / "g.svg")]) == 1
    err = capsys.readouterr().err
    assert "101 boxes to draw fully expanded, more than 50" in err and "--depth 2 draws what fits" in err
    assert not (tmp_path / "g.svg").exists()
    if shutil.which("dot") is not None:
        assert cli.main(["viz", str(spec), "-o", str(tmp_path / "g.svg"), "--depth", "2"]) == 0
        assert cli.main(["viz", str(spec), "-o", str(tmp_path / "g.html")]) == 0
        page = (tmp_path / "g.html").read_text()
        assert 'data-depth="2"' in page and 'data-depth="3"' not in page
