"""Stage 2: AST -> ArchGraph. Runs the program (blocks, loops, conditions, forms) and emits operator nodes.

Takes: a parsed `Program` (its root file's `fix` lines act as overrides that `--set` wins over), overrides
(`--set name=value`) and an optional input shape. Returns: an `ArchGraph` whose nodes carry raw (unvalidated)
op parameters and their source spans; `archdsl.check` validates parameters and infers shapes. Every mistake
found is collected; `ArchError` lists them all.

Naming: each layer statement gets a segment — its `name:` or its position among the layer statements of
its body. A body holding a single unnamed layer statement adds no segment. Loops add the iteration index.
"""

from __future__ import annotations

import difflib
import math
from collections import ChainMap
from dataclasses import dataclass
from typing import Any

from . import limits
from . import syntax as S
from .errors import ArchError, Collector, Diagnostic, Span, did_you_mean
from .interp import ChoiceTable, EvalError, Evaluator, builtin_names, fmt, type_name
from .ir import ArchGraph, Node, Ref, Scope, join
from .ops import registry
from .program import Program

FORMS = ("seq", "residual", "parallel", "split")
MERGES = ("add", "concat", "mul")
TYPES = ("int", "float", "bool", "str", "list", "any")
# PyTorch-style keyword names people write out of habit -> archdsl's names (for "did you mean").
_PARAM_ALIASES = {"kernel": "k", "kernel_size": "k", "stride": "s", "padding": "pad", "dilation": "d",
                  "out_channels": "out", "out_features": "out", "channels": "out", "group": "groups"}


class _Abort(Exception):
    """Stops elaboration of the current statement after its error was recorded."""


class _Stop(Exception):
    """Stops the whole elaboration after a resource limit was hit and recorded. Unlike _Abort it is not caught
    per statement: carrying on after the limit can take exponential time (a block that calls itself twice)."""


@dataclass(frozen=True)
class Frame:
    env: ChainMap
    file: str  # module whose definitions are visible
    notes: tuple[str, ...]  # call chain, innermost last
    depth: int
    model_top: bool = False


