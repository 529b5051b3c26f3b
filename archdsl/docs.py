"""The operator reference generator: the op registry -> docs/ops.md (Markdown).

Takes: the registry (`archdsl.ops.registry.all_ops()`): every op's signature, docstring, layouts, input
count and test samples, and the docstring of the family module that defines it. Returns: the text of
docs/ops.md (`render()`). `python -m archdsl.docs` writes the file; `python -m archdsl.docs --check`
writes nothing and exits 1 when the file on disk is stale (the tests run that check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .check import describe_type, signature
from .interp import fmt
from .ops import registry
from .ops.registry import Op, OpError
from .shapes import Cost, Shape

OPS_MD = Path(__file__).resolve().parent.parent / "docs" / "ops.md"

# Families in reading order (the order a network is usually written in); unknown families follow, sorted.
FAMILY_ORDER = ("conv", "linear", "norm", "activation", "pool", "attention", "mixer", "resample", "structure")
FAMILY_TITLES = {
    "conv": "Convolutions", "linear": "Linear layers and heads", "norm": "Normalizations",
    "activation": "Activations", "pool": "Pooling and flattening", "attention": "Channel attention",
    "mixer": "Token mixers", "resample": "Resampling", "structure": "Structure: identity, dropout, scaling, layouts",
}
LAYOUT_WORDS = {"nchw": "`nchw` (channels-first C x H x W)", "nhwc": "`nhwc` (channels-last H x W x C)",
                "nc": "`nc` (feature vector)"}


def _families(ops: list[Op]) -> list[str]:
    present = {op.family for op in ops}
    return [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))


def _module_doc(op: Op) -> tuple[str, str]:
    """(source path relative to the repository, docstring) of the module that defines `op`."""
    mod = sys.modules[type(op).__module__]
    path = "archdsl/" + "/".join(type(op).__module__.split(".")[1:]) + ".py"
    return path, (mod.__doc__ or "").strip()


def _anchor(name: str) -> str:
    """An explicit anchor id: renderers disagree on how they slug headings with underscores."""
    return name.lower()


def _fence(text: str) -> list[str]:
    """A docstring as a fenced text block: its formulas (x * y, C x H) must not turn into Markdown."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    indent = min((len(ln) - len(ln.lstrip()) for ln in lines[1:] if ln.strip()), default=0)
    lines = lines[:1] + [ln[indent:] for ln in lines[1:]]
    return ["```text", *lines, "```"]


def _inputs(op: Op) -> str:
    if op.arity is None:
        return "two or more (merged elementwise or concatenated)"
    if op.arity == 0:
        return "none (it starts the graph)"
    return "one" if op.arity == 1 else str(op.arity)


def _param_rows(op: Op) -> list[str]:
    fields = op.Params.model_fields
    if not fields:
        return ["Parameters: none."]
    rows = ["| # | parameter | type | default |", "|---|---|---|---|"]
    for i, (name, f) in enumerate(fields.items()):
        default = "*required*" if f.is_required() else f"`{fmt(f.default)}`"
        rows.append(f"| {i} | `{name}` | {_type_text(f.annotation)} | {default} |")
    return rows


def _type_text(ann) -> str:
    return describe_type(ann).replace("|", "\\|")  # a '|' would end the table cell


def _call_text(op: Op, params: dict) -> str:
    return f"{op.name}(" + ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) + ")"


def _shape_text(s: Shape) -> str:
    return str(s) if s.spatial else f"{s.c} (vector)"


def _examples(op: Op) -> list[str]:
    """The op's test samples run through its shape rule and cost: concrete instances of both."""
    rows = []
    for params, ins in op.samples:
        try:
            p = op.Params(**params)
            out = op.infer(p, ins)
            outs = out if isinstance(out, tuple) else (out,)
            cost = op.cost(p, ins, outs[0])
        except (OpError, ValueError) as e:  # a sample that does not check is reported, not hidden
            rows.append(f"| `{_call_text(op, params)}` | {', '.join(map(_shape_text, ins))} | error: {e} | | |")
            continue
        acts = 0 if op.is_view else sum(s.numel() for s in outs)
        cost = Cost(cost.params, cost.macs, acts)
        rows.append(f"| `{_call_text(op, params)}` | {', '.join(map(_shape_text, ins))} | "
                    f"{', '.join(map(_shape_text, outs))} | {cost.params:,} | {cost.macs:,} |")
    if not rows:
        return []
    return ["| call | input | output | params | MACs |", "|---|---|---|---:|---:|", *rows]


