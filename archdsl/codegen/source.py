"""Stage 5b: checked ArchGraph -> standalone, readable PyTorch source (`archdsl compile`).

Takes: a checked ArchGraph. Returns: the text of a Python module that depends on torch only: the
archdsl layer classes it uses, one nn.Module class per block definition (a second class only where
instances of one block differ in structure; none for a block whose body is a single layer: that layer is the
instance, named after the call, as in the archdsl-built model), and one class for the model. Loading the state_dict of
the archdsl-built model into it gives bit-identical outputs: it builds the same layers and runs the
same operations in the same order.

Constructor values that vary between instances of a block become constructor arguments, written as
expressions of the block's declared parameters where one fits (`dim`, `4 * dim`), else named after the
layer and argument (`mlp_fc1_out_features`).
"""

from __future__ import annotations

import inspect
import keyword
import re
from dataclasses import dataclass, field

from torch import nn

from ..interp import fmt as arch_fmt
from ..ir import ArchGraph
from ..ops import registry
from ..shapes import human
from ..version import __version__
from .source_ctors import Ctor, Unsupported, _leaves, _shape_key, ctor_of  # Unsupported: re-exported

# ---------------------------------------------------------------- scopes -> items


@dataclass
class Item:
    """One statement of a forward(): a node, or a whole nested block instance."""

    rel: str  # module path relative to the owning class
    kind: str  # "node" | "block"
    op: str
    ctor: Ctor | None
    inputs: list  # refs (global node name, port) or ("<in>", 0)
    out: str  # the global name of the value it produces (a block: its output node)
    nout: int = 1
    params: object = None
    in_shapes: tuple = ()


@dataclass
class Instance:
    path: str
    block: str
    decl: dict  # declared parameter values
    items: list[Item] = field(default_factory=list)
    entry: str = ""  # global node feeding the block
    cls: str = ""
    args: dict = field(default_factory=dict)  # lifted constructor arguments


