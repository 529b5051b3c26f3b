"""Tests for examples/*.arch: exact parameter counts, MACs and output shapes of real architectures, and
the search space in examples/search/.

Exact counts are the published ones (shared/reference/published.md: timm 1.0.31 and the authors' code).
Published MACs are compared at the precision they are printed. Our MACs count conv / linear / SE / ECA
multiply-accumulates only; where a published figure counts more (or is rounded oddly) the test says so
and checks the figure under the convention that produced it.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from archdsl.api import check_file
from archdsl.errors import ArchError
from archdsl.interp import fmt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SEARCH_SPACE = "search/convnext_space.arch"


@functools.lru_cache(maxsize=None)
def _check(name: str, overrides: tuple = ()):
    return check_file(EXAMPLES / name, overrides=dict(overrides))


def _frozen(v):
    return tuple(_frozen(x) for x in v) if isinstance(v, (list, tuple)) else v


def check(name: str, **overrides):
    """The checked graph of examples/<name> (cached: several tests read the same model)."""
    return _check(name, tuple(sorted((k, _frozen(v)) for k, v in overrides.items())))


# (file, overrides, exact params, exact MACs). Params are the published exact counts; MACs are ours
# (conv/linear/SE MACs; for the InceptionNeXt models equal to fvcore's conv + linear counts).
EXACT = [
    ("convnext_tiny.arch", {}, 28_589_128, 4_455_531_264),
    ("convnext_tiny.arch", {"kernel": 31}, 34_630_216, 6_411_793_152),
    ("convnext_atto.arch", {}, 3_695_520, 547_332_480),
    ("inceptionnext_tiny.arch", {}, 28_055_680, 4_188_634_272),
    ("inceptionnext_atto.arch", {}, 4_156_520, 503_035_040),
    ("inceptionnext_atto.arch", {"generic_mixer": True}, 4_156_520, 503_035_040),  # split form, same layer
    ("unireplknet_a.arch", {}, 4_649_060, 674_684_480),
    ("unireplknet_a.arch", {"deploy": True}, 4_437_300, 639_843_520),
    ("unireplknet_t.arch", {}, 31_693_420, 5_003_516_800),
    ("unireplknet_t.arch", {"deploy": True}, 31_037_980, 4_898_993_920),
    ("replknet_31b.arch", {}, 79_864_168, 15_431_298_048),
    ("replknet_31b.arch", {"small_kernel_merged": True}, 79_527_272, 15_353_525_248),
    # issue 22: the rest of the literature (sources in each file's header)
    ("literature/hornet_tiny.arch", {}, 22_409_512, 3_968_389_312),          # raoyongming/HorNet hornet_tiny_7x7
    ("literature/fasternet_t0.arch", {}, 3_905_500, 335_422_720),            # timm fasternet_t0
    ("literature/fasternet_t0.arch", {"embed_dim": 96, "act": "relu"}, 14_982_888, 1_904_334_848),  # T2
    ("literature/regnet.arch", {}, 4_344_144, 401_842_848),                  # torchvision regnet_y_400mf
    ("literature/regnet.arch", {"depth": 22, "w0": 24, "wa": 24.48, "wm": 2.54, "group_w": 16, "se": False},
     5_157_512, 397_677_568),                                       # RegNetX-400MF (pycls / timm regnetx_004: 5.2M)
    ("literature/vgg16.arch", {}, 138_357_544, 15_470_264_320),               # torchvision vgg16
    ("literature/vgg16.arch", {"batch_norm": True}, 138_365_992, 15_470_264_320),  # torchvision vgg16_bn
    ("literature/eca_resnet50.arch", {}, 25_557_112, 4_089_270_528),         # ECANet eca_resnet50 k3557
    ("literature/van_b0.arch", {}, 4_105_800, 864_224_000),                  # VAN-Classification van_b0 (4.1M, 0.9G)
    ("literature/inception_v3.arch", {}, 23_834_568, 5_713_216_096),        # torchvision / timm inception_v3
    ("literature/gfnet.arch", {}, 15_985_768, 2_834_783_232),               # GFNet-XS (16M, 2.8G)
    ("literature/gfnet.arch", {"embed_dim": 256}, 7_511_784, 1_273_292_800),  # GFNet-Ti (7M, 1.3G)
    ("literature/gfnet.arch", {"depth": 19}, 24_869_608, 4_454_464_512),    # GFNet-S (25M, 4.5G)
    ("literature/rednet.arch", {}, 15_540_806, 2_648_505_856),              # RedNet-50 (mmcls zoo 15.54M)
    ("literature/rednet.arch", {"layers": [1, 2, 4, 1]}, 9_233_166, 1_685_176_832),   # RedNet-26 (9.23M)
    ("literature/rednet.arch", {"layers": [2, 3, 5, 2]}, 12_386_986, 2_166_841_344),  # RedNet-38 (12.39M)
    ("literature/lsnet_t.arch", {}, 11_409_832, 315_824_768),              # LSNet-T (11.4M, 0.3G)
    ("literature/lsnet_t.arch", {"dims": [96, 192, 320, 448], "depths": [1, 2, 8, 10]}, 16_146_304,
     537_972_800),                                                          # LSNet-S (16.1M, 0.5G)
    ("literature/convnext_dcls.arch", {}, 28_587_688, 4_970_337_024),      # ConvNeXt-T-dcls (28.6M)
    ("literature/ffc_resnet50.arch", {}, 26_102_744, 4_178_741_248),       # FFC-ResNet-50 (pkumivision/FFC 26.1M)
    ("literature/ffc_resnet50.arch", {"ratio": 0.5}, 27_717_512, 4_447_412_224),  # main.py's default ratio
    ("literature/ffc_resnet50.arch", {"lfu": True}, 26_721_784, 4_209_413_120),  # FFC-ResNet-50 +LFU (26.7M)
]


def _id(case) -> str:
    name, overrides = case[0], case[1]
    return name.removesuffix(".arch") + "".join(f"[{k}={fmt(v)}]" for k, v in overrides.items())


@pytest.mark.parametrize("case", EXACT, ids=_id)
def test_exact_params_and_macs(case):
    name, overrides, params, macs = case
    g = check(name, **overrides)
    total = g.total()
    assert total.params == params
    assert total.macs == macs
    assert g.output_shape.to_json() == [1000]


# Published MACs as printed (published.md; convnext_atto's 0.55G is from the InceptionNeXt README).
# UniRepLKNet and RepLKNet report their deployed (re-parameterized) form.
PUBLISHED_MACS = [
    ("convnext_tiny.arch", {}, "4.5"),
    ("convnext_atto.arch", {}, "0.55"),
    ("inceptionnext_tiny.arch", {}, "4.2"),
    ("unireplknet_a.arch", {"deploy": True}, "0.6"),
    ("unireplknet_t.arch", {"deploy": True}, "4.9"),
]


def _as_printed(value: float, printed: str) -> str:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return f"{value:.{decimals}f}"


@pytest.mark.parametrize("case", PUBLISHED_MACS, ids=_id)
def test_published_macs(case):
    name, overrides, printed = case
    assert _as_printed(check(name, **overrides).total().macs / 1e9, printed) == printed


# The rest of the UniRepLKNet family from the same spec (published.md: deployed params and MACs).
UNIREPLKNET_FAMILY = [
    ("F", {"dims": [48, 96, 192, 384]}, "6.2", "0.9"),
    ("P", {"dims": [64, 128, 256, 512]}, "10.7", "1.6"),
    ("N", {"depths": [2, 2, 8, 2], "dims": [80, 160, 320, 640],
           "kernel_sizes": [[3, 3], [13, 13], [13] * 8, [13, 13]]}, "18.3", "2.8"),
]


@pytest.mark.parametrize("label, overrides, printed_params_m, printed_macs", UNIREPLKNET_FAMILY,
                         ids=[c[0] for c in UNIREPLKNET_FAMILY])
def test_unireplknet_family_published(label, overrides, printed_params_m, printed_macs):
    total = check("unireplknet_a.arch", deploy=True, **overrides).total()
    assert _as_printed(total.params / 1e6, printed_params_m) == printed_params_m
    assert _as_printed(total.macs / 1e9, printed_macs) == printed_macs


def _norm_elements(g) -> int:
    """Elements normalized by BatchNorm / LayerNorm nodes (per sample)."""
    return sum(g.attrs(n.name)["shape"].numel() for n in g.nodes() if n.op in ("bn", "layernorm"))


@pytest.mark.parametrize("name, fvcore_total, printed", [
    ("inceptionnext_atto.arch", 507_743_840, "0.51"),
    ("inceptionnext_tiny.arch", 4_203_510_432, "4.2"),
])
def test_inceptionnext_published_macs_count_norms(name, fvcore_total, printed):
    """The InceptionNeXt README's MACs are fvcore's count on a model left in training mode, which adds
    5 per BatchNorm / LayerNorm element to the conv and linear MACs. For atto that decides the printed
    digit: 503.0M conv + linear MACs (prints 0.50G) + 4.7M norm "flops" = 507.7M (prints 0.51G).
    fvcore_total is what fvcore 0.1.5 reports for the authors' model (measured once, by hand)."""
    g = check(name)
    total = g.total().macs + 5 * _norm_elements(g)
    assert total == fvcore_total
    assert _as_printed(total / 1e9, printed) == printed