def _op_section(op: Op) -> list[str]:
    out = [f'<a id="{_anchor("op-" + op.name)}"></a>', "", f"### `{op.name}`", "",
           "```arch", f"{op.name}({signature(op)})", "```", ""]
    if op.doc():
        out += _fence(op.doc()) + [""]
    layouts = ", ".join(LAYOUT_WORDS.get(x, f"`{x}`") for x in op.layouts)
    facts = [f"- Inputs: {_inputs(op)}.", f"- Input layouts: {layouts}."]
    if op.is_view:
        facts.append("- A view: its output counts no activation memory.")
    path, _ = _module_doc(op)
    facts.append(f"- Defined in `{path}` (family `{op.family}`).")
    out += facts + [""] + _param_rows(op) + [""]
    ex = _examples(op)
    if ex:
        out += ["Examples (the op's registry samples):", ""] + ex + [""]
    return out


def render() -> str:
    """The whole of docs/ops.md."""
    ops = list(registry.all_ops().values())
    user = [op for op in ops if op.user]
    internal = [op for op in ops if not op.user]
    lines = [
        "# archdsl operator reference",
        "",
        "<!-- Generated by `python -m archdsl.docs` from the operator registry (archdsl/ops/). Do not edit by "
        "hand: change the op's docstring or its family module's docstring and regenerate. "
        "`python -m archdsl.docs --check` fails when this file is stale. -->",
        "",
        "Every operator a spec can call, grouped by family. The language itself (blocks, forms, expressions, "
        "naming, choices, scaling) is described in [language.md](language.md).",
        "",
        "How to read an entry:",
        "",
        "- **Signature**: the parameters in positional order; `name=value` gives the default, a bare name is "
        "required. Positional arguments fill the parameters in this order; the rest go by name: "
        "`conv(64, k=1, bias=false)`. Parameter types are strict (an `int` parameter rejects `64.0`; use "
        "`int(...)`, `round(...)` or `//`); a `float` parameter accepts an int.",
        "- **Input layouts**: the layouts of the incoming tensor the op accepts. `nchw` is channels-first "
        "C x H x W (the layout after `input(...)`), `nhwc` channels-last H x W x C (after `nhwc()`), `nc` a "
        "feature vector (after `gap()`, `gmp()` or `flatten()`). Any other layout is an error at that layer.",
        "- **Examples**: each registry sample run through the op's shape rule and cost (the same samples are "
        "checked against real PyTorch modules by tests/test_registry.py). Shapes are per sample, without the "
        "batch dimension.",
        "- **Cost**: `params` is exact (what `sum(p.numel())` of the built module gives); MACs count the "
        "multiply-accumulates of layers with weights (convolutions, linear maps and the layers built from "
        "them, as each family note says); normalizations, activations, pooling and merges count 0. "
        "Activations (not listed) are the output elements of every node that is not a view.",
        "",
        "## Contents",
        "",
    ]
    fams = _families(user)
    for fam in fams:
        names = sorted(op.name for op in user if op.family == fam)
        title = FAMILY_TITLES.get(fam, fam.capitalize())
        lines.append(f"- [{title}](#{_anchor('family-' + fam)}): "
                     + ", ".join(f"[`{n}`](#{_anchor('op-' + n)})" for n in names))
    if internal:
        lines.append("- [Nodes made by forms](#family-internal): "
                     + ", ".join(f"[`{op.name}`](#{_anchor('op-' + op.name)})" for op in sorted(internal, key=_name)))
    lines.append("")
    for fam in fams:
        members = sorted((op for op in user if op.family == fam), key=_name)
        lines += [f'<a id="{_anchor("family-" + fam)}"></a>', "",
                  f"## {FAMILY_TITLES.get(fam, fam.capitalize())} (family `{fam}`)", ""]
        seen: set[str] = set()
        for op in members:
            path, doc = _module_doc(op)
            if path in seen or not doc:
                continue
            seen.add(path)
            lines += [f"From `{path}`:", ""] + _fence(doc) + [""]
        for op in members:
            lines += _op_section(op)
    if internal:
        lines += ['<a id="family-internal"></a>', "", "## Nodes made by forms", "",
                  "These ops appear in the graph (`archdsl show`) but cannot be called by name: `input(c, h, w)` "
                  "makes `input`; `residual { }` makes `add`; `parallel(merge=...) { }` makes `add`, `concat` or "
                  "`mul`; `split(...) { }` makes `split` and its merge. See language.md, Forms.", ""]
        for op in sorted(internal, key=_name):
            lines += _op_section(op)
    return "\n".join(lines).rstrip() + "\n"


def _name(op: Op) -> str:
    return op.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m archdsl.docs", description="Generate docs/ops.md from the registry.")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if docs/ops.md is stale")
    ap.add_argument("--output", type=Path, default=OPS_MD, help=f"where to write (default {OPS_MD})")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        old = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if old != text:
            print(f"{args.output} is stale: run `python -m archdsl.docs` to regenerate it", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