class Emitter:
    def __init__(self, g: ArchGraph):
        self.g = g
        self.used: dict[str, type] = {}  # the layer classes the model builds, by name
        self.modules: dict[str, nn.Module] = {}
        for name in g.order():
            if name == g.input_node:
                continue
            node = g.node(name)
            self.modules[name] = registry.get(node.op).build(node.params, list(g.attrs(name)["in_shapes"]))
        # A block instance gets a class only if nodes lie inside it. One whose body is a single layer has no inner
        # node: that layer is the instance itself (node `stem`, parameters `stem.weight`, as the archdsl-built
        # model names them), so its parent builds and calls it like any layer. One the deploy passes emptied (a
        # lone BatchNorm folded into the conv before it, dropout dropped) has nothing left to write.
        inner = {".".join(n.split(".")[:i]) for n in g.order() for i in range(1, n.count(".") + 1)}
        self.block_scopes = {p: s for p, s in g.scopes.items() if s.kind == "block" and p in inner}
        self.classes: list[str] = []
        self.class_names: set[str] = set()

    # -- which scope owns a node
    def owner(self, name: str) -> str:
        """The innermost block scope containing `name` ('' for the model)."""
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            p = ".".join(parts[:i])
            if p in self.block_scopes:
                return p
        return ""

    def parent_block(self, scope: str) -> str:
        return self.owner(scope) if scope else ""

    def items_of(self, scope: str) -> list[Item]:
        g = self.g
        items: list[Item] = []
        seen_blocks: dict[str, Item] = {}
        for name in g.order():
            if name == g.input_node:
                continue
            own = self.owner(name)
            if own == scope:
                node = g.node(name)
                inline = registry.get(node.op).source(node.params, list(g.attrs(name)["in_shapes"]),
                                                      ["x"] * len(g.inputs(name))) is not None
                items.append(Item(_rel(name, scope), "node", node.op,
                                  None if inline else ctor_of(self.modules[name], self.used),
                                  g.inputs(name), name, _nout(g.attrs(name)["shape"]), node.params,
                                  g.attrs(name)["in_shapes"]))
                continue
            # a node of a nested block instance: the child scope directly below `scope`
            child = own
            while self.parent_block(child) != scope and child:
                child = self.parent_block(child)
            if not child:
                continue
            if child not in seen_blocks:
                it = Item(_rel(child, scope), "block", self.block_scopes[child].label, None, [], name)
                seen_blocks[child] = it
                items.append(it)
            it = seen_blocks[child]
            it.out = name  # the last node in data-flow order is the block's output
            for src, port in g.inputs(name):
                if not _inside(src, child) and (src, port) not in it.inputs:
                    it.inputs.append((src, port))
        return items

    # -- classes
    def emit_blocks(self) -> dict[str, Instance]:
        """Emit block classes, deepest instances first (a parent's constructor needs its children's
        classes and arguments); returns every instance with its class and lifted arguments."""
        instances = {path: Instance(path, sc.label, dict(sc.args)) for path, sc in self.block_scopes.items()}
        by_depth: dict[int, list[Instance]] = {}
        for inst in instances.values():
            by_depth.setdefault(inst.path.count("."), []).append(inst)
        for depth in sorted(by_depth, reverse=True):
            groups: dict[tuple, list[Instance]] = {}
            for inst in sorted(by_depth[depth], key=lambda i: self.g.attrs(self._first_node(i.path))["order"]):
                inst.items = self.items_of(inst.path)
                for it in inst.items:
                    if it.kind == "block":
                        child = instances[_join(inst.path, it.rel)]
                        it.ctor = Ctor(child.cls, (), tuple(child.args.items()))
                groups.setdefault((inst.block, self._structure(inst)), []).append(inst)
            for members in groups.values():
                cls = self._class_name(members[0].block)
                for m in members:
                    m.cls = cls
                self._emit_class(members)
        return instances

    def _first_node(self, scope: str) -> str:
        return next(n for n in self.g.order() if _inside(n, scope))

    def _structure(self, inst: Instance):
        return tuple((it.rel, it.kind, it.op, _shape_key(it.ctor) if it.ctor else None,
                      tuple(_rel_ref(r, inst.path) for r in it.inputs), _rel(it.out, inst.path), it.nout,
                      _inline_key(it)) for it in inst.items)

    def _class_name(self, block: str) -> str:
        base = "".join(w[:1].upper() + w[1:] for w in re.split(r"[_.]", block) if w) or "Block"
        if base in self.used or base in ("Container", "Model") or keyword.iskeyword(base):
            base += "Block"
        name, n = base, 2
        while name in self.class_names:
            name, n = f"{base}{n}", n + 1
        self.class_names.add(name)
        return name

    def _emit_class(self, members: list[Instance]) -> None:
        first = members[0]
        leaves = [dict(_leaves(it.ctor)) if it.ctor else {} for it in first.items]
        subs: list[dict] = [{} for _ in first.items]
        args: dict[str, object] = {}
        for k, it in enumerate(first.items):
            for path in leaves[k]:
                vals = [dict(_leaves(m.items[k].ctor))[path] for m in members]
                if all(x == vals[0] and type(x) is type(vals[0]) for x in vals):
                    continue
                expr = _fit(vals, [m.decl for m in members])
                if expr is None:
                    name = _ident(f"{it.rel}_{'_'.join(str(p) for p in path)}")
                    while name in args:
                        name += "_"
                    args[name] = vals
                    expr = name
                else:
                    for pname in _names_in(expr):
                        args.setdefault(pname, [m.decl[pname] for m in members])
                subs[k][path] = expr
        for i, m in enumerate(members):
            m.args = {a: v[i] for a, v in args.items()}
        sig = ", ".join(args)
        sc = self.block_scopes[first.path]
        lines = [f"class {first.cls}(nn.Module):",
                 f'    """block {first.block}, called at {sc.span.file}:{sc.span.line} '
                 f'({len(members)} instance(s))."""',
                 "",
                 f"    def __init__(self{', ' + sig if sig else ''}):",
                 "        super().__init__()"]
        for k, it in enumerate(first.items):
            if it.ctor is None:
                continue
            lines.append(f'        _add(self, "{it.rel}", {it.ctor.render(_tuple_subs(subs[k]))})')
        lines += ["", "    def forward(self, x):"]
        entry = _entry(first.items, first.path, sc.span)
        lines += ["        " + s for s in self._forward(first.items, first.path, entry)]
        self.classes.append("\n".join(lines))

    # -- forward code
    def _forward(self, items: list[Item], scope: str, entry) -> list[str]:
        names: dict[tuple, str] = {entry: "x"}
        last_use: dict[tuple, int] = {}
        for i, it in enumerate(items):
            for r in it.inputs:
                last_use[r] = i
        out: list[str] = []
        # variable name -> the values it holds: an identity makes its output an alias of its input, and a name is
        # free for reuse only once every value it holds is dead
        live: dict[str, set[tuple]] = {"x": {entry}}
        final = (items[-1].out, 0) if items else entry
        for i, it in enumerate(items):
            ins = [names[r] if r in names else _tuple_ref(names, r) for r in it.inputs]
            for r in it.inputs:  # free dead values for reuse of their names
                if last_use.get(r) == i and r != final and r in names and names[r] in live:
                    held = live[names[r]]
                    held.discard(r)
                    if not held:
                        del live[names[r]]
            if it.kind == "node" and it.op == "identity":
                names[(it.out, 0)] = ins[0]
                live.setdefault(ins[0], set()).add((it.out, 0))
                continue
            var = next(v for v in ("x", "y", "z", *(f"t{j}" for j in range(1, 999))) if v not in live)
            expr = self._expr(it, ins)
            if it.nout > 1:
                out.append(f"{var} = {expr}")
                for p in range(it.nout):
                    names[(it.out, p)] = f"{var}[{p}]"
            else:
                out.append(f"{var} = {expr}")
                names[(it.out, 0)] = var
            live[var] = {(it.out, 0)}
        out.append(f"return {names.get(final, 'x')}")
        return out

    def _expr(self, it: Item, ins: list[str]) -> str:
        if it.kind == "block":
            return f"{_access(it.rel)}({ins[0]})"
        expr = _inline(it, ins)
        if expr is not None:
            return expr
        return f"{_access(it.rel)}({', '.join(ins)})"

    # -- the whole file
    def emit(self) -> str:
        instances = self.emit_blocks()
        top = self.items_of("")
        for it in top:
            if it.kind == "block":
                child = instances[it.rel]
                it.ctor = Ctor(child.cls, (), tuple(child.args.items()))
        g = self.g
        model_cls = self._class_name(g.model) if g.model else "Model"
        total = g.total()
        lines = [f"class {model_cls}(nn.Module):",
                 f'    """{g.model}: {total.params:,} parameters, {human(total.macs)} MACs at input '
                 f'{g.input_shape}."""', "",
                 "    def __init__(self):", "        super().__init__()"]
        for it in top:
            if it.ctor is not None:
                lines.append(f'        _add(self, "{it.rel}", {it.ctor.render()})')
        for name in g.order():  # tied tensors (Op.shared): one Parameter under every module that uses it
            for attr, first in (g.attrs(name).get("ties") or {}).items():
                lines.append(f'        self.get_submodule("{name}").{attr} = self.get_submodule("{first}").{attr}')
        if g.init and g.init["scheme"] != "default":
            lines.append("        self._init_weights()")
            lines += ["", *_init_source(g.init, self.used)]
        lines += ["", "    def forward(self, x):"]
        lines += ["        " + s for s in self._forward(top, "", (g.input_node, 0))]
        layer_src = _layer_sources(self.used)
        header = [f'"""{g.model}: standalone PyTorch model generated by archdsl {__version__} from {g.file}.',
                  "",
                  "Edit the spec, not this file. Model parameters: "
                  + (", ".join(f"{k}={arch_fmt(v)}" for k, v in g.params.items()) or "none") + ".",
                  f"Parameters {total.params:,}; MACs {total.macs:,} ({human(total.macs)}) "
                  f"at input {g.input_shape}.",
                  '"""', "", "import torch", "import torch.nn.functional as F", "from torch import nn", "", "", ""]
        helpers = [_CONTAINER_SRC]
        body = "\n\n\n".join([*layer_src, *helpers, *self.classes, "\n".join(lines)])
        footer = f"\n\n\ndef model() -> {model_cls}:\n    return {model_cls}()\n"
        return "\n".join(header) + body + footer