# RepLKNet-pytorch README: deployed (small kernels merged) FLOPs and params of the RepLKNet family. The
# same spec reproduces them with overrides; the training form would not (45.3G, 96.3G at 384).
REPLKNET_FAMILY = [
    ("31B@384", 384, {}, "45.1", None),
    ("31L@384", 384, {"channels": [192, 384, 768, 1536]}, "96.0", 172),
    ("XL@320", 320, {"channels": [256, 512, 1024, 2048], "large_kernels": [27, 27, 27, 13], "dw_ratio": 1.5},
     "128.7", 335),
]


@pytest.mark.parametrize("label, res, overrides, printed_macs, params_m", REPLKNET_FAMILY,
                         ids=[c[0] for c in REPLKNET_FAMILY])
def test_replknet_family_published(label, res, overrides, printed_macs, params_m):
    total = check("replknet_31b.arch", res=res, small_kernel_merged=True, **overrides).total()
    assert _as_printed(total.macs / 1e9, printed_macs) == printed_macs
    if params_m is not None:
        assert round(total.params / 1e6) == params_m


def test_replknet_31b_224_published_figures_are_truncated():
    """The 224x224 RepLKNet-31B row prints 79M params and 15.3G FLOPs. Exact: 79.53M / 15.354G deployed
    (79.86M / 15.43G in training form), so that row truncates (rounding would print 80M / 15.4G);
    the other rows (test_replknet_family_published) agree by rounding."""
    total = check("replknet_31b.arch", small_kernel_merged=True).total()
    assert math.floor(total.params / 1e6) == 79
    assert math.floor(total.macs / 1e8) / 10 == 15.3
    assert math.floor(check("replknet_31b.arch").total().params / 1e6) == 79