class Elaborator:
    def __init__(self, program: Program, overrides: dict[str, Any] | None = None,
                 input_shape: tuple[int, int, int] | None = None, strict_overrides: bool = True,
                 sampler=None):
        self.program = program
        self.overrides = dict(overrides or {})
        self.input_shape = input_shape
        self.strict_overrides = strict_overrides
        self.col = Collector()
        self.fixes = self._collect_fixes()  # the root file's `fix` lines: name -> (statement, value)
        # --set wins over a fix line of the same name (re-opening a concrete file to try a variant)
        self.values = {**{k: v for k, (_, v) in self.fixes.items()}, **self.overrides}
        fixed = {k: f.value.span for k, (f, _) in self.fixes.items() if k not in self.overrides}
        self.choices = ChoiceTable(overrides=self.values, sampler=sampler, fixed=fixed)
        self.ev = Evaluator(self.choices)
        self.graph = ArchGraph()
        self.namespaces = {f: self._namespace(f) for f in program.modules}
        self._layers_started = False
        self._no_input_reported = False
        self._containers: dict[str, str] = {}  # path prefix -> first node under it
        self._steps = 0  # loop iterations and block calls so far (limits.MAX_STEPS)

    # ------------------------------------------------------------ definitions and namespaces

    def _namespace(self, file: str) -> dict[str, tuple[S.Def, str]]:
        mod = self.program.modules[file]
        ns: dict[str, tuple[S.Def, str]] = {}
        for d in mod.defs:
            if d.name in ns:
                self.col.add(d.name_span, f"'{d.name}' is defined twice (first at {ns[d.name][0].name_span})",
                             "rename one of the two definitions, or delete one")
            elif d.name in FORMS or registry.get(d.name) is not None:
                self.col.add(d.name_span, f"'{d.name}' is a built-in {'form' if d.name in FORMS else 'op'}",
                             "choose another name for the block")
            else:
                ns[d.name] = (d, file)
        for imp in mod.imports:
            target = self.program.links.get((file, imp.path))
            if target is None or target not in self.program.modules:
                continue
            for d in self.program.modules[target].defs:
                key = f"{imp.alias}.{d.name}" if imp.alias else d.name
                if key in ns and ns[key][1] != target:
                    self.col.add(imp.span, f"import of '{key}' clashes with the definition at {ns[key][0].name_span}",
                                 "import the file with an alias: import \"...\" as lib")
                    continue
                ns.setdefault(key, (d, target))
        return ns

    def _collect_fixes(self) -> dict[str, tuple[S.Fix, Any]]:
        """The `fix` lines of the checked file, evaluated. A fix in an imported file is an error: only the checked
        file's fixes apply (a library must not pin the choices of the specs that import it)."""
        root = self.program.root
        for mod in self.program.modules.values():
            if mod is root:
                continue
            for f in mod.fixes:
                self.col.add(f.span, f"fix {fmt(f.name)} is in an imported file: only the checked file's fixes apply",
                             f"move it to the file being checked ({root.file}), or delete it")
        out: dict[str, tuple[S.Fix, Any]] = {}
        for f in root.fixes:
            if f.name in out:
                self.col.add(f.name_span, f"{fmt(f.name)} is fixed twice (first at {out[f.name][0].span})",
                             "delete one of the two fix lines")
                continue
            try:
                out[f.name] = (f, fix_value(f))
            except EvalError as err:
                self._eval_error(err, ())
        return out

    def select_model(self, name: str | None) -> S.Def:
        models = [d for d in self.program.root.defs if d.kind == "model"]
        if name is not None:
            for d in models:
                if d.name == name:
                    return d
            raise ArchError([Diagnostic(Span(self.program.root.file, 1, 1, 1, 2),
                                        f"no model named '{name}'{did_you_mean(name, [m.name for m in models])}",
                                        "models in this file: " + (", ".join(m.name for m in models) or "none"))])
        if len(models) == 1:
            return models[0]
        if not models:
            raise ArchError([Diagnostic(Span(self.program.root.file, 1, 1, 1, 2), "this file defines no model",
                                        "add `model name() { input(3, 224, 224) ... }`, or check the file that "
                                        "imports this one")])
        raise ArchError([Diagnostic(models[1].name_span, f"this file defines {len(models)} models",
                                    "choose one with --model: " + ", ".join(m.name for m in models))])

    # ------------------------------------------------------------ entry point

    def run(self, model_name: str | None = None) -> ArchGraph:
        self.col.raise_if_any()
        model = self.select_model(model_name)
        g = self.graph
        g.model, g.file = model.name, self.program.root.file
        frame = Frame(ChainMap({}), self.program.root.file, (), 0, model_top=True)
        self._bind_model_params(model, frame)
        g.params = dict(frame.env.maps[0])
        cur = None
        try:
            cur = self.exec_body(model.body, frame, None, "")
        except (_Abort, _Stop):
            pass
        if g.input_node is None and not self.col.diagnostics:
            self.col.add(model.name_span, f"model '{model.name}' has no input(c, h, w) statement",
                         "start the model body with e.g. input(3, 224, 224)")
        elif cur is not None and cur[0] == g.input_node and not self.col.diagnostics:
            self.col.add(model.name_span, f"model '{model.name}' has no layers")
        g.output = cur
        for e in self.choices.errors:
            self._eval_error(e, ())
        used = self.choices.used_overrides | set(g.params)
        known = sorted(used | set(self.choices.points) | {p.name for p in model.params})
        clean = not self.col.diagnostics  # after an error, the choice points behind it were never met
        if self.strict_overrides:
            for k in self.overrides:
                if k not in used and k not in {p.name for p in model.params}:
                    self.col.add(model.name_span, f"--set {k}: no model parameter or choice is named '{k}'"
                                 f"{did_you_mean(k, known)}", "see `archdsl check --json` for the choices")
        for k, (f, _) in self.fixes.items():
            if clean and k not in used:
                close = difflib.get_close_matches(k, known, n=3, cutoff=0.6)
                self.col.add(f.name_span, f"fix {fmt(k)} names no choice point of model '{model.name}'",
                             "close names: " + ", ".join(fmt(c) for c in close) if close else
                             "a fix names a model parameter or a choice point that checking the model meets; "
                             "`archdsl check --json` lists them")
        g.choices = list(self.choices.points.values())
        self.col.raise_if_any()
        return g

    def _bind_model_params(self, model: S.Def, frame: Frame) -> None:
        names = [p.name for p in model.params]
        for p in model.params:
            if names.count(p.name) > 1:
                self.col.add(p.span, f"parameter '{p.name}' is declared twice")
            if p.name in self.values:
                value = self.values[p.name]
                self.choices.used_overrides.add(p.name)
                if p.default is not None and _has_choice(p.default):
                    # a default that is a choice named after the parameter: the override fixes that choice,
                    # so it is checked against the choice's domain
                    fixed = self._eval(p.default, frame, p.name)
                    if p.name in self.choices.points:
                        value = fixed
            elif p.default is not None:
                value = self._eval(p.default, frame, p.name)
            else:
                self.col.add(p.span, f"model parameter '{p.name}' has no default and no --set value",
                             f"pass --set {p.name}=VALUE or give it a default")
                continue
            if value is _ERR:
                continue
            at = self.choices.fixed.get(p.name)
            what = f"model parameter '{p.name}'" + (" (from fix)" if at else " (from --set)" if p.name in self.values
                                                    else "")
            frame.env.maps[0][p.name] = self._typecheck(p, value, frame, what, at)

    # ------------------------------------------------------------ helpers

    def _eval(self, e: S.Expr, frame: Frame, hint: str) -> Any:
        if self.col.diagnostics and _uses_error(e, frame.env):  # (no error yet: no name can hold _ERR)
            return _ERR  # a `let` it reads already failed and was reported: do not cascade
        try:
            return self.ev.eval(e, frame.env, hint)
        except EvalError as err:
            self._eval_error(err, frame.notes)
            return _ERR

    def _eval_error(self, err: EvalError, notes: tuple[str, ...]) -> None:
        self.col.add(err.span, err.message, err.hint, _notes(notes))

    def _err(self, span: Span, msg: str, frame: Frame, hint: str | None = None) -> None:
        self.col.add(span, msg, hint, _notes(frame.notes))

    def _no_input(self, span: Span, frame: Frame) -> None:
        """Report a layer without input once: every later layer of the model would repeat it."""
        if not self._no_input_reported:
            self._no_input_reported = True
            self._err(span, "no input before this layer", frame, "start the model with input(c, h, w)")

    def _typecheck(self, p: S.Param, value: Any, frame: Frame, what: str, at: Span | None = None) -> Any:
        """Check `value` against p's declared type; `at` is the argument's span at a call site, if any."""
        if p.type is None or value is _ERR:
            return value
        t = p.type
        sub = t
        while sub is not None:  # every level: a known type; only list takes an element type
            if sub.name not in TYPES:
                self._err(sub.span, f"unknown type '{sub.name}'{did_you_mean(sub.name, TYPES)}", frame,
                          "types: " + ", ".join(TYPES))
                return value
            if sub.arg is not None and sub.name != "list":
                self._err(t.span, f"bad type '{t}'", frame, "only list takes an element type: list[int]")
                return value
            sub = sub.arg
        ok, value = _conforms_type(t, value)
        if not ok:
            self._err(at or p.span, f"{what} is declared {t} but got {type_name(value)} {fmt(value)}", frame,
                      f"'{p.name}' is declared at {p.span}" if at else None)
        return value

    def _new_node(self, name: str, op: str, params: dict[str, Any], span: Span, inputs: list[Ref], frame: Frame,
                  arg_spans: dict[str, Span] | None = None, name_span: Span | None = None) -> Ref:
        g = self.graph
        if not name:
            name = op
        clash = name if name in g else next((p for p in _prefixes(name) if p in g), None)
        if clash is None and name in self._containers:
            clash = self._containers[name]
        if clash is not None:
            self._err(name_span or span, f"duplicate name '{name}' (clashes with '{clash}' at {g.node(clash).span})",
                      frame, "give the layer another name")
            raise _Abort
        bad = next((p for p in name.split(".") if p in RESERVED_NAMES or p.startswith("_")), None)
        if bad is not None:
            self._err(name_span or span, f"'{bad}' cannot be a layer name (it is reserved by torch.nn.Module)",
                      frame, "choose another name")
            raise _Abort
        for p in _prefixes(name):
            self._containers.setdefault(p, name)
        if len(g) >= limits.MAX_NODES:
            self._err(span, f"the model has more than {limits.MAX_NODES} operator nodes", frame,
                      "reduce repeat counts (this limit guards against runaway specs)")
            raise _Stop
        g.add(Node(name, op, tuple(params.items()), span, tuple((arg_spans or {}).items()), _notes(frame.notes)),
              inputs)
        return (name, 0)

    # ------------------------------------------------------------ statements

    def exec_body(self, body: S.Body, frame: Frame, cur: Ref | None, scope: str,
                  collapse: bool = True) -> Ref | None:
        frame = Frame(frame.env.new_child(), frame.file, frame.notes, frame.depth, frame.model_top)
        for stmt, seg, name_span in self._layer_segments(body, collapse):
            if seg is None:  # not a layer statement
                self._exec_simple(stmt, frame, scope)
                if isinstance(stmt, S.Input):
                    cur = self._input(stmt, frame) or cur  # a rejected input(...) keeps the data flow going
                continue
            layer = stmt.layer if isinstance(stmt, S.Named) else stmt
            self._layers_started = True
            path = join(scope, seg)
            if name_span is not None and (path in self.graph or path in self._containers):
                first = self.graph.node(path if path in self.graph else self._containers[path])
                self._err(name_span, f"duplicate name '{seg}' (already used at {first.span})", frame,
                          "give the layer another name")
                continue
            try:
                cur = self.exec_layer(layer, frame, cur, join(scope, seg), name_span)
            except _Abort:
                continue  # the error is recorded; go on to report errors of later statements
        return cur

    def _layer_segments(self, body: S.Body, collapse: bool = True):
        """Yield (stmt, segment, name_span); segment None for non-layer statements."""
        layers = [s for s in body.stmts if isinstance(s, S.LAYER_TYPES)]
        collapse = collapse and len(layers) == 1 and not isinstance(layers[0], S.Named)
        ordinal = 0
        for stmt in body.stmts:
            if not isinstance(stmt, S.LAYER_TYPES):
                yield stmt, None, None
                continue
            if isinstance(stmt, S.Named):
                yield stmt, stmt.name, stmt.name_span
            else:
                yield stmt, "" if collapse else str(ordinal), None
            ordinal += 1

    def _exec_simple(self, stmt, frame: Frame, scope: str) -> None:
        if isinstance(stmt, S.Let):
            if stmt.name in frame.env.maps[0]:
                self._err(stmt.span, f"'{stmt.name}' is already defined in this scope", frame,
                          "use another name (bindings cannot be reassigned)")
                return
            frame.env.maps[0][stmt.name] = self._eval(stmt.value, frame, join(scope, stmt.name))
        elif isinstance(stmt, S.Require):
            v = self._eval(stmt.test, frame, scope)
            if v is _ERR:
                return
            if not isinstance(v, bool):
                self._err(stmt.test.span, f"require needs true or false, got {type_name(v)} {fmt(v)}", frame,
                          "write a comparison, e.g. require x % 8 == 0")
            elif not v:
                self._err(stmt.span, "requirement failed" + (f": {stmt.message}" if stmt.message else ""), frame)
        elif isinstance(stmt, S.Scaling):
            self._scaling(stmt, frame)
        elif isinstance(stmt, S.Init):
            self._init(stmt, frame)
        elif isinstance(stmt, S.Input):
            pass  # handled by exec_body (it changes the data flow)

    def exec_layer(self, layer, frame: Frame, cur: Ref | None, path: str, name_span: Span | None) -> Ref | None:
        if isinstance(layer, S.Seq):
            self.graph.scopes.setdefault(path, Scope(path, "seq", "", layer.span))
            return self.exec_body(layer.body, frame, cur, path)
        if isinstance(layer, S.For):
            return self._for(layer, frame, cur, path)
        if isinstance(layer, S.If):
            for test, body in layer.branches:
                v = self._eval(test, frame, path)
                if v is _ERR:
                    raise _Abort
                if not isinstance(v, bool):
                    self._err(test.span, f"if needs true or false, got {type_name(v)} {fmt(v)}", frame,
                              "write a comparison (if x > 0), or declare the parameter as bool")
                    raise _Abort
                if v:
                    return self.exec_body(body, frame, cur, path)
            if layer.orelse is not None:
                return self.exec_body(layer.orelse, frame, cur, path)
            return cur
        return self._call(layer, frame, cur, path, name_span)

    def _for(self, layer: S.For, frame: Frame, cur: Ref | None, path: str) -> Ref | None:
        items = self._eval(layer.iterable, frame, path)
        if items is _ERR:
            raise _Abort
        if not isinstance(items, tuple):
            self._err(layer.iterable.span, f"for needs a list, got {type_name(items)} {fmt(items)}", frame,
                      "use range(n) to repeat n times")
            raise _Abort
        self.graph.scopes.setdefault(path, Scope(path, "for", "", layer.span))
        for i, item in enumerate(items):
            self._step(layer.span, frame)
            env = frame.env.new_child()
            if len(layer.names) == 1:
                env[layer.names[0]] = item
            else:
                if not isinstance(item, tuple) or len(item) != len(layer.names):
                    self._err(layer.iterable.span, f"cannot unpack {fmt(item)} into {len(layer.names)} names", frame)
                    raise _Abort
                env.update(zip(layer.names, item))
            sub = Frame(env, frame.file, frame.notes, frame.depth, frame.model_top)
            cur = self.exec_body(layer.body, sub, cur, join(path, str(i)))
        return cur

    # ------------------------------------------------------------ calls: forms, blocks, ops

    def _call(self, layer: S.LayerCall, frame: Frame, cur: Ref | None, path: str, name_span: Span | None):
        call = layer.call
        if call.name in FORMS:
            if layer.body is None:
                self._err(call.name_span, f"{call.name}(...) needs a {{ body }}", frame)
                raise _Abort
            if cur is None:
                self._no_input(call.name_span, frame)
                raise _Abort
            self.graph.scopes.setdefault(path, Scope(path, "form", call.name, call.span))
            return getattr(self, "_form_" + call.name)(call, layer.body, frame, cur, path)
        ns = self.namespaces[frame.file]
        if call.name in ns:
            if layer.body is not None:
                self._err(layer.body.span, f"block '{call.name}' takes no {{ body }}", frame)
            return self._block(ns[call.name], call, frame, cur, path)
        op = registry.get(call.name)
        if op is None or not op.user:
            known = [*FORMS, *ns, *registry.user_op_names()]
            hint = None
            if op is not None:
                hint = f"'{call.name}' nodes are made by forms: use parallel(merge=\"{call.name}\") {{ ... }}" \
                    if call.name in MERGES else f"'{call.name}' is internal"
            elif call.name in builtin_names():
                hint = f"'{call.name}' is a function for values; use it inside an expression (let x = ...)"
            self._err(call.name_span, f"unknown op '{call.name}'{did_you_mean(call.name, known)}", frame, hint)
            if cur is None:
                raise _Abort
            return self._new_node(path, "<error>", {}, call.name_span, [cur], frame, name_span=name_span)
        if layer.body is not None:
            self._err(layer.body.span, f"op '{call.name}' takes no {{ body }}", frame,
                      "if the { ... } is a separate group of layers, end the previous statement with ';'")
        if cur is None:
            self._no_input(call.name_span, frame)
            raise _Abort
        params, spans = self._op_args(op, call, frame, path)
        return self._new_node(path, call.name, params, call.name_span, [cur], frame, spans, name_span)

    def _op_args(self, op, call: S.Call, frame: Frame, path: str) -> tuple[dict, dict]:
        fields = list(op.Params.model_fields)
        params: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for i, a in enumerate(call.positional):
            if i >= len(fields):
                self._err(a.span, f"{op.name} takes at most {len(fields)} positional arguments "
                          f"({', '.join(fields) or 'none'}), got {len(call.positional)}", frame,
                          "pass the later parameters by name, e.g. " + (f"{fields[-1]}=..." if fields else
                                                                         f"{op.name}()"))
                break
            params[fields[i]], spans[fields[i]] = a, a.span
        for a in call.keywords:
            if a.name not in fields:
                alias = _PARAM_ALIASES.get(a.name)
                dym = f" (did you mean '{alias}'?)" if alias in fields else did_you_mean(a.name, fields)
                self._err(a.span, f"{op.name} has no parameter '{a.name}'{dym}", frame,
                          f"{op.name} takes: {', '.join(fields) or 'no parameters'}")
                continue
            if a.name in params:
                self._err(a.span, f"parameter '{a.name}' of {op.name} is given twice", frame)
                continue
            params[a.name], spans[a.name] = a, a.span
        values = {}
        for k, a in params.items():
            v = self._eval(a.value, frame, join(path or op.name, k))
            if v is not _ERR:
                values[k] = v
        return values, spans

    def _step(self, span: Span, frame: Frame) -> None:
        self._steps += 1
        if self._steps > limits.MAX_STEPS:
            self._err(span, f"the model runs more than {limits.MAX_STEPS} loop iterations and block calls", frame,
                      "reduce repeat counts (this limit guards against runaway specs)")
            raise _Stop

    def _block(self, entry: tuple[S.Def, str], call: S.Call, frame: Frame, cur: Ref | None, path: str):
        d, file = entry
        self._step(call.name_span, frame)
        if frame.depth + 1 > limits.MAX_CALL_DEPTH:
            self._err(call.name_span, f"calls of block '{d.name}' nest deeper than {limits.MAX_CALL_DEPTH} levels "
                      f"(recursion that does not terminate?)", frame,
                      "make the recursion stop with an if on a parameter that shrinks at each call")
            raise _Stop
        env: dict[str, Any] = {}
        pnames = [p.name for p in d.params]
        given: dict[str, S.Arg] = {}
        for i, a in enumerate(call.positional):
            if i >= len(pnames):
                self._err(a.span, f"block '{d.name}' takes {len(pnames)} parameter{'s' * (len(pnames) != 1)}"
                          f" ({', '.join(pnames) or 'none'}), got {len(call.positional)} positional arguments",
                          frame, f"'{d.name}' is defined at {d.name_span}")
                break
            given[pnames[i]] = a
        for a in call.keywords:
            if a.name not in pnames:
                self._err(a.span, f"block '{d.name}' has no parameter '{a.name}'{did_you_mean(a.name, pnames)}",
                          frame, f"'{d.name}' takes: {', '.join(pnames) or 'no parameters'}")
            elif a.name in given:
                self._err(a.span, f"parameter '{a.name}' of '{d.name}' is given twice", frame)
            else:
                given[a.name] = a
        note = f"in {d.kind} '{d.name}' called at {call.name_span}"
        inner = Frame(ChainMap(env), file, (*frame.notes, note), frame.depth + 1)
        for p in d.params:
            if p.name in given:
                v = self._eval(given[p.name].value, frame, join(path, p.name))
            elif p.default is not None:
                v = self._eval(p.default, inner, join(path, p.name))
            else:
                self._err(call.name_span, f"block '{d.name}' needs parameter '{p.name}'", frame,
                          f"'{d.name}' is defined at {d.name_span}")
                raise _Abort
            if v is _ERR:
                raise _Abort
            env[p.name] = self._typecheck(p, v, frame, f"parameter '{p.name}' of '{d.name}'",
                                          given[p.name].span if p.name in given else None)
        self.graph.scopes.setdefault(path, Scope(path, "block", d.name, call.span, tuple(env.items())))
        # A model called as a block drops its input/scaling statements; a block with them is an error.
        stmts = d.body.stmts if d.kind == "block" else tuple(s for s in d.body.stmts
                                                             if not isinstance(s, (S.Input, S.Scaling, S.Init)))
        body = S.Body(stmts, d.body.span)
        return self.exec_body(body, inner, cur, path)

    # ------------------------------------------------------------ forms

    def _form_args(self, call: S.Call, frame: Frame, path: str, spec: dict[str, tuple]) -> dict[str, Any]:
        """spec: name -> (default, allowed types)."""
        names = list(spec)
        out = {k: v[0] for k, v in spec.items()}
        for i, a in enumerate(call.args):
            key = a.name if a.name is not None else (names[i] if i < len(names) else None)
            if key is None:
                self._err(a.span, f"{call.name} takes at most {len(names)} arguments", frame)
                continue
            if key not in spec:
                self._err(a.span, f"{call.name} has no parameter '{key}'{did_you_mean(key, names)}", frame,
                          f"{call.name} takes: {', '.join(names) or 'no parameters'}")
                continue
            v = self._eval(a.value, frame, join(path, key))
            if v is _ERR:
                raise _Abort
            ok = any(_conforms(t, v)[0] for t in spec[key][1])
            if not ok:
                self._err(a.span, f"{call.name} {key}= expects {' or '.join(spec[key][1])}, got {type_name(v)} "
                          f"{fmt(v)}", frame)
                raise _Abort
            out[key] = float(v) if spec[key][1] == ("float",) else v
        return out

    def _form_seq(self, call, body, frame, cur, path):
        self._form_args(call, frame, path, {})
        return self.exec_body(body, frame, cur, path)

    def _form_residual(self, call, body, frame, cur, path):
        a = self._form_args(call, frame, path, {"layer_scale": (None, ("float", "none")),
                                                 "drop_path": (0.0, ("float",))})
        # No collapse: the form adds its own nodes (add, layer_scale) beside the body's.
        out = self.exec_body(body, frame, cur, path, collapse=False)
        if out == cur:
            self._err(call.name_span, "residual body is empty", frame)
            raise _Abort
        if a["layer_scale"] is not None:
            out = self._new_node(join(path, "layer_scale"), "layer_scale", {"init": float(a["layer_scale"])},
                                 call.name_span, [out], frame, {"init": _arg_span(call, "layer_scale")})
        if a["drop_path"]:
            out = self._new_node(join(path, "drop_path"), "drop_path", {"p": float(a["drop_path"])},
                                 call.name_span, [out], frame, {"p": _arg_span(call, "drop_path")})
        return self._new_node(join(path, "add"), "add", {}, call.name_span, [out, cur], frame)

    def _branches(self, body: S.Body, frame: Frame, starts, path: str) -> list[Ref]:
        """Run each layer statement of `body` as one branch; starts(i) gives branch i's input."""
        frame = Frame(frame.env.new_child(), frame.file, frame.notes, frame.depth, frame.model_top)
        outs: list[Ref] = []
        for stmt, seg, name_span in self._layer_segments(body, collapse=False):
            if seg is None:
                if isinstance(stmt, (S.Input, S.Scaling, S.Init)):
                    self._err(stmt.span, "input/scaling statements belong at the top of a model body", frame)
                else:
                    self._exec_simple(stmt, frame, path)
                continue
            layer = stmt.layer if isinstance(stmt, S.Named) else stmt
            bpath = join(path, seg)
            start = starts(len(outs))
            out = self.exec_layer(layer, frame, start, bpath, name_span)
            if out == start:  # empty branch: an identity node keeps every branch distinct in the graph
                out = self._new_node(bpath, "identity", {},
                                     getattr(layer, "span", body.span), [start], frame)
            outs.append(out)
        return outs

    def _form_parallel(self, call, body, frame, cur, path):
        a = self._form_args(call, frame, path, {"merge": ("add", ("str",))})
        if a["merge"] not in MERGES:
            self._err(call.span, f"parallel merge must be one of {', '.join(MERGES)}, got {fmt(a['merge'])}", frame)
            raise _Abort
        outs = self._branches(body, frame, lambda i: cur, path)
        if len(outs) < 2:
            self._err(call.name_span, f"parallel needs at least two branches, got {len(outs)}", frame,
                      "each layer statement in the body is one branch; group a chain with { ... }")
            raise _Abort
        return self._new_node(join(path, a["merge"]), a["merge"], {}, call.name_span, outs, frame)

    def _form_split(self, call, body, frame, cur, path):
        a = self._form_args(call, frame, path, {"sizes": (None, ("list", "none")), "ratios": (None, ("list", "none")),
                                                 "remainder": ("last", ("str",)), "merge": ("concat", ("str",))})
        if a["merge"] not in MERGES:
            self._err(call.span, f"split merge must be one of {', '.join(MERGES)}, got {fmt(a['merge'])}", frame)
            raise _Abort
        n_branches = sum(isinstance(s, S.LAYER_TYPES) for s in body.stmts)
        given = a["sizes"] if a["sizes"] is not None else a["ratios"]
        if given is not None and len(given) != n_branches:
            what = "sizes" if a["sizes"] is not None else "ratios"
            self._err(call.span, f"split has {len(given)} {what} but {n_branches} branches", frame,
                      "each layer statement in the body is one branch; use identity() for a pass-through branch")
            raise _Abort
        params = {k: a[k] for k in ("sizes", "ratios") if a[k] is not None}
        if a["ratios"] is not None:
            params["ratios"] = tuple(float(r) if isinstance(r, int) and not isinstance(r, bool) else r
                                     for r in a["ratios"])
        params["remainder"] = a["remainder"]
        split = self._new_node(join(path, "split"), "split", params, call.name_span, [cur], frame,
                               {k: next((x.span for x in call.args if x.name == k), call.span) for k in params})
        outs = self._branches(body, frame, lambda i: (split[0], i), path)
        return self._new_node(join(path, a["merge"]), a["merge"], {}, call.name_span, outs, frame)

    # ------------------------------------------------------------ input and scaling

    def _input(self, stmt: S.Input, frame: Frame) -> Ref | None:
        if not frame.model_top or frame.depth != 0:
            self._err(stmt.span, "input(...) may only appear at the top of a model body", frame)
            return None
        if self.graph.input_node is not None:
            self._err(stmt.span, "the model declares input(...) twice", frame)
            return None
        if self._layers_started:
            self._err(stmt.span, "input(...) must come before the first layer", frame)
        fields = ["c", "h", "w"]
        vals: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for i, a in enumerate(stmt.args):
            key = a.name if a.name is not None else (fields[i] if i < 3 else None)
            if key not in fields:
                self._err(a.span, "input takes c, h, w", frame, "input(3, 224, 224)")
                continue
            v = self._eval(a.value, frame, key)
            if v is not _ERR:
                vals[key], spans[key] = v, a.span
        if self.input_shape is not None:
            vals = dict(zip(fields, self.input_shape))
        node = self._new_node("input", "input", vals, stmt.span, [], frame, spans)
        self.graph.input_node = node[0]
        return node

    def _init(self, stmt: S.Init, frame: Frame) -> None:
        from .ir import INIT_SCHEMES as SCHEMES

        if not frame.model_top or frame.depth != 0:
            self._err(stmt.span, "init(...) may only appear at the top of a model body", frame)
            return
        if self.graph.init is not None:
            self._err(stmt.span, "the model declares init(...) twice", frame)
            return
        names = ["scheme", "std", "head_scale"]
        out: dict[str, Any] = {"scheme": None, "std": 0.02, "head_scale": 1.0}
        reported = False
        for i, a in enumerate(stmt.args):
            key = a.name if a.name is not None else (names[i] if i < len(names) else None)
            if key not in names:
                self._err(a.span, f"init takes {', '.join(names)}" + (did_you_mean(key, names) if key else ""),
                          frame, 'e.g. init("trunc_normal", std=0.02)')
                continue
            v = self._eval(a.value, frame, join("init", key))
            if v is _ERR:
                continue
            if key == "scheme" and v not in SCHEMES:
                self._err(a.span, f"unknown init scheme {fmt(v)}{did_you_mean(str(v), SCHEMES)}", frame,
                          "schemes: " + ", ".join(SCHEMES))
                reported = True
                continue
            if key != "scheme" and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                self._err(a.span, f"init {key}= needs a positive number, got {fmt(v)}", frame)
                continue
            out[key] = v if key == "scheme" else float(v)
        if out["scheme"] is None:
            if reported:
                return
            self._err(stmt.span, "init(...) needs a scheme", frame, "schemes: " + ", ".join(SCHEMES))
            return
        self.graph.init = out

    def _scaling(self, stmt: S.Scaling, frame: Frame) -> None:
        if not frame.model_top or frame.depth != 0:
            self._err(stmt.span, "scaling(...) may only appear at the top of a model body", frame)
            return
        if self._layers_started or self.graph.input_node is not None or self.graph.scaling is not None:
            self._err(stmt.span, "scaling(...) must come first in the model body, once", frame,
                      "it rescales parameters before anything uses them")
            return
        spec = {"s": 1.0, "d": 1.0, "w": 1.0, "r": 1.0, "depth": None, "width": None, "resolution": None,
                "w_round": 8, "r_round": 4}
        args: dict[str, Any] = {}
        targets: dict[str, list[S.Var]] = {}
        for a in stmt.args:
            if a.name is None or a.name not in spec:
                self._err(a.span, "scaling takes s, d, w, r, depth, width, resolution, w_round, r_round "
                          "as keyword arguments" + (did_you_mean(a.name, spec) if a.name else ""), frame)
                continue
            if a.name in ("depth", "width", "resolution"):
                names = a.value.items if isinstance(a.value, S.ListExpr) else (a.value,)
                if not all(isinstance(n, S.Var) for n in names):
                    self._err(a.value.span, f"scaling {a.name}= must name parameters, e.g. {a.name}=depths or "
                              f"{a.name}=[stem, dims]", frame)
                    continue
                targets[a.name] = list(names)
                continue
            v = self._eval(a.value, frame, join("scaling", a.name))
            if v is _ERR:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                self._err(a.value.span, f"scaling {a.name}= needs a number, got {type_name(v)} {fmt(v)}", frame)
                continue
            args[a.name] = v
        p = {**spec, **args}
        if p["s"] <= 0 or min(p["d"], p["w"], p["r"]) < 0 or p["d"] + p["w"] + p["r"] <= 0:
            self._err(stmt.span, f"scaling needs s > 0 and non-negative exponents with a positive sum, got "
                      f"s={p['s']}, d={p['d']}, w={p['w']}, r={p['r']}", frame)
            return
        if int(p["w_round"]) <= 0 or int(p["r_round"]) <= 0:
            self._err(stmt.span, "w_round and r_round must be positive", frame)
            return
        # pycls fast compound scaling: d * w^2 * r^2 = s.
        total = p["d"] + p["w"] + p["r"]
        fd = p["s"] ** (p["d"] / total)
        fw = p["s"] ** (p["w"] / total / 2)
        fr = p["s"] ** (p["r"] / total / 2)
        wr, rr = int(p["w_round"]), int(p["r_round"])
        rules = {"depth": lambda x: _bounded(max(1, round(x * fd))),
                 "width": lambda x: _bounded(max(1, round(x * fw / wr)) * wr),
                 "resolution": lambda x: _bounded(max(rr, round(x * fr / rr) * rr))}
        changed = {}
        for kind, names in targets.items():
            for var in names:
                if var.name not in frame.env:
                    self._err(var.span, f"undefined name '{var.name}'{did_you_mean(var.name, frame.env.keys())}", frame)
                    continue
                old = frame.env[var.name]
                try:
                    new = _map_ints(old, rules[kind])
                except TypeError:
                    self._err(var.span, f"scaling {kind}= needs an int or a list of ints, '{var.name}' is "
                              f"{type_name(old)} {fmt(old)}", frame)
                    continue
                except OverflowError:  # round(inf), or a result past MAX_INT
                    self._err(var.span, f"scaling {kind}= makes '{var.name}' too large", frame)
                    continue
                next(m for m in frame.env.maps if var.name in m)[var.name] = new  # where it is bound
                changed[var.name] = (old, new)
        if not targets:
            self._err(stmt.span, "scaling names nothing to scale", frame, "add depth=, width= and/or resolution=")
        self.graph.scaling = {"s": p["s"], "d": p["d"], "w": p["w"], "r": p["r"],
                              "factors": {"depth": fd, "width": fw, "resolution": fr},
                              "changed": {k: {"from": v[0], "to": v[1]} for k, v in changed.items()}}
        self.graph.params.update({k: v[1] for k, v in changed.items() if k in self.graph.params})


