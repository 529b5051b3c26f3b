"""The bundled baselines (examples/baselines/*.arch) and the Fashion-MNIST search space
(examples/search/fashion_space.arch).

Baselines: each checks at s = 0.25, 1, 4 for 1x28x28 and 3x32x32 and builds, and a batch of 2 runs to (2, 10); the
deploy form computes the training form (eval, random BN statistics, float64); MACs never decrease with s and grow
over a doubling grid; each reproduces its family's reference model exactly with the `--set`s of its header; the
README table is what `archdsl check` says; blocks/ mirrors examples/blocks/ verbatim.
Space: 30 random points (define-by-run, as a search draws them) check, build and run on a 1x1x28x28 input; only
the dilation `require` rejects points; on a few, the deploy form equals the training form.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
from archdsl.search.space import Candidate, SearchSpace
from randomized import randomize

from archdsl.api import check_file
from archdsl.bench.table import sample_space
from archdsl.cli import main
from archdsl.codegen.deploy import deploy
from archdsl.codegen.module import build_module
from archdsl.passes import deploy_graph

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "examples" / "baselines"
SPACE = ROOT / "examples" / "search" / "fashion_space.arch"
NAMES = ["convnext", "inceptionnext", "unireplknet", "fasternet", "mobilenetv2", "resnet"]
SHAPES = [(1, 28, 28), (3, 32, 32)]

# The reference configuration each header names: (overrides, input, exact params[, exact MACs]).
REFERENCES = {
    "convnext": ({"patch": 4, "dims": [40, 80, 160, 320], "num_classes": 1000}, (3, 224, 224), 3_695_520),
    "inceptionnext": ({"patch": 4, "dims": [40, 80, 160, 320], "band": 9, "ratio": 0.25, "num_classes": 1000},
                      (3, 224, 224), 4_156_520),
    "unireplknet": ({"patch": 4, "dims": [40, 80, 160, 320], "kernels": [3, 13, 13, 13], "num_classes": 1000},
                    (3, 224, 224), 4_649_060),
    "fasternet": ({"patch": 4, "dims": [40, 80, 160, 320], "head_dim": 1280, "num_classes": 1000}, (3, 224, 224),
                  3_905_500),
    "mobilenetv2": ({"stem_stride": 2, "strides": [1, 2, 2, 2, 1, 2, 1], "stem_c": 32,
                     "widths": [16, 24, 32, 64, 96, 160, 320], "num_classes": 1000}, (3, 224, 224), 3_504_872,
                    300_774_272),
    "resnet": ({"depths": [2, 2, 2, 2], "widths": [64, 128, 256, 512]}, (3, 32, 32), 11_173_962),  # kuangliu ResNet18
}


def spec(name: str) -> Path:
    return BASELINES / f"{name}.arch"


def assert_deploy_matches(g, shape: tuple[int, int, int], seed: int = 0) -> None:
    """The deploy form of graph g computes its training form (eval mode, float64, random BN statistics)."""
    torch.manual_seed(seed)
    train = randomize(build_module(g).double(), seed)
    dep = deploy(train)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        want, got = train(x), dep(x)
    err = ((want - got).abs().max() / want.abs().max()).item()
    assert err < 1e-9, f"deploy form differs from the training form by {err:.3g} (relative)"


# ---------------------------------------------------------------- baselines


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("s", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("name", NAMES)
def test_baseline_checks_builds_and_runs(name, s, shape):
    g = check_file(spec(name), {"s": s}, input_shape=shape)
    assert g.output_shape.c == 10 and g.output_shape.layout == "nc"
    assert g.params["s"] == s
    model = build_module(g).eval()
    assert sum(p.numel() for p in model.parameters()) == g.total().params
    with torch.no_grad():
        y = model(torch.randn(2, *shape))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_baseline_deploy_equals_training_form(name):
    g = check_file(spec(name))
    assert_deploy_matches(g, (1, 28, 28))
    left = {n.op for n in deploy_graph(g)[0].nodes()} & {"bn", "dilated_reparam", "layer_scale", "drop_path"}
    assert not left, f"the deploy form keeps {left}: every BN, branch and layer scale folds in these families"
    assert_deploy_matches(check_file(spec(name), {"s": 0.25}, input_shape=(3, 32, 32)), (3, 32, 32), seed=1)


@pytest.mark.parametrize("name", NAMES)
def test_baseline_macs_grow_with_s(name):
    grid = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, 20.0]
    macs = [check_file(spec(name), {"s": s}).total().macs for s in grid]
    assert macs == sorted(macs), dict(zip(grid, macs))  # rounding may repeat a network, never shrink it
    doubling = macs[grid.index(0.25):grid.index(4.0) + 1]
    assert all(a < b for a, b in zip(doubling, doubling[1:])), dict(zip(grid, macs))
    for s in (grid[0], grid[-1]):  # the ends of the documented range, at the other input size too
        assert check_file(spec(name), {"s": s}, input_shape=(3, 32, 32)).output_shape.c == 10


@pytest.mark.parametrize("name", NAMES)
def test_baseline_header_counts(name):
    total = check_file(spec(name)).total()
    text = spec(name).read_text(encoding="utf-8")
    assert f"At s = 1 and 1x28x28: {total.params:,} params, {total.macs:,} MACs" in text


@pytest.mark.parametrize("name", NAMES)
def test_baseline_reproduces_its_reference(name):
    overrides, shape, params, *macs = REFERENCES[name]
    g = check_file(spec(name), overrides, input_shape=shape)
    assert g.total().params == params
    if macs:
        assert g.total().macs == macs[0]
    text = spec(name).read_text(encoding="utf-8")
    assert f"({params:,} params" in text, "the header names the reference count"


def test_mobilenetv2_half_width_reference():
    g = check_file(spec("mobilenetv2"), {"stem_stride": 2, "strides": [1, 2, 2, 2, 1, 2, 1], "num_classes": 1000},
                   input_shape=(3, 224, 224))
    assert g.total().params == 1_968_680  # torchvision mobilenet_v2(width_mult=0.5): the baseline's widths


def test_unireplknet_reference_deploy_count():
    overrides, shape, _ = REFERENCES["unireplknet"]
    dg, _ = deploy_graph(check_file(spec("unireplknet"), overrides, input_shape=shape))
    assert dg.total().params == 4_437_300  # the authors' deploy form of UniRepLKNet-A
    g = check_file(spec("unireplknet"), {**overrides, "deploy": True}, input_shape=shape)
    assert g.total().params == 4_437_300


def test_readme_table_is_what_check_says():
    rows = [line.split("|")[1:-1] for line in (BASELINES / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")]
    assert sorted(r[0].strip().strip("`").removesuffix(".arch") for r in rows) == sorted(NAMES)
    for row in rows:
        name = row[0].strip().strip("`").removesuffix(".arch")
        for s, cell in zip([0.25, 1.0, 4.0], row[-3:]):
            params, macs = re.fullmatch(r"\s*([\d,]+) / ([\d.]+)M\s*", cell).groups()
            total = check_file(spec(name), {"s": s}).total()
            assert (int(params.replace(",", "")), macs) == (total.params, f"{total.macs / 1e6:.2f}"), (name, s)


def test_cli_check_sets_s(capsys):
    assert main(["check", str(spec("fasternet")), "--set", "s=0.25", "--json"]) == 0
    assert '"s": 0.25' in capsys.readouterr().out
    assert main(["check", str(spec("mobilenetv2")), "--set", "s=4", "--input", "3x32x32"]) == 0


@pytest.mark.parametrize("block", sorted(p.name for p in (BASELINES / "blocks").glob("*.arch")))
def test_blocks_are_verbatim_copies(block):
    original = ROOT / "examples" / "blocks" / block
    assert (BASELINES / "blocks" / block).read_bytes() == original.read_bytes(), \
        f"examples/baselines/blocks/{block} differs from examples/blocks/{block}: copy it again"


# ---------------------------------------------------------------- the Fashion-MNIST space


def _sample(n: int, seed: int = 0) -> tuple[list[Candidate], list]:
    space = SearchSpace(SPACE)
    rng = random.Random(seed)
    found, rejected = [], []
    while len(found) < n:
        got = space.resolve(lambda cp: cp.sample(rng))
        (found if isinstance(got, Candidate) else rejected).append(got)
        assert len(rejected) <= n, [r.first for r in rejected]
    return found, rejected


def test_fashion_space_random_points_check_and_run():
    first = check_file(SPACE).total()  # the header's figures
    assert f"{first.params:,} params, {first.macs:,} MACs" in SPACE.read_text(encoding="utf-8")
    found, rejected = _sample(30)
    assert all("must fit inside the kernel" in r.first for r in rejected), [r.first for r in rejected]
    kinds = {c.point[f"stages.{i}.kind"] for c in found for i in range(3)}
    attns = {c.point[f"stages.{i}.attn"] for c in found for i in range(3)}
    assert kinds == {"dwconv", "inception", "pconv", "conv", "basic"} and attns == {"off", "eca", "se"}
    x = torch.randn(1, 1, 28, 28)
    for c in found:
        assert c.graph.output_shape.c == 10
        model = build_module(c.graph).eval()
        assert sum(p.numel() for p in model.parameters()) == c.graph.total().params
        with torch.no_grad():
            y = model(x)
        assert y.shape == (1, 10) and torch.isfinite(y).all(), c.point
    for i, c in enumerate(found[:4]):
        assert_deploy_matches(c.graph, (1, 28, 28), seed=i)


def test_fashion_space_latency_table_sampler():
    """archdsl.bench.table.sample_space (how a latency table samples a space: points passed as overrides) draws the
    space too: no choice value is misread (a string "none" would read as the constant none)."""
    points, rejected = sample_space(SPACE, 8, seed=3)
    assert len(points) == 8 and rejected <= 8


def test_fashion_space_every_mixer_deploys():
    """One point per mixer kind (a dilated branch, an Inception split, a partial conv, a dense conv, with SE / ECA),
    deployed."""
    points = [{"stages.0.kind": "dwconv", "stages.0.kernel": 31, "stages.0.dilation": 5, "stages.0.attn": "se",
               "stages.1.kind": "inception", "stages.1.kernel": 11, "stages.1.ratio": 0.0625, "stages.1.attn": "eca",
               "stages.2.kind": "pconv", "stages.2.div": 8, "stages.2.pconv_k": 7, "stages.2.depth": 2,
               "stages.3.kind": "conv", "stages.3.pconv_k": 5},
              # ResNet's basic block, with SE and ECA, layer scale, BatchNorm and LayerNorm
              {"stem": "conv3s1", "layer_scale": 1.0, "stages.0.kind": "basic", "stages.0.pconv_k": 5,
               "stages.0.attn": "se", "stages.0.depth": 2, "stages.1.kind": "basic", "stages.1.attn": "eca",
               "stages.3.kind": "basic"},
              {"norm": "ln", "stages.2.kind": "basic", "stages.2.pconv_k": 7, "stages.2.depth": 2}]
    for p in points:
        g = check_file(SPACE, values=p)
        assert_deploy_matches(g, (1, 28, 28))
        assert "dilated_reparam" not in [n.op for n in deploy_graph(g)[0].nodes()]


def test_fashion_space_init_choice():
    """The space's `init` choice point reaches the built model: truncated normal std 0.02, or kaiming (fan_out,
    ReLU gain: std sqrt(2 / (C_out * k * k)))."""
    point = {"stem": "conv3s1", "stages.0.kind": "basic", "stages.0.width": 48}
    for scheme, want in (("trunc_normal", 0.02), ("kaiming", (2.0 / (48 * 9)) ** 0.5)):
        torch.manual_seed(0)
        model = build_module(check_file(SPACE, values={**point, "init": scheme}))
        w = [p for p in model.parameters() if p.dim() == 4 and tuple(p.shape[:2]) == (48, 48)][0]  # 48x48x3x3
        assert 0.9 < w.std().item() / want < 1.1, (scheme, w.std().item(), want)
