"""Stage 5b (source emission's values): a built layer as the constructor call that rebuilds it (`ctor_of` ->
`Ctor`), rendered as Python source, with the plain values inside it addressable by path (`_leaves`) so that values
that differ between instances of a block can become constructor arguments (source.py).

Takes: an nn.Module built by archdsl (a recorded archdsl layer, or a torch.nn class the ops build). Returns: a
`Ctor` (class name, positional and keyword arguments, nested Ctors for module arguments).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from torch import nn


class Unsupported(Exception):
    """A graph, layer or value `archdsl compile` cannot write as standalone source (the message says which)."""


# torch.nn classes the ops build, and how to read their constructor arguments back.
_TORCH_CTORS = {
    nn.Conv2d: lambda m: ((m.in_channels, m.out_channels),
                          dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                               groups=m.groups, bias=m.bias is not None)),
    nn.BatchNorm1d: lambda m: ((m.num_features,), dict(eps=m.eps, momentum=m.momentum, affine=m.affine)),
    nn.BatchNorm2d: lambda m: ((m.num_features,), dict(eps=m.eps, momentum=m.momentum, affine=m.affine)),
    nn.GroupNorm: lambda m: ((m.num_groups, m.num_channels), dict(eps=m.eps, affine=m.affine)),
    nn.Dropout: lambda m: ((), dict(p=m.p)),
    nn.Identity: lambda m: ((), {}),
    nn.ReLU: lambda m: ((), {}), nn.ReLU6: lambda m: ((), {}), nn.SiLU: lambda m: ((), {}),
    nn.Hardswish: lambda m: ((), {}), nn.Hardsigmoid: lambda m: ((), {}), nn.Sigmoid: lambda m: ((), {}),
    nn.Tanh: lambda m: ((), {}),
    nn.GELU: lambda m: ((), dict(approximate=m.approximate)),
    nn.LeakyReLU: lambda m: ((), dict(negative_slope=m.negative_slope)),
    nn.AvgPool2d: lambda m: ((m.kernel_size,), dict(stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode,
                                                     count_include_pad=m.count_include_pad)),
    nn.MaxPool2d: lambda m: ((m.kernel_size,), dict(stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode)),
    nn.AdaptiveAvgPool2d: lambda m: ((m.output_size,), {}),
    nn.PixelShuffle: lambda m: ((m.upscale_factor,), {}),
    nn.PixelUnshuffle: lambda m: ((m.downscale_factor,), {}),
}

# Parameter-free ops written inline in forward(); `a` are the argument expressions.


@dataclass(frozen=True)
class Ctor:
    """A module constructor call: class name and argument values (which may themselves be Ctors)."""

    cls: str
    args: tuple
    kwargs: tuple  # ((name, value), ...)

    def render(self, sub=None) -> str:
        parts = [_render(v, sub, (i,)) for i, v in enumerate(self.args)]
        parts += [f"{k}={_render(v, sub, (k,))}" for k, v in self.kwargs]
        return f"{self.cls}({', '.join(parts)})"


def _render(v, sub, path) -> str:
    if sub is not None and path in sub:
        return sub[path]
    if isinstance(v, Ctor):
        inner = {k[1:]: e for k, e in (sub or {}).items() if k[:1] == path[:1] and len(k) > 1} if sub else None
        return v.render(inner)
    return repr(v)


def ctor_of(m: nn.Module, used: dict[str, type]) -> Ctor:
    """The constructor call that rebuilds m; the archdsl layer classes it needs are added to `used`."""
    cls = type(m)
    if hasattr(m, "_archdsl_ctor"):
        args, kwargs = m._archdsl_ctor
        if used.setdefault(cls.__name__, cls) is not cls:
            raise Unsupported(f"cannot write {cls.__module__}.{cls.__name__} as source: the model also uses another "
                              f"layer class named {cls.__name__} ({used[cls.__name__].__module__})")
        # all but the first argument by keyword, for readability: LayerNorm(dim, eps=1e-06, ...)
        names = list(inspect.signature(cls.__init__.__wrapped__).parameters)[1:]
        kw = {**{names[i]: a for i, a in enumerate(args) if i > 0}, **kwargs}
        return Ctor(cls.__name__, tuple(_ctor_value(a, used) for a in args[:1]),
                    tuple((k, _ctor_value(v, used)) for k, v in kw.items()))
    if cls in _TORCH_CTORS:
        args, kwargs = _TORCH_CTORS[cls](m)
        return Ctor(f"nn.{cls.__name__}", tuple(args), tuple(kwargs.items()))
    raise Unsupported(f"cannot write {cls.__name__} as source")


def _ctor_value(v, used):
    if isinstance(v, nn.Module):
        return ctor_of(v, used)
    if isinstance(v, list):
        return tuple(v)
    return v


def _leaves(v, path=()):
    """(path, value) of every plain value inside a Ctor (or the value itself)."""
    if isinstance(v, Ctor):
        for i, a in enumerate(v.args):
            yield from _leaves(a, (*path, i))
        for k, a in v.kwargs:
            yield from _leaves(a, (*path, k))
    else:
        yield path, v


def _shape_key(v):
    if isinstance(v, Ctor):
        return (v.cls, tuple(_shape_key(a) for a in v.args), tuple((k, _shape_key(a)) for k, a in v.kwargs))
    return type(v).__name__ if not isinstance(v, tuple) else ("tuple", len(v))
