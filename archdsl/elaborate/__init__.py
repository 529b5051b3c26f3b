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
from collections import ChainMap
from typing import Any

from .. import limits
from .. import syntax as S
from ..errors import Collector, Span, did_you_mean
from ..interp import ChoiceTable, EvalError, Evaluator, builtin_names, fmt, type_name
from ..ir import ArchGraph, Node, Ref, Scope, join
from ..ops import registry
from ..program import Program
from ..values import WorkExceeded
from .base import (  # noqa: F401 - FORMS, fix_value re-exported
    _ERR,
    _PARAM_ALIASES,
    FORMS,
    MERGES,
    RESERVED_NAMES,
    TYPES,
    Frame,
    _Abort,
    _conforms_type,
    _has_choice,
    _notes,
    _Stop,
    _uses_error,
    fix_value,
)
from .forms import FORM_HANDLERS, Forms
from .model_stmts import ModelStatements
from .namespaces import Namespaces
from .runaway import Repeats

__all__ = ["Elaborator", "FORMS", "SIMPLE_STATEMENTS", "fix_value"]


class Elaborator(Namespaces, Forms, ModelStatements):
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
        self._name_chars = 0  # characters of the layer names made so far (limits.MAX_NAME_CHARS)
        self._repeats = Repeats()  # the loops and repeated block calls running (runaway.py)

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
            if isinstance(err, WorkExceeded):  # carrying on would spend the budget again in every iteration
                raise _Stop from None
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
        # the containers (prefixes) this name opens: a known container has had its own prefixes checked and
        # recorded already (a node and a container never share a name), so the walk up stops at the first one
        opened, end = [], name.rfind(".")
        while end > 0 and name[:end] not in self._containers:
            opened.append(name[:end])
            end = name.rfind(".", 0, end)
        clash = name if name in g else next((p for p in opened if p in g), None)
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
        for p in opened:
            self._containers[p] = name
        self._name_chars += len(name)
        if self._name_chars > limits.MAX_NAME_CHARS:
            self._err(name_span or span, f"the model's layer names have more than {limits.MAX_NAME_CHARS:,} "
                      f"characters in all (this one has {len(name):,})", frame,
                      "shorten the layer names or reduce repeat counts (this limit guards against runaway specs)")
            raise _Stop
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
        rows = self._repeats.calls_in_a_row(body, self.namespaces[frame.file].__contains__)
        for i, (stmt, seg, name_span) in enumerate(self._layer_segments(body, collapse)):
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
                if i not in rows:
                    cur = self.exec_layer(layer, frame, cur, path, name_span)
                    continue
                with self._repeats.running(layer, rows[i]):  # the first of identical block calls in a row
                    start = (self._steps, len(self.graph))
                    cur = self.exec_layer(layer, frame, cur, path, name_span)
                    self._foresee(frame, start)
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
        run = SIMPLE_STATEMENTS.get(type(stmt))
        if run is not None:  # input(...) is handled by exec_body (it changes the data flow)
            run(self, stmt, frame, scope)

    def _let(self, stmt: S.Let, frame: Frame, scope: str) -> None:
        if stmt.name in frame.env.maps[0]:
            self._err(stmt.span, f"'{stmt.name}' is already defined in this scope", frame,
                      "use another name (bindings cannot be reassigned)")
            return
        frame.env.maps[0][stmt.name] = self._eval(stmt.value, frame, join(scope, stmt.name))

    def _require(self, stmt: S.Require, frame: Frame, scope: str) -> None:
        v = self._eval(stmt.test, frame, scope)
        if v is _ERR:
            return
        if not isinstance(v, bool):
            self._err(stmt.test.span, f"require needs true or false, got {type_name(v)} {fmt(v)}", frame,
                      "write a comparison, e.g. require x % 8 == 0")
        elif not v:
            self._err(stmt.span, "requirement failed" + (f": {stmt.message}" if stmt.message else ""), frame)

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
        with self._repeats.running(layer, len(items)):
            return self._iterate(layer, items, frame, cur, path)

    def _iterate(self, layer: S.For, items: tuple, frame: Frame, cur: Ref | None, path: str) -> Ref | None:
        start = (self._steps, len(self.graph))
        for i, item in enumerate(items):
            if i == 1:  # a runaway loop is refused now, not after minutes of elaboration
                self._foresee(frame, start)
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
            return FORM_HANDLERS[call.name](self, call, layer.body, frame, cur, path)
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

    def _foresee(self, frame: Frame, start: tuple[int, int]) -> None:
        """After the first round of the innermost repetition running (a loop's first iteration, the first of a row
        of identical block calls), refuse a runaway spec now, at the repetition (runaway.py)."""
        refusal = self._repeats.foresee(self._steps - start[0], len(self.graph) - start[1])
        if refusal is not None:
            self._err(refusal[0], refusal[1], frame, "reduce repeat counts (this limit guards against runaway specs)")
            raise _Stop

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


# The statements that bind or check rather than build: statement class -> handler (self, stmt, frame, scope).
SIMPLE_STATEMENTS = {
    S.Let: Elaborator._let,
    S.Require: Elaborator._require,
    S.Scaling: lambda self, stmt, frame, scope: self._scaling(stmt, frame),
    S.Init: lambda self, stmt, frame, scope: self._init(stmt, frame),
}
