"""`archdsl compile`: standalone source that imports with torch only and, given the state_dict of the
archdsl-built model, computes bit-identical outputs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archdsl.api import check_file
from archdsl.codegen.module import build_module
from archdsl.codegen.source import emit_source

EXAMPLES = sorted(Path("examples").glob("*.arch"))


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _randomize_bn(m):
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_compiled_source_is_bit_identical(path, tmp_path):
    g = check_file(path, input_shape=(3, 64, 64))
    ref = build_module(g)
    _randomize_bn(ref)
    ref.eval()
    out = tmp_path / f"{path.stem}_gen.py"
    out.write_text(emit_source(g))
    mod = _import(out)
    model = mod.model()
    model.load_state_dict(ref.state_dict())  # strict: same names, same shapes
    model.eval()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_compiled_source_depends_on_torch_only(tmp_path):
    out = tmp_path / "m.py"
    r = subprocess.run([sys.executable, "-m", "archdsl", "compile", "examples/unireplknet_a.arch", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "archdsl" not in "\n".join(line for line in text.splitlines() if line.startswith(("import", "from")))
    # importable in a process where archdsl cannot be imported
    code = ("import sys; sys.modules['archdsl'] = None; import importlib.util as u; "
            f"s = u.spec_from_file_location('m', {str(out)!r}); m = u.module_from_spec(s); s.loader.exec_module(m); "
            "import torch; print(m.model()(torch.randn(1, 3, 64, 64)).shape)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "torch.Size([1, 1000])" in r.stdout


def test_same_seed_same_initial_weights(tmp_path):
    """The compiled model builds its layers in the same order and applies the spec's init(...) the same way."""
    g = check_file("examples/convnext_atto.arch", input_shape=(3, 32, 32))
    assert g.init == {"scheme": "trunc_normal", "std": 0.02, "head_scale": 1.0}
    out = tmp_path / "atto_gen.py"
    out.write_text(emit_source(g))
    mod = _import(out)
    torch.manual_seed(123)
    a = build_module(g).state_dict()
    torch.manual_seed(123)
    b = mod.model().state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    w = a["stages.2.blocks.0.mlp.fc1.weight"]
    assert abs(w.std().item() - 0.02) < 0.002 and w.abs().max() <= 2.0


def test_an_identity_branch_keeps_its_value_while_the_other_branch_runs(tmp_path):
    """The language reference's gating pattern, parallel(merge="mul") { identity(); {...} }: the identity's value
    (the block's input, by name) must outlive the other branch's chain. (Found by VAN-B0's large kernel attention:
    the chain reused the input's name and the gate multiplied the chain by itself.)"""
    from archdsl.api import check_text

    g = check_text("block gate(c: int) {\n    g: parallel(merge=\"mul\") {\n        identity();\n"
                   "        { conv(c, k=3); conv(c, k=1); sigmoid() }\n    }\n}\n"
                   "model m() {\n    input(4, 8, 8)\n    a: gate(4)\n    gap()\n}\n", "gate.arch")
    ref = build_module(g).eval()
    out = tmp_path / "gate_gen.py"
    out.write_text(emit_source(g))
    model = _import(out).model()
    model.load_state_dict(ref.state_dict())
    model.eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