def _arg_span(call: S.Call, name: str) -> Span:
    """The span of keyword argument `name` of `call` (for carets on a form's arguments), else the call's name."""
    return next((a.span for a in call.args if a.name == name), call.name_span)


def _has_choice(e) -> bool:
    """Whether an expression calls choice / int_range / float_range anywhere."""
    import dataclasses

    from .interp import CHOICE_FUNCTIONS

    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, S.Call) and x.name in CHOICE_FUNCTIONS:
            return True
        if dataclasses.is_dataclass(x):
            for f in dataclasses.fields(x):
                v = getattr(x, f.name)
                stack.extend(v if isinstance(v, tuple) else [v])
    return False


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# Attribute names of torch.nn.Module: a layer so named could not become a submodule.
RESERVED_NAMES = frozenset(
    "T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda double "
    "dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half "
    "ipu load_state_dict modules mtia named_buffers named_children named_modules named_parameters parameters "
    "register_backward_hook register_buffer register_forward_hook register_forward_pre_hook "
    "register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook "
    "register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook "
    "register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to "
    "to_empty train type xpu zero_grad training".split())


class _ErrType:
    def __repr__(self) -> str:
        return "<error>"


_ERR = _ErrType()


def _notes(chain: tuple[str, ...]) -> tuple[str, ...]:
    """The call chain, innermost first, shortened for deep recursion."""
    notes = tuple(reversed(chain))
    if len(notes) > 6:
        notes = notes[:3] + (f"... {len(notes) - 5} more calls ...",) + notes[-2:]
    return notes


