"""Test helper: `archdsl compile` run as a user runs it, in both forms, and the emitted modules imported and run.

Takes: a concrete .arch file (every choice fixed), optional --set overrides and an input shape. Checks:
  - `archdsl compile FILE -o train.py` exits 0; train.py, given the state_dict of the archdsl-built model (random
    weights and BatchNorm statistics), computes bit-identical outputs;
  - `archdsl compile FILE --deploy --weights ckpt.pt -o deploy.py` (ckpt.pt: that training-form state_dict) exits
    0; deploy.py with the converted deploy.pt computes what archdsl.deploy(model) computes, bit for bit, and what
    the training form computes, up to float rounding.
Used by test_compile_all.py (bundled and docs examples) and test_search.py (the top-k files a search writes).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

import archdsl
from archdsl.api import check_file
from archdsl.cli import main
from archdsl.codegen.module import build_module
from archdsl.interp import fmt


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"compiled_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _randomized(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Eval mode with random BN statistics and affine parameters, layer scales and GRN gammas (their initial values,
    e.g. 1e-6, would hide a wrong layer); conv and linear weights keep their initialisation."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, mean: float, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=g) * std + mean

    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(rand(mod.running_mean, 0, 0.2))
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
                if mod.affine:
                    mod.weight.copy_(rand(mod.weight, 1, 0.2))
                    mod.bias.copy_(rand(mod.bias, 0, 0.2))
        for name, p in m.named_parameters():
            if name.endswith(("gamma", "beta")):
                p.copy_(rand(p, 0, 0.5))
    return m.eval()


def assert_compiles_and_runs(path: str | Path, work: Path, overrides: dict[str, Any] | None = None,
                             input_shape: tuple[int, int, int] | None = None) -> None:
    path = Path(path)
    work.mkdir(parents=True, exist_ok=True)
    args = [f"--set={k}={fmt(v)}" for k, v in (overrides or {}).items()]
    if input_shape:
        args.append("--input={}x{}x{}".format(*input_shape))
    g = check_file(path, overrides, input_shape=input_shape)
    ref = _randomized(build_module(g))
    s = g.input_shape
    x = torch.randn(2, s.c, s.h, s.w, generator=torch.Generator().manual_seed(1))

    train_py = work / f"{path.stem}_train.py"
    assert main(["compile", str(path), "-o", str(train_py), *args]) == 0, f"archdsl compile {path} failed"
    model = _import(train_py).model().eval()
    model.load_state_dict(ref.state_dict())  # strict: the same names and shapes
    with torch.no_grad():
        want = ref(x)
        assert torch.equal(model(x), want), f"{train_py} computes something else than the archdsl-built model"

    ckpt = work / f"{path.stem}_ckpt.pt"
    torch.save(ref.state_dict(), ckpt)
    deploy_py = work / f"{path.stem}_deploy.py"
    rc = main(["compile", str(path), "--deploy", "--weights", str(ckpt), "-o", str(deploy_py), *args])
    assert rc == 0, f"archdsl compile --deploy --weights {path} failed"
    dmodel = _import(deploy_py).model().eval()
    dmodel.load_state_dict(torch.load(deploy_py.with_suffix(".pt"), weights_only=True))
    with torch.no_grad():
        got = dmodel(x)
        assert torch.equal(got, archdsl.deploy(ref)(x)), f"{deploy_py} differs from archdsl.deploy"
        err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
        assert err < 1e-4, f"{deploy_py}: the deploy form is {err:.2g} (relative) off the training form"
