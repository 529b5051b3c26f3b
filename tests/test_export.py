"""Every example exports with torch.export and to ONNX (dynamo exporter), and the exported graphs compute the
same outputs as the eager model (onnxruntime for ONNX)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch

from archdsl.api import check_file
from archdsl.codegen.module import build_module

EXAMPLES = sorted(Path("examples").glob("*.arch"))
# The deep models export one block per stage: every op and block kind of theirs is still in the graph, and export
# time grows with the node count (replknet_31b at full depth: 21 s of the suite's time). The small ones export whole.
SHALLOW = {"convnext_tiny": {"depths": [1, 1, 1, 1]}, "inceptionnext_tiny": {"depths": [1, 1, 1, 1]},
           "unireplknet_t": {"depths": [1, 1, 2, 1], "kernel_sizes": [[3], [13], [13, 3], [13]]},
           "replknet_31b": {"layers": [1, 1, 1, 1]}}


def _model(path):
    m = build_module(check_file(path, SHALLOW.get(path.stem), input_shape=(3, 64, 64))).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    return m


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_torch_export_and_onnx(path, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = _model(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), ref, rtol=1e-5, atol=1e-5)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = torch.onnx.export(ep, (x,), dynamo=True, verbose=False, optimize=False)
    f = tmp_path / "m.onnx"
    onx.save(str(f))
    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), ref, rtol=1e-4, atol=1e-4)


def test_export_keeps_the_batch_dynamic():
    """torch.export with a free batch dimension: the module's per-call memory check must not read the batch size as
    a number while tracing (int() of it fixed the exported batch: an ONNX file took only the example's batch)."""
    import archdsl

    spec = "model m() {\n    input(3, 16, 16)\n    conv(8, k=3)\n    bn()\n    gelu()\n    gap()\n    linear(10)\n}\n"
    for form in ("train", "deploy"):
        m = archdsl.build(spec, form=form).eval()
        ep = torch.export.export(m, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},))
        x = torch.randn(5, 3, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x))
