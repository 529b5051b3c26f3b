"""Stage 2 (elaboration): the forms seq, residual, parallel and split (their arguments, branches and merge)."""

from __future__ import annotations

from typing import Any

from .. import syntax as S
from ..errors import did_you_mean
from ..interp import fmt, type_name
from ..ir import Ref, join
from .base import _ERR, MERGES, Frame, _Abort, _arg_span, _conforms


class Forms:
    """Part of Elaborator (elaborate/__init__.py): its methods use the Elaborator's state."""

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


# form name -> its handler (self, call, body, frame, cur, path); the names are base.FORMS
FORM_HANDLERS = {"seq": Forms._form_seq, "residual": Forms._form_residual, "parallel": Forms._form_parallel,
                 "split": Forms._form_split}
