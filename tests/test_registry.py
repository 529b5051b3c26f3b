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


@pytest.mark.parametrize("name,i,params,ins", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_what_an_op_declares_for_deploy_and_source_holds(name, i, params, ins):
    """Op.training_only: the built module is the identity in eval mode. Op.source: the inline expression computes
    what the built module does (it is what `archdsl compile` writes). Op.conv_view: convview reads its weights
    back into a convolution that computes the same."""
    import torch.nn.functional as F  # noqa: F401 - the source expressions use F

    from archdsl.ir import Node
    from archdsl.ops import convview as cv

    op = registry.get(name)
    p = op.Params(**params)
    module = op.build(p, ins).double().eval()
    xs = [_as_tensor(s).detach() for s in ins]
    with torch.no_grad():
        y = module(*xs)
    if op.training_only:
        assert len(xs) == 1 and torch.equal(y, xs[0])
    expr = op.source(p, ins, [f"a{k}" for k in range(len(xs))])
    if expr is not None:
        got = eval(expr, {"torch": torch, "F": F, **{f"a{k}": x for k, x in enumerate(xs)}})  # noqa: S307
        for a, b in zip(got if isinstance(got, tuple) else (got,), y if isinstance(y, tuple) else (y,)):
            assert torch.equal(a, b), expr
    if op.conv_view:
        weights = {k: v.detach() for k, v in module.state_dict().items()}
        v = cv.view(Node(name, name, p, None), ins[0], weights)
        assert v is not None
        new_op, new_params, new_weights = cv.to_node(v, ins[0])
        rebuilt = registry.get(new_op)
        m2 = rebuilt.build(rebuilt.Params(**new_params), ins).double().eval()
        m2.load_state_dict(new_weights)
        with torch.no_grad():
            assert torch.allclose(m2(*xs), y, rtol=1e-12, atol=1e-12)


def test_the_deploy_declarations_name_the_ops_they_did_as_tables():
    """What passes/deploy.py and codegen/source.py once kept as tables of op names is declared on the ops."""
    ops = registry.all_ops()
    assert {n for n, op in ops.items() if op.training_only} == {"drop_path", "dropout", "identity"}
    assert {n for n, op in ops.items() if op.conv_view} == {"conv", "dwconv", "linear"}
    assert {n for n, op in ops.items() if op.reparam is not None} >= {"dilated_reparam", "repconv", "dcls"}
    inline = {n for n, op in ops.items() if op.samples and op.source(op.Params(**op.samples[0][0]),
                                                                      op.samples[0][1], ["a", "b"]) is not None}
    assert {"add", "mul", "concat", "split", "nhwc", "nchw", "relu", "gelu", "identity"} <= inline


def _bad_values(ann) -> list:
    """Values of a parameter's type that no op should take: a non-finite float, a negative size, an unknown
    literal; none for booleans (their type is the whole domain)."""
    import typing

    text = str(ann)
    if ann is bool:
        return []
    if typing.get_origin(ann) is typing.Literal:
        return ["not-a-value"]
    out = []
    if "float" in text:
        out += [float("nan"), float("inf")]
    if "int" in text and "tuple" not in text:
        out.append(-7)
    if "tuple" in text:
        out.append((-7,) if "int" in text else (float("nan"),))
    return out


OP_FIELDS = [(name, field) for name, op in registry.all_ops().items() if op.samples
             for field in op.Params.model_fields]


@pytest.mark.parametrize("name,field", OP_FIELDS, ids=[f"{n}.{f}" for n, f in OP_FIELDS])
def test_every_op_refuses_a_bad_value_of_each_parameter(name, field):
    """Issue 21: a value outside a parameter's domain (bn(eps=-1.0), a NaN, a negative size, a literal it does not
    know) is refused when the spec is checked, with the argument named; never accepted to fail at the first
    forward pass or to output NaN."""
    from pydantic import ValidationError

    op = registry.get(name)
    params, ins = op.samples[0]
    ann = op.Params.model_fields[field].annotation
    for bad in _bad_values(ann):
        try:
            p = op.Params(**{**params, field: bad})
        except ValidationError:
            continue  # refused by its type (a literal it does not know)
        with pytest.raises(registry.OpError) as e:  # in the checker's order
            registry.check_finite(p)
            op.infer(p, ins)
            registry.check_domain(p)
        assert e.value.arg in (field, None) or field in e.value.message, (field, bad, e.value.message)


def test_a_norm_with_a_negative_eps_is_refused_at_its_argument():
    from archdsl.api import ArchError, check_text

    for op in ("bn", "layernorm", "grn"):
        spec = (f"model m() {{\n    input(8, 4, 4)\n    n: {op}(eps=-1.0)\n"
                "    head: { pool: gap(); fc: linear(2) }\n}\n")
        with pytest.raises(ArchError, match=rf"<string>:3:\d+: error: {op}: eps must be positive, got -1.0"):
            check_text(spec)
