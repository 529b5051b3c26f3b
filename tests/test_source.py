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