def test_convnext_drop_path_schedule():
    """timm: torch.linspace(0, drop_path_rate, sum(depths)) over all blocks; the first block has none."""
    g = check("convnext_tiny.arch", drop_path=0.1)
    rates = [n.params.p for n in g.nodes() if n.op == "drop_path"]
    assert len(rates) == 17  # 18 blocks, rate 0 for the first
    assert rates[0] == pytest.approx(0.1 / 17) and rates[-1] == pytest.approx(0.1)
    assert g.total().params == 28_589_128


def test_unireplknet_t_kernel_pattern():
    g = check("unireplknet_t.arch")
    stage2 = [g.node(f"stages.2.blocks.{j}.mixer") for j in range(18)]
    assert [(n.op, n.params.k) for n in stage2] == [("dilated_reparam", 13), ("dwconv", 3)] * 9
    assert g.node("stages.0.blocks.2.mixer").op == "dwconv"
    assert g.node("stages.3.blocks.2.mixer").op == "dilated_reparam"
    # kernel_sizes is a list of lists; Python overrides may give it as nested Python lists
    same = check_file(EXAMPLES / "unireplknet_t.arch",
                      overrides={"kernel_sizes": [[3, 3, 3], [13, 13, 13], [13, 3] * 9, [13, 13, 13]]})
    assert same.total() == g.total()


# ---------------------------------------------------------------- search space

SEARCH_CHOICES = {
    "scale.depth_exp": [1.0, 2.0, 4.0],
    "scale.width_exp": [8.0, 4.0, 2.0],
    "scale.resolution_exp": [1.0, 0.0, 2.0],
    **{f"stages.{i}.{what}": values for i in range(4) for what, values in [
        ("kind", ["dwconv", "inception"]),
        ("kernel", [3, 5, 7, 9, 11, 13]),
        ("dilation", [0, 1, 2, 3]),
        ("ratio", [0.0625, 0.125, 0.25]),
    ]},
}


def test_search_space_checks_and_reports_its_choices():
    g = check(SEARCH_SPACE)
    assert {c.name: c.domain() for c in g.choices} == {
        k: {"type": "choice", "values": v} for k, v in SEARCH_CHOICES.items()}
    assert all(c.source == "first" for c in g.choices)
    # scaling comes first and rescales the base model: flops_scale 2 with exponents d1_w8_r1
    assert g.params["dims"] == (40, 88, 168, 336) and g.params["depths"] == (2, 2, 4, 2)
    assert g.input_shape.to_json() == [3, 68, 68]
    assert g.output_shape.to_json() == [10]
    assert g.total().params == 3_194_082


def test_search_space_choices_change_the_model():
    overrides = {"stages.3.kind": '"inception"', "stages.3.kernel": 11, "stages.3.ratio": 0.25,
                 "stages.1.kernel": 7, "stages.1.dilation": 3, "scale.width_exp": 2.0}
    g = check(SEARCH_SPACE, **overrides)
    assert g.node("stages.3.blocks.0.mixer").op == "inception_dw"
    assert g.node("stages.3.blocks.0.mixer").params.band == 11
    mixer = g.node("stages.1.blocks.0.mixer")
    assert (mixer.op, mixer.params.k, mixer.params.dilations) == ("dilated_reparam", 7, (3,))
    assert {c.name: c.source for c in g.choices}["scale.width_exp"] == "override"
    assert g.params["depths"] != (2, 2, 4, 2)  # depth now gets more of the budget


def test_search_space_rejects_a_dilation_that_does_not_fit_its_kernel():
    with pytest.raises(ArchError) as err:
        check(SEARCH_SPACE, **{"stages.2.kernel": 3, "stages.2.dilation": 2})
    text = str(err.value)
    assert "convnext_space.arch:" in text and "requirement failed" in text and "fit inside the kernel" in text