_CONTAINER_SRC = '''class Container(nn.Module):
    """A named group of layers (a stage, a loop iteration); indexable: self.stages[2]."""

    def __getitem__(self, key):
        return self._modules[str(key)]


def _add(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register `module` at dotted `path` below `root`, creating Containers on the way."""
    *parents, last = path.split(".")
    for p in parents:
        if p not in root._modules:
            root.add_module(p, Container())
        root = root._modules[p]
    root.add_module(last, module)'''


def _init_source(init: dict, used: dict[str, type]) -> list[str]:
    """A method re-initialising weights exactly as archdsl.codegen.init.apply_init does."""
    kinds = ["nn.Conv1d", "nn.Conv2d", "nn.Linear", *(c for c in ("DCLS", "FFTConv") if c in used)]
    body = ["    @torch.no_grad()", "    def _init_weights(self) -> None:",
            f'        """init({init["scheme"]!r}, std={init["std"]!r}, head_scale={init["head_scale"]!r})."""',
            "        last = None",
            "        for m in self.modules():",
            f"            if not isinstance(m, ({', '.join(kinds)})):",
            "                continue"]
    if init["scheme"] == "trunc_normal":
        body.append(f"            nn.init.trunc_normal_(m.weight, std={init['std']!r}, a=-2.0, b=2.0)")
    else:
        body += ["            if isinstance(m, nn.Linear):", "                nn.init.normal_(m.weight, 0.0, 0.01)",
                 "            else:",
                 '                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")']
    body += ['            if getattr(m, "bias", None) is not None:', "                nn.init.zeros_(m.bias)",
             "            if isinstance(m, nn.Linear):", "                last = m"]
    if init["head_scale"] != 1.0:
        body += ["        if last is not None:", f"            last.weight.mul_({init['head_scale']!r})",
                 "            if last.bias is not None:", f"                last.bias.mul_({init['head_scale']!r})"]
    return body


