"""`archdsl compile`, training and deploy form (with --weights), of every concrete spec the project ships: the
bundled examples (examples/**/*.arch) and the docs' (docs/examples, docs/tutorial); each emitted module imported
and run against the archdsl-built model (tests/compile_check.py). The top-k files of real searches are compiled
the same way in test_search.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from compile_check import assert_compiles_and_runs

from archdsl.api import check_file, require_resolved
from archdsl.errors import ArchError

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p.relative_to(ROOT).as_posix() for pattern in ("examples/**/*.arch", "docs/examples/*.arch",
                                                              "docs/tutorial/*.arch") for p in ROOT.glob(pattern))
# The files that are not one concrete model, and why; test_every_spec_is_compiled_or_listed keeps this honest.
NOT_CONCRETE = {
    "examples/baselines/blocks/convnext.arch": "defines no model",
    "examples/baselines/blocks/inceptionnext.arch": "defines no model",
    "examples/baselines/blocks/unireplknet.arch": "defines no model",
    "examples/blocks/convnext.arch": "defines no model",
    # --start files: fix lines naming choice points of examples/search/fashion_space.arch
    "examples/search/starts/fashion_resnet_medium.arch": "defines no model",
    "examples/search/starts/fashion_resnet_small.arch": "defines no model",
    "examples/blocks/inceptionnext.arch": "defines no model",
    "examples/blocks/unireplknet.arch": "defines no model",
    "examples/search/convnext_space.arch": "open choice",
    "examples/search/fashion_space.arch": "open choice",
    "examples/search/tiny_space.arch": "open choice",
    "docs/tutorial/convnext_mini_space.arch": "open choice",
    "docs/tutorial/mistake.arch": "input shapes differ",  # the tutorial's deliberate mistake
}
CONCRETE = [s for s in SPECS if s not in NOT_CONCRETE]
# As in test_export.py: the deep models at one block per stage and 64x64 inputs (every op and block kind is still
# there; compile and run time grow with depth and resolution).
SHALLOW = {"examples/convnext_tiny.arch": {"depths": [1, 1, 1, 1]},
           "examples/inceptionnext_tiny.arch": {"depths": [1, 1, 1, 1]},
           "examples/unireplknet_t.arch": {"depths": [1, 1, 2, 1], "kernel_sizes": [[3], [13], [13, 3], [13]]},
           "examples/replknet_31b.arch": {"layers": [1, 1, 1, 1]},
           "docs/examples/resnet50.arch": {"layers": [1, 1, 1, 1]},
           "examples/literature/eca_resnet50.arch": {"layers": [1, 1, 1, 1]},
           "examples/literature/hornet_tiny.arch": {"depths": [1, 1, 1, 1]},
           "examples/literature/vgg16.arch": {"groups": [[16], [16, 16]]},
           "examples/literature/van_b0.arch": {"depths": [1, 1, 1, 1]},
           "examples/literature/fasternet_t0.arch": {"depths": [1, 1, 1, 1]},
           "examples/literature/regnet.arch": {"depth": 6},
           "examples/literature/rednet.arch": {"layers": [1, 1, 1, 1]},
           "examples/literature/lsnet_t.arch": {"depths": [0, 2, 2, 2]},
           "examples/literature/convnext_dcls.arch": {"depths": [2, 1, 1, 1], "size": 7, "kernel_count": 5}}
# ImageNet models whose strides need more than 64x64 (Inception-v3's grid reductions end at 1x1 from 75x75)
SMALLEST = {"examples/literature/inception_v3.arch": (3, 75, 75)}


def test_every_spec_is_compiled_or_listed():
    """A spec that stops checking, or a new one, is noticed: each listed file fails to be a concrete model for the
    reason given, every other one is."""
    for spec in SPECS:
        try:
            require_resolved(check_file(ROOT / spec))
            problem = None
        except ArchError as e:
            problem = str(e)
        if spec in NOT_CONCRETE:
            assert problem is not None and NOT_CONCRETE[spec] in problem, (spec, problem)
        else:
            assert problem is None, problem
    assert len(CONCRETE) >= 11


@pytest.mark.parametrize("spec", CONCRETE)
def test_compile_both_forms_and_run(spec, tmp_path):
    imagenet = spec.startswith(("examples/", "docs/examples/"))  # 3x224x224 specs, run at 3x64x64
    assert_compiles_and_runs(ROOT / spec, tmp_path, SHALLOW.get(spec),
                             SMALLEST.get(spec, (3, 64, 64)) if imagenet else None)


def test_single_layer_blocks(tmp_path):
    """A block whose body is one layer is that layer (node and parameters named after the call): nothing inside it
    to make a class of. Top level, nested, one left empty by the deploy passes (a lone BN folded backwards)."""
    spec = tmp_path / "single.arch"
    spec.write_text(
        "block m(c: int) {\n    conv(c, k=3)\n}\n\n"
        "block lone_bn() {\n    bn()\n}\n\n"
        "block pair(c: int) {\n    a: m(c)\n    b: m(c)\n    relu()\n}\n\n"
        "block wrap(c: int) {\n    pair(c)\n}\n\n"
        "model net() {\n    input(3, 16, 16)\n    stem: m(8)\n    norm: lone_bn()\n    p: pair(16)\n"
        "    q: pair(16)\n    w: wrap(8)\n    gap()\n    linear(10)\n}\n")
    assert_compiles_and_runs(spec, tmp_path / "out")
