"""The IR printer and reader: a deterministic text form of an ArchGraph that reads back to the same graph.

Takes: an ArchGraph (checked or not). Returns: text, one node per line in topological order:

    stem.0 = conv(out=96, k=4, s=4, pad=0, d=1, groups=1, bias=true) <- input : 96x56x56 @ x.arch:18:13

`read_ir(text)` parses that text back into an (unchecked) ArchGraph: parameter values are read with the
.arch expression parser and interpreter, never with Python eval.
"""

from __future__ import annotations

import re

from . import syntax as S
from .errors import ArchError, Diagnostic, Span
from .interp import ChoiceTable, EvalError, Evaluator, fmt
from .ir import ArchGraph, Node
from .parse import parse_expr


def params_text(node: Node) -> str:
    """'out=64, k=3, ...': every parameter of a node in .arch syntax."""
    return ", ".join(f"{k}={fmt(v)}" for k, v in node.raw_params().items())


def _shape_text(shape) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, tuple):
        return "(" + ", ".join(str(s) for s in shape) + ")"
    return str(shape)


def format_ir(g: ArchGraph, spans: bool = True) -> str:
    lines = [f"# model {g.model} ({g.file})"]
    if g.params:
        lines.append("# params " + ", ".join(f"{k}={fmt(v)}" for k, v in g.params.items()))
    if g.init:
        lines.append("# init " + ", ".join(f"{k}={fmt(v)}" for k, v in g.init.items()))
    for name in g.order():
        node = g.node(name)
        ins = ", ".join(src if port == 0 and not isinstance(g.attrs(src).get("shape"), tuple) else f"{src}:{port}"
                        for src, port in g.inputs(name))
        line = f"{name} = {node.op}({params_text(node)})"
        if ins:
            line += f" <- {ins}"
        line += f" : {_shape_text(g.attrs(name).get('shape'))}"
        if spans:
            line += f" @ {node.span}"
        lines.append(line)
    if g.output is not None:
        lines.append(f"output {g.output[0]}" + (f":{g.output[1]}" if g.output[1] else ""))
    return "\n".join(lines) + "\n"


_LINE = re.compile(r"^(?P<name>[\w.]+) = (?P<call>\w+\(.*?\))(?: <- (?P<ins>[\w.:, ]+))? : (?P<shape>.+?)"
                   r"(?: @ (?P<file>.+):(?P<line>\d+):(?P<col>\d+))?$")


def read_ir(text: str, file: str = "<ir>") -> ArchGraph:
    """Parse `format_ir` output back into an unchecked ArchGraph (shapes are recomputed by check)."""
    g = ArchGraph()
    ev = Evaluator(ChoiceTable())

    def fail(i: int, msg: str) -> ArchError:
        return ArchError([Diagnostic(Span(file, i, 1, i, 2), msg)])

    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("# model "):
            m = re.match(r"# model (\S+) \((.*)\)$", line)
            if m:
                g.model, g.file = m.group(1), m.group(2)
            continue
        header = re.match(r"# (init|params) (.*)$", line)
        if header:  # keyword arguments in .arch syntax: read with the expression parser, never eval
            call = parse_expr(f"f({header.group(2)})", file)
            try:
                values = {a.name: ev.eval(a.value, {}, "") for a in call.args}  # type: ignore[arg-type]
            except EvalError as e:
                raise fail(i, e.message) from None
            setattr(g, header.group(1), values)
            continue
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("output "):
            ref = line[len("output "):].strip()
            src, _, port = ref.partition(":")
            g.output = (src, int(port or 0))
            continue
        m = _LINE.match(line)
        if not m:
            raise fail(i, "not an IR line: name = op(params) <- inputs : shape @ file:line:col")
        call = parse_expr(m.group("call"), file)
        if not isinstance(call, S.Call) or call.positional:
            raise fail(i, "IR parameters must be keyword arguments")
        try:
            params = {a.name: ev.eval(a.value, {}, "") for a in call.args}  # type: ignore[arg-type]
        except EvalError as e:
            raise fail(i, e.message) from None
        span = Span.unknown(file)
        if m.group("file"):
            ln, col = int(m.group("line")), int(m.group("col"))
            span = Span(m.group("file"), ln, col, ln, col + len(call.name))
        inputs = []
        for ref in (m.group("ins") or "").split(","):
            ref = ref.strip()
            if ref:
                src, _, port = ref.partition(":")
                if src not in g:
                    raise fail(i, f"input '{src}' is not defined above")
                inputs.append((src, int(port or 0)))
        g.add(Node(m.group("name"), call.name, tuple(params.items()), span), inputs)
        if call.name == "input":
            g.input_node = m.group("name")
    return g