def _inline(it: Item, ins: list[str]) -> str | None:
    """The node written inline in forward() (the op's `source`, e.g. `a0 + a1`), or None: a module call."""
    if it.kind != "node":
        return None
    return registry.get(it.op).source(it.params, list(it.in_shapes), ins)


def _inline_key(it: Item):
    return _inline(it, [f"a{i}" for i in range(len(it.inputs))])


def _nout(shape) -> int:
    return len(shape) if isinstance(shape, tuple) else 1


def _rel(name: str, scope: str) -> str:
    return name[len(scope) + 1:] if scope else name


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a else b


def _inside(name: str, scope: str) -> bool:
    return name == scope or name.startswith(scope + ".")


def _rel_ref(r, scope):
    return ((_rel(r[0], scope) if _inside(r[0], scope) else "<in>"), r[1])


def _entry(items: list[Item], scope: str, span) -> tuple:
    """The value from outside the block instance `scope` that its items read (the block's input)."""
    for it in items:
        for r in it.inputs:
            if not _inside(r[0], scope):
                return r
    raise Unsupported(f"{span}: block instance {scope} reads no input (cannot write it as a class)")


def _tuple_ref(names, r):
    raise Unsupported(f"value {r} used before it is defined")


def _access(rel: str) -> str:
    """Python for the submodule at `rel` below self: self.stages[2].blocks[0]. Indexing only below the first
    segment: those parents are Containers; the class itself (a block's, the model's) is a plain nn.Module, so its
    unnamed layer "2" is getattr(self, '2')."""
    out = "self"
    for i, seg in enumerate(rel.split(".")):
        if seg.isdigit() and i > 0:
            out += f"[{seg}]"
        elif seg.isidentifier() and not keyword.iskeyword(seg):
            out += f".{seg}"
        else:
            out = f"getattr({out}, {seg!r})"
    return out


