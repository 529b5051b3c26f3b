"""Print/parse round-trip of the canonical formatter (archdsl.fmt), as hypothesis properties.

(a) random ASTs over every syntax node: parse(format(ast)) == ast, and format is idempotent;
(b) random *valid* architectures: check(spec) and check(format(parse(spec))) build identical graphs
    (node names in order, ops, validated params, shapes, costs), and the shapes match an independent
    shape model kept by the generator; the examples/*.arch files re-check identically after formatting;
(c) comments and blank lines survive `format_text` (each comment kept, output idempotent).
Set ARCHDSL_ROUNDTRIP_EXAMPLES for a longer run (default 150 examples per property).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archdsl import syntax as S
from archdsl.api import check_text
from archdsl.errors import Span
from archdsl.fmt import format_expr, format_file, format_module, format_text
from archdsl.parse import parse_expr, parse_text
from archdsl.shapes import Shape

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
N = int(os.environ.get("ARCHDSL_ROUNDTRIP_EXAMPLES", "150"))
SETTINGS = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SP = Span.unknown("gen.arch")  # spans are not compared

# ---------------------------------------------------------------- (a) strategies over the syntax

KEYWORDS = {"import", "as", "block", "model", "fix", "let", "require", "input", "scaling", "init", "for", "in", "if",
            "elif", "else", "true", "false", "none", "and", "or", "not"}

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
dotted = st.lists(names, min_size=1, max_size=3).map(".".join)


def _num_value(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


number_text = st.one_of(
    st.integers(0, 10**18).map(str),
    st.from_regex(r"([0-9]{1,4}\.[0-9]{0,3}|\.[0-9]{1,3}|[0-9]{1,4})([eE][+-]?[0-9]{1,3})?", fullmatch=True),
)
nums = number_text.filter(lambda t: math.isfinite(_num_value(t))).map(lambda t: S.Num(_num_value(t), t, SP))
strs = st.text(max_size=8).map(lambda s: S.Str(s, SP))
consts = st.sampled_from([True, False, None]).map(lambda v: S.Const(v, SP))
variables = names.map(lambda n: S.Var(n, SP))

BINOPS = ["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or"]


def _args(values):
    arg = st.builds(lambda n, v: S.Arg(n, v, SP), st.none() | names, values)
    return st.lists(arg, max_size=3).map(tuple)


def _extend(children):
    return st.one_of(
        st.lists(children, max_size=3).map(lambda xs: S.ListExpr(tuple(xs), SP)),
        st.builds(lambda o, i: S.Index(o, i, SP), children, children),
        st.builds(lambda o, lo, hi: S.Slice(o, lo, hi, SP), children, st.none() | children, st.none() | children),
        st.builds(lambda op, a, b: S.BinOp(op, a, b, SP), st.sampled_from(BINOPS), children, children),
        st.builds(lambda op, a: S.Unary(op, a, SP), st.sampled_from(["-", "+", "not"]), children),
        st.builds(lambda a, b, c: S.Cond(a, b, c, SP), children, children, children),
        st.builds(lambda n, a: S.Call(n, a, SP, SP), dotted, _args(children)),
        st.builds(lambda item, ns, it, t: S.ListComp(item, tuple(ns), it, t, SP), children,
                  st.lists(names, min_size=1, max_size=2), children, st.none() | children),
    )


exprs = st.recursive(st.one_of(nums, strs, consts, variables), _extend, max_leaves=10)
calls = st.builds(lambda n, a: S.Call(n, a, SP, SP), dotted, _args(exprs))

simple_stmts = st.one_of(
    st.builds(lambda n, v: S.Let(n, v, SP), names, exprs),
    st.builds(lambda t, m: S.Require(t, m, SP), exprs, st.none() | st.text(max_size=6)),
    _args(exprs).map(lambda a: S.Input(a, SP)),
    _args(exprs).map(lambda a: S.Scaling(a, SP)),
    _args(exprs).map(lambda a: S.Init(a, SP)),
    calls.map(lambda c: S.LayerCall(c, None, SP)),
)


def _layers(bodies):
    return st.one_of(
        calls.map(lambda c: S.LayerCall(c, None, SP)),
        st.builds(lambda c, b: S.LayerCall(c, b, SP), calls, bodies),
        bodies.map(lambda b: S.Seq(b, SP)),
        st.builds(lambda ns, it, b: S.For(tuple(ns), it, b, SP), st.lists(names, min_size=1, max_size=2), exprs,
                  bodies),
        st.builds(lambda br, e: S.If(tuple(br), e, SP), st.lists(st.tuples(exprs, bodies), min_size=1, max_size=3),
                  st.none() | bodies),
    )


def _extend_body(bodies):
    layer = _layers(bodies)
    named = st.builds(lambda n, lay: S.Named(n, lay, SP, SP), names, layer)
    return st.lists(st.one_of(simple_stmts, layer, named), max_size=4).map(lambda xs: S.Body(tuple(xs), SP))


bodies = st.recursive(st.lists(simple_stmts, max_size=3).map(lambda xs: S.Body(tuple(xs), SP)), _extend_body,
                      max_leaves=8)
types = st.recursive(st.builds(lambda n: S.TypeRef(n, None, SP), names),
                     lambda inner: st.builds(lambda n, a: S.TypeRef(n, a, SP), names, inner), max_leaves=3)
params = st.builds(lambda n, t, d: S.Param(n, t, d, SP), names, st.none() | types, st.none() | exprs)
defs = st.builds(lambda k, n, ps, b: S.Def(k, n, tuple(ps), b, SP, SP), st.sampled_from(["block", "model"]), names,
                 st.lists(params, max_size=3), bodies)
imports = st.builds(lambda p, a: S.Import(p, a, SP), st.text(max_size=10), st.none() | names)
# A fix value is a literal: a number (optionally signed), a string, a constant, or a (nested) list of these.
signed = st.builds(lambda op, n: S.Unary(op, n, SP), st.sampled_from(["-", "+"]), nums)
literals = st.recursive(st.one_of(nums, signed, strs, consts),
                        lambda inner: st.lists(inner, max_size=3).map(lambda xs: S.ListExpr(tuple(xs), SP)),
                        max_leaves=6)
fixes = st.builds(lambda n, v: S.Fix(n, v, SP, SP), st.text(max_size=10), literals)
modules = st.builds(lambda i, d, f: S.Module("gen.arch", tuple(i), tuple(d), tuple(f)), st.lists(imports, max_size=2),
                    st.lists(defs, max_size=3), st.lists(fixes, max_size=2))


@SETTINGS
@given(modules)
def test_module_roundtrip(mod):
    text = format_module(mod)
    back = parse_text(text, mod.file)
    assert back == mod, text
    assert format_module(back) == text


@SETTINGS
@given(exprs)
def test_expr_roundtrip(e):
    text = format_expr(e)
    assert parse_expr(text) == e, text
    assert format_expr(parse_expr(text)) == text


COMMENT = re.compile(r'"(?:[^"\\\n]|\\["\\n])*"|#[^\n]*')


def _comments(text: str) -> list[str]:
    return sorted(m.group().rstrip() for m in COMMENT.finditer(text) if m.group().startswith("#"))


@st.composite
def commented_sources(draw):
    """Formatted random modules with comments put at the ends of random lines and between lines."""
    lines = format_module(draw(modules)).split("\n")
    out = []
    for i, line in enumerate(lines):
        if draw(st.integers(0, 3)) == 0:
            out.append(f"# own {i}")
        out.append(line + (f"  # tail {i}" if line.strip() and draw(st.integers(0, 2)) == 0 else ""))
        if draw(st.integers(0, 5)) == 0:
            out.append("")
    return "\n".join(out)


@SETTINGS
@given(commented_sources())
def test_comments_survive_formatting(text):
    out = format_text(text, "c.arch")
    assert parse_text(out, "c.arch") == parse_text(text, "c.arch"), out
    assert _comments(out) == _comments(text), out
    assert format_text(out, "c.arch") == out


@pytest.mark.parametrize("src, want", [
    ("(a if b else c) if d else e", "(a if b else c) if d else e"),
    ("a if b else (c if d else e)", "a if b else c if d else e"),
    ("a if (b if c else d) else e", "a if (b if c else d) else e"),
    ("(-a) ** b", "(-a) ** b"),
    ("-(a ** b)", "-a ** b"),
    ("a ** (b ** c)", "a ** b ** c"),
    ("(a ** b) ** c", "(a ** b) ** c"),
    ("a ** -b", "a ** -b"),
    ("(a < b) == c", "(a < b) == c"),
    ("not (a == b)", "not a == b"),
    ("(not a) == b", "(not a) == b"),
    ("a - (b - c)", "a - (b - c)"),
    ("(a - b) - c", "a - b - c"),
    ("a / (b * c)", "a / (b * c)"),
    ("-(-a)", "--a"),
    ("(a + b)[0][1:]", "(a + b)[0][1:]"),
    ("(-a)[0]", "(-a)[0]"),
    ("(a or b) and not (c or d)", "(a or b) and not (c or d)"),
    ("a or (b or c)", "a or (b or c)"),
    ("f(x=(1), y=[1, (2)],)", "f(x=1, y=[1, 2])"),
    ("lib.f(a if b else c)[: 2]", "lib.f(a if b else c)[:2]"),
    ("1.e5 + .5E-3 + 007", "1.e5 + .5E-3 + 007"),
    ('"q\\"\\\\n\\n"', '"q\\"\\\\n\\n"'),
])
def test_precedence_cases(src, want):
    e = parse_expr(src)
    assert format_expr(e) == want
    assert parse_expr(want) == e


def test_semicolons_where_the_grammar_needs_them():
    src = ('model m() { let x = a; if c { relu() }\nrequire x; if c { }\nrequire x, "m"\nif c { }\n'
           'conv(8); { relu() }\nn: conv(8); { }\nconv(8) { }\n{ }\n}')
    mod = parse_text(src, "s.arch")
    text = format_module(mod)
    assert parse_text(text, "s.arch") == mod
    assert text == ("model m() {\n    let x = a\n    if c {\n        relu()\n    }\n    require x\n    if c { }\n"
                    "    require x, \"m\"\n    if c { }\n    conv(8);\n    {\n        relu()\n    }\n    n: conv(8);\n"
                    "    { }\n    conv(8) { }\n    { }\n}\n")


def test_statement_expressions_and_bare_forms():
    src = ('model m() { let x = (a if b else c)\nrequire (p if q else r), "m"\nfor i in (u if v else w) { }\n'
           'if (a if b else c) { } elif (d if e else f) { }\nresidual() { relu() }\nlib.blk { }\n'
           'init("trunc_normal", std=0.02)\nconv(k=a if b else c)\n}')
    mod = parse_text(src, "s.arch")
    text = format_module(mod)
    assert parse_text(text, "s.arch") == mod
    assert text == ("model m() {\n    let x = (a if b else c)\n    require (p if q else r), \"m\"\n"
                    "    for i in (u if v else w) { }\n    if (a if b else c) { } elif (d if e else f) { }\n"
                    "    residual {\n        relu()\n    }\n    lib.blk { }\n    init(\"trunc_normal\", std=0.02)\n"
                    "    conv(k=a if b else c)\n}\n")


def test_fix_lines_come_first_with_their_comments():
    """Fix lines print first, each with the comments between it and the item before it in the source."""
    src = ('# lib\n\nimport "x.arch"\n\n# the model\nmodel m() { }\n# pinned\nfix "stages.0.k" = 7  # k\n'
           'fix "d"=[ -1, +2.50, "a\\"b", true, none, [] ]\n')
    text = format_text(src, "f.arch")
    assert text == ('# pinned\nfix "stages.0.k" = 7  # k\nfix "d" = [-1, +2.50, "a\\"b", true, none, []]\n'
                    '\n# lib\n\nimport "x.arch"\n\n# the model\nmodel m() { }\n')
    assert parse_text(text, "f.arch") == parse_text(src, "f.arch")
    assert format_text(text, "f.arch") == text


def test_layout_of_a_module():
    src = 'model b(){ } import "x.arch" as lib block a(x:int=1,y:list[int]){if x{relu()}elif y{}else{gelu()}}'
    text = format_module(parse_text(src, "l.arch"))
    assert text == ('import "x.arch" as lib\n\nmodel b() { }\n\nblock a(x: int = 1, y: list[int]) {\n'
                    '    if x {\n        relu()\n    } elif y { } else {\n        gelu()\n    }\n}\n')


def test_comment_placement():
    src = ('# file header\n\nimport "x.arch"  # why\n# about b\nblock b(\n    a: int,  # the width\n'
           '    # the kernel\n    k: int = 3,\n) {  # b line\n    relu()  # after relu\n\n\n    # before gelu\n'
           '    x: { gelu(); relu() }  # on x\n    if a > 0 {\n        relu()\n        # end of if\n    }\n'
           '    # end of b\n}\n# trailing file comment\n')
    assert format_text(src, "c.arch") == (
        '# file header\n\nimport "x.arch"  # why\n\n# about b\nblock b(\n    a: int,  # the width\n'
        '    # the kernel\n    k: int = 3,\n) {  # b line\n    relu()  # after relu\n\n    # before gelu\n'
        '    x: {  # on x\n        gelu()\n        relu()\n    }\n    if a > 0 {\n        relu()\n'
        '        # end of if\n    }\n    # end of b\n}\n\n# trailing file comment\n')


# ---------------------------------------------------------------- (b) random valid architectures

BLOCKS = '''
block mix(dim: int, k: int = 3, act: str = "gelu") {
    require k % 2 == 1, "odd kernels only"
    residual {
        dw: dwconv(k)
        bn()
        if act == "gelu" { gelu() } elif act == "relu" { relu() } else { }
        pw: conv(dim, k=1)
    }
}

block down(out: int, s: int = 2) {
    conv(out, k=3, s=s)
    bn()
}

block mlp(dim: int, hidden: int) {
    fc1: linear(hidden)
    gelu()
    fc2: linear(dim)
}
'''


class _Gen:
    """Writes a random valid spec while tracking the shape each statement produces (an independent model)."""

    def __init__(self, draw):
        self.draw = draw
        self.lets = 0
        self.names = 0
        self._target: Shape | None = None
        self._keep_hw = False

    def pick(self, options):
        return self.draw(st.sampled_from(options))

    def int_(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def write_int(self, v: int) -> str:
        """An integer written as a literal or as a small expression that evaluates to it."""
        form = self.int_(0, 3)
        if form == 1 and v > 1:
            a = self.int_(1, v - 1)
            return f"{a} + {v - a}"
        if form == 2 and v % 2 == 0:
            return f"2 * {v // 2}"
        if form == 3:
            return f"[{v}, 0][0]"
        return str(v)

    def chain(self, s: Shape, depth: int, keep: bool) -> tuple[list[str], Shape]:
        """A list of layer statements from shape `s`; with keep=True the output shape equals `s`."""
        lines: list[str] = []
        for _ in range(self.int_(1, 4)):
            stmts, s2 = self.stmt(s, depth, keep)
            lines += stmts
            s = s2
        if keep:
            lines += self.restore(s, self._target)
            s = self._target
        return lines, s

    def restore(self, s: Shape, t: Shape) -> list[str]:
        out = []
        if s.layout != t.layout:
            out.append(f"{t.layout}()")
        if s.c != t.c:
            out.append(f"linear({t.c})")
        return out

    def stmt(self, s: Shape, depth: int, keep: bool) -> tuple[list[str], Shape]:
        spatial, nchw = s.spatial, s.layout == "nchw"
        kinds = ["act", "norm", "linear"]
        if nchw:
            kinds += ["conv", "dwconv", "attn", "block_mix", "residual", "parallel", "split", "for", "let"]
            if not keep and not self._keep_hw and s.h >= 2 and s.w >= 2:
                kinds += ["pool", "down"]
        if spatial:
            kinds += ["layout"]
        kinds += ["mlp", "for_list", "if"]
        if depth <= 0:
            kinds = [k for k in kinds if k not in ("residual", "parallel", "split", "for", "for_list", "if")]
        kind = self.pick(kinds)
        name = self.draw(st.none() | st.sampled_from(["a", "b", "mid", "x1"]))
        lines, out = getattr(self, "_" + kind)(s, depth)
        if name is not None and len(lines) == 1 and not lines[0].startswith("let "):
            lines = [f"{name}{self._uniq()}: {lines[0]}"]
        return lines, out

    def _uniq(self) -> str:
        self.names += 1
        return str(self.names)

    # ---- single ops
    def _act(self, s, d):
        return [self.pick(["gelu()", "relu()", 'gelu(approximate="tanh")', "silu()", "hardswish()",
                           "leaky_relu(slope=0.2)", "sigmoid()", "dropout(0.1)"])], s

    def _norm(self, s, d):
        opts = ["bn()", "layernorm(eps=1e-6)", "bn(momentum=0.01)", "layernorm(affine=false)"]
        if s.layout == "nchw":
            opts.append(f"groupnorm({self.pick([g for g in range(1, s.c + 1) if s.c % g == 0])})")
        return [self.pick(opts)], s

    def _linear(self, s, d):
        out = self.int_(1, 24)
        return [f"linear({self.write_int(out)}{self.pick(['', ', bias=false'])})"], s.with_c(out)

    def _conv(self, s, d):
        out = self.int_(1, 24)
        k = self.pick([1, 3, 5])
        stride = 1 if self.pick([True, False]) else 2
        groups = self.pick([g for g in range(1, min(s.c, out) + 1) if s.c % g == 0 and out % g == 0])
        h, w = (s.h - 1) // stride + 1, (s.w - 1) // stride + 1
        if self._keep_hw:
            stride, h, w = 1, s.h, s.w
        extra = (f", s={stride}" if stride != 1 else "") + (f", groups={groups}" if groups != 1 else "")
        return [f"conv({self.write_int(out)}, k={k}{extra})"], Shape(out, h, w)

    def _dwconv(self, s, d):
        k = self.pick([3, 5, 7, [1, 3], [3, 1]])
        mult = self.pick([1, 1, 2])
        ktext = f"[{k[0]}, {k[1]}]" if isinstance(k, list) else str(k)
        return [f"dwconv(k={ktext}{', mult=2' if mult == 2 else ''})"], s.with_c(s.c * mult)

    def _attn(self, s, d):
        if s.c >= 4 and self.pick([True, False]):
            return [self.pick(["se()", 'se(ratio=0.5, act="silu")', "se(hidden=2)"])], s
        return [self.pick(["eca()", "eca(k=3)"])], s

    def _pool(self, s, d):
        op = self.pick(["maxpool", "avgpool"])
        return [f"{op}(2)"], Shape(s.c, s.h // 2, s.w // 2)

    def _down(self, s, d):
        out = self.int_(1, 24)
        return [f"down({out})"], Shape(out, (s.h - 1) // 2 + 1, (s.w - 1) // 2 + 1)

    def _layout(self, s, d):
        if s.layout == "nchw":
            return ["nhwc()"], Shape(s.c, s.h, s.w, "nhwc")
        return ["nchw()"], Shape(s.c, s.h, s.w, "nchw")

    def _block_mix(self, s, d):
        k = self.pick([3, 5])
        act = self.pick(['"gelu"', '"relu"', '"none"'])
        return [self.pick([f"mix({s.c})", f"mix({s.c}, {k})", f"mix(dim={s.c}, act={act}, k={k})"])], s

    def _mlp(self, s, d):
        return [f"mlp({s.c}, hidden={self.int_(1, 32)})"], s

    def _let(self, s, d):
        self.lets += 1
        out = self.int_(1, 16)
        name = f"c{self.lets}"
        return [f"let {name} = {self.write_int(out)}", f"conv({name} * 1, k=1)"], s.with_c(out)

    # ---- forms and control flow
    def _sub(self, s: Shape, d: int, keep: bool, keep_hw: bool = True) -> tuple[list[str], Shape]:
        saved = (self._target, self._keep_hw)
        self._target, self._keep_hw = s, keep_hw
        try:
            return self.chain(s, d - 1, keep)
        finally:
            self._target, self._keep_hw = saved

    def _body(self, lines: list[str]) -> list[str]:
        return ["    " + x for x in lines]

    def _residual(self, s, d):
        inner, _ = self._sub(s, d, keep=True)
        args = self.pick(["", "layer_scale=1e-6", "drop_path=0.1", "layer_scale=0.5, drop_path=0.0"])
        return [f"residual({args}) {{", *self._body(inner), "}"], s

    def _parallel(self, s, d):
        merge = self.pick(["add", "concat", "mul"])
        n = self.int_(2, 3)
        branches, outs = [], []
        for _ in range(n):
            inner, o = self._sub(s, d, keep=merge != "concat")
            if merge == "concat":
                inner += self.restore(o, Shape(o.c, s.h, s.w, s.layout))
                o = Shape(o.c, s.h, s.w, s.layout)
            branches += ["{", *self._body(inner), "}"]  # `op()` then `{` would read as a form with a body
            outs.append(o)
        out = s.with_c(sum(o.c for o in outs)) if merge == "concat" else s
        head = "parallel" + ("" if merge == "add" else f'(merge="{merge}")')
        return [f"{head} {{", *self._body(branches), "}"], out

    def _split(self, s, d):
        if s.c < 2:
            return self._act(s, d)
        n = self.int_(2, min(3, s.c))
        cuts = sorted(self.draw(st.lists(st.integers(1, s.c - 1), min_size=n - 1, max_size=n - 1, unique=True)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, s.c])]
        branches = []
        for c in sizes:
            bs = s.with_c(c)
            inner, _ = self._sub(bs, d, keep=True) if self.pick([True, False]) else (["identity()"], bs)
            branches += ["{", *self._body(inner), "}"]
        return [f"split(sizes=[{', '.join(map(str, sizes))}]) {{", *self._body(branches), "}"], s

    def _for(self, s, d):
        n = self.int_(1, 3)
        inner, _ = self._sub(s, d, keep=True)
        return [f"for i in range({n}) {{", *self._body(inner), "}"], s

    def _for_list(self, s, d):
        chans = self.draw(st.lists(st.integers(1, 16), min_size=1, max_size=3))
        var = self.pick(["ch", "c_out"])
        body = [f"linear({var})", self.pick(["gelu()", "relu()"])]
        return [f"for {var} in [{', '.join(map(str, chans))}] {{", *self._body(body), "}"], s.with_c(chans[-1])

    def _if(self, s, d):
        flag = self.pick(["true", "false", "1 < 2", "2 < 1"])
        taken = flag in ("true", "1 < 2")
        then, t_out = self._sub(s, d, keep=False, keep_hw=self._keep_hw)
        if not taken:  # the not-taken branch is elaborated only if taken; keep it well-formed anyway
            t_out = s
        # a taken branch always runs a layer: an empty residual body is an error
        other = ["relu()"] if not taken or self.pick([True, False]) else []
        lines = [f"if {flag} {{", *self._body(then), "}"]
        if other:
            lines[-1] = "} else {"
            lines += [*self._body(other), "}"]
        return lines, t_out if taken else s


@st.composite
def valid_specs(draw):
    gen = _Gen(draw)
    c, h, w = draw(st.integers(1, 8)), draw(st.integers(1, 24)), draw(st.integers(1, 24))
    width = draw(st.integers(1, 16))
    s = Shape(width, h, w)
    gen._target = s
    body, out = gen.chain(s, 2, keep=False)
    tail = []
    if draw(st.booleans()) and out.spatial:
        tail = ["pool: gap()", "head: linear(10)"]
        out = Shape.vector(10)
    lines = [f"model net(width: int = {width}, size: list[int] = [{h}, {w}]) {{",
             f"    input({c}, size[0], size[1])",
             "    require width > 0, \"width must be positive\"",
             "    stem: conv(width, k=3)",
             *["    " + x for x in body + tail], "}"]
    return BLOCKS + "\n" + "\n".join(lines) + "\n", out


def _graph_summary(g):
    rows = []
    for n in g.order():
        node = g.node(n)
        a = g.attrs(n)
        rows.append((n, node.op, node.params, a["shape"], a["in_shapes"], a["cost"], tuple(g.inputs(n))))
    return rows, g.total(), g.output_shape


@settings(max_examples=max(10, N // 2), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_valid_specs_recheck_identically(spec):
    text, expected_out = spec
    g1 = check_text(text, "valid.arch")
    assert g1.output_shape == expected_out, text
    formatted = format_module(parse_text(text, "valid.arch"))
    g2 = check_text(formatted, "valid.arch")
    assert _graph_summary(g1) == _graph_summary(g2), formatted
    assert _graph_summary(check_text(format_text(text, "valid.arch"), "valid.arch")) == _graph_summary(g1)
    assert format_module(parse_text(formatted, "valid.arch")) == formatted


def _example_files():
    return sorted(p for p in EXAMPLES.rglob("*.arch"))


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_examples_format_and_recheck(path):
    rel = os.path.relpath(path)
    text = path.read_text(encoding="utf-8")
    formatted = format_file(rel)
    assert parse_text(formatted, rel) == parse_text(text, rel)
    assert _comments(formatted) == _comments(text)
    assert format_text(formatted, rel) == formatted
    bare = format_module(parse_text(text, rel))
    assert format_module(parse_text(bare, rel)) == bare
    if not re.search(r"^\s*model\s", text, re.M):
        return  # a library of blocks: nothing to check on its own
    g1, g2 = check_text(text, rel), check_text(formatted, rel)
    assert g1.total() == g2.total()
    assert _graph_summary(g1) == _graph_summary(g2)


def test_format_is_deterministic_on_examples():
    for path in _example_files():
        rel = os.path.relpath(path)
        assert format_file(rel) == format_file(rel)
