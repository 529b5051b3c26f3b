"""Every registered op, on every one of its samples: the inferred shape equals the real PyTorch output shape,
the counted parameters equal sum(p.numel()), forward and backward run, and gradients are finite."""

from __future__ import annotations

import pytest
import torch

from archdsl.ops import registry
from archdsl.shapes import Shape

torch.manual_seed(0)

CASES = [(name, i, params, ins) for name, op in registry.all_ops().items()
         for i, (params, ins) in enumerate(op.samples)]


def test_every_user_op_has_samples():
    missing = [n for n, op in registry.all_ops().items() if op.user and not op.samples]
    assert not missing, f"ops without test samples: {missing}"


def test_duplicate_registration_raises():
    op = next(iter(registry.all_ops().values()))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(type(op))


def _as_tensor(s: Shape, batch: int = 2) -> torch.Tensor:
    return torch.randn(*s.torch_shape(batch), dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("name,i,params,ins", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_op_sample(name, i, params, ins):
    op = registry.get(name)
    p = op.Params(**params)
    out = op.infer(p, ins)
    outs = out if isinstance(out, tuple) else (out,)
    module = op.build(p, ins).double().train()
    cost = op.cost(p, ins, outs[0])
    assert cost.params == sum(t.numel() for t in module.parameters()), "counted params != sum(p.numel())"
    xs = [_as_tensor(s) for s in ins]
    y = module(*xs)
    ys = y if isinstance(y, tuple) else (y,)
    assert [tuple(t.shape) for t in ys] == [s.torch_shape(2) for s in outs], "inferred shape != real shape"
    loss = sum((t.float() ** 2).sum() for t in ys)
    loss.backward()
    for t in [*xs, *module.parameters()]:
        if t.grad is not None:
            assert torch.isfinite(t.grad).all()
    module.eval()
    with torch.no_grad():
        y2 = module(*[x.detach() for x in xs])
    for t in (y2 if isinstance(y2, tuple) else (y2,)):
        assert torch.isfinite(t).all()