def _ident(s: str) -> str:
    s = re.sub(r"\W", "_", s)
    if not s or s[0].isdigit():
        s = "v_" + s
    return s + "_" if keyword.iskeyword(s) else s


def _fit(vals: list, decls: list[dict]) -> str | None:
    """An expression over declared block parameters reproducing `vals` for every instance, or None."""
    if not decls or not all(decls):
        return None
    if all(isinstance(v, tuple) for v in vals) and len({len(v) for v in vals}) == 1:
        parts = [_fit([v[i] for v in vals], decls) for i in range(len(vals[0]))]
        if all(p is not None for p in parts):
            return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        return None
    names = [k for k in decls[0] if all(k in d for d in decls)]
    for k in names:
        ps = [d[k] for d in decls]
        if all(type(p) is type(v) and p == v for p, v in zip(ps, vals)):
            return k
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        for k in names:
            ps = [d[k] for d in decls]
            if not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in ps):
                continue
            if all(v % p == 0 for p, v in zip(ps, vals)) and len({v // p for p, v in zip(ps, vals)}) == 1:
                return f"{vals[0] // ps[0]} * {k}"
            if all(p % v == 0 for p, v in zip(ps, vals) if v) and all(vals) and \
                    len({p // v for p, v in zip(ps, vals)}) == 1:
                return f"{k} // {ps[0] // vals[0]}"
    return None


def _names_in(expr: str) -> list[str]:
    return [t for t in re.findall(r"[A-Za-z_]\w*", expr)]


def _tuple_subs(subs: dict) -> dict:
    return {tuple(k): v for k, v in subs.items()}


def _layer_sources(used: dict[str, type]) -> list[str]:
    """Source of the layer classes `used` (name -> class) and of the classes and functions of their modules they
    refer to, each after what it needs (a base class before its subclass), undecorated. The classes live in the
    op families' torch halves (archdsl/ops/<family>_nn.py) or in any module of a user's own: each is copied
    from its module's source file."""
    out: dict[str, str] = {}
    visiting: set[str] = set()

    def visit(name: str, obj) -> None:
        if name in out or name in visiting:
            return
        visiting.add(name)
        try:
            src = inspect.getsource(obj)
        except (OSError, TypeError) as e:
            raise Unsupported(f"cannot write {name} as source: `archdsl compile` copies each layer class from its "
                              f"module's file, and the source of {obj.__module__}.{name} cannot be read ({e})") \
                from None
        src = "\n".join(ln for ln in src.rstrip().splitlines() if ln.strip() != "@recorded")
        scope = vars(inspect.getmodule(obj))
        for ref in dict.fromkeys(re.findall(r"\b[A-Za-z_]\w*\b", src)):
            dep = scope.get(ref)
            if ref != name and _emitted_helper(dep):
                visit(ref, dep)
        visiting.discard(name)
        out[name] = src

    for name, cls in sorted(used.items(), key=lambda kv: (kv[1].__module__, _line(kv[1]), kv[0])):
        visit(name, cls)
    return list(out.values())


def _emitted_helper(obj) -> bool:
    """A class or function a layer class refers to that the standalone file must define too: one defined in a
    module of its own (an op family's torch half, a user's layer module), not torch's, not `recorded`."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__name__ == "recorded":
        return False
    mod = getattr(obj, "__module__", "") or ""
    return not (mod == "builtins" or mod.split(".")[0] in ("torch", "typing", "collections", "dataclasses"))


def _line(obj) -> int:
    try:
        return inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return 0


def emit_source(g: ArchGraph) -> str:
    """Standalone PyTorch source for a checked graph."""
    return Emitter(g).emit()
