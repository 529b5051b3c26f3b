"""Training-form codegen: every example builds; its parameter count equals the checker's; it runs and
gives (N, 1000) logits; module names come from the spec; a failing node is named with its source line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archdsl.api import check_file, check_text
from archdsl.codegen.module import InputError, NodeError, build_module

EXAMPLES = sorted(p for p in Path("examples").glob("*.arch"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_builds_with_exact_params(path):
    g = check_file(path)
    m = build_module(g)
    assert sum(p.numel() for p in m.parameters()) == g.total().params
    # a reduced input keeps the test fast; shapes must still follow the checker's inference
    small = check_file(path, input_shape=(3, 64, 64))
    m = build_module(small).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    assert tuple(y.shape) == small.output_shape.torch_shape(2)


def test_names_follow_the_spec_and_are_stable():
    a = [n for n, _ in build_module(check_file("examples/convnext_tiny.arch")).named_parameters()]
    b = [n for n, _ in build_module(check_file("examples/convnext_tiny.arch")).named_parameters()]
    assert a == b
    assert "stages.2.blocks.5.conv_dw.weight" in a
    assert a[0].startswith("stem.") and a[-1].startswith("head.")


def test_full_resolution_logits():
    g = check_file("examples/convnext_atto.arch")
    with torch.no_grad():
        y = build_module(g).eval()(torch.randn(1, 3, 224, 224))
    assert tuple(y.shape) == (1, 1000)


def test_runtime_failure_names_node_and_line():
    g = check_text("model m() {\n  input(3, 16, 16)\n  body: conv(8, k=3, pad=0)\n  gap()\n}\n", "rt.arch")
    m = build_module(g).eval()
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\)"):
        m(torch.randn(1, 4, 16, 16))
    with pytest.raises(InputError, match=r"(?s)cannot take a 2x2 input.*rt.arch:3:17: error: conv: kernel 3x3"):
        m(torch.randn(1, 3, 2, 2))  # too small for an unpadded 3x3 kernel: found at the boundary, positioned
    m(torch.randn(1, 3, 5, 7))  # another size every layer can take
    with pytest.raises(NodeError, match=r"rt.arch:3:9: node 'body' \(conv\)"):
        m(torch.randn(1, 3, 16, 16, dtype=torch.float64))  # fails inside the layer (dtype): named there


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_gives_1000_logits_at_224(path):
    g = check_file(path)
    assert g.input_shape.to_json() == [3, 224, 224]
    with torch.no_grad():
        y = build_module(g).eval()(torch.randn(1, 3, 224, 224))
    assert tuple(y.shape) == (1, 1000) and torch.isfinite(y).all()


def test_containers_index_like_the_compiled_source():
    m = build_module(check_file("examples/convnext_atto.arch"))
    assert m.stages[2].blocks[5] is m.get_submodule("stages.2.blocks.5")
    with pytest.raises(KeyError):
        m.stages[9]