def _conforms_type(t: S.TypeRef, v: Any) -> tuple[bool, Any]:
    """Whether v has type t (list[...] checked element by element); ints widen to float where declared."""
    ok, v = _conforms(t.name, v)
    if ok and t.arg is not None:
        items = [_conforms_type(t.arg, x) for x in v]
        ok = all(i[0] for i in items)
        v = tuple(i[1] for i in items) if ok else v
    return ok, v


def _conforms(t: str, v: Any) -> tuple[bool, Any]:
    if t == "any":
        return True, v
    if t == "float" and isinstance(v, int) and not isinstance(v, bool):
        return True, float(v)
    if t == "float" and isinstance(v, float):
        return not (math.isnan(v) or math.isinf(v)), v
    return type_name(v) == t, v


def _uses_error(e: S.Expr, env) -> bool:
    """Whether expression `e` reads a name bound to the error marker (a `let` whose value failed)."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, S.Var):
            if env.get(x.name) is _ERR:
                return True
        elif isinstance(x, (S.ListExpr, S.Index, S.Slice, S.BinOp, S.Unary, S.Cond, S.Call, S.Arg)):
            for v in vars(x).values():
                if isinstance(v, tuple):
                    stack.extend(v)
                elif v is not None and not isinstance(v, (str, Span)):
                    stack.append(v)
    return False


def _bounded(x: int) -> int:
    """A scaled integer, or OverflowError past the interpreter's integer limit."""
    if abs(x) > limits.MAX_INT:
        raise OverflowError
    return x


def _map_ints(v: Any, fn):
    if isinstance(v, bool):
        raise TypeError
    if isinstance(v, int):
        return fn(v)
    if isinstance(v, tuple):
        return tuple(_map_ints(x, fn) for x in v)
    raise TypeError


def fix_value(f: S.Fix) -> Any:
    """The value of a `fix` line. Its grammar allows literals only, so no name can be read and no choice made;
    evaluating it can fail only on a resource limit (a list too long). Raises EvalError."""
    return Evaluator(ChoiceTable()).eval(f.value, ChainMap(), f.name)
