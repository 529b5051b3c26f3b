"""Stage 2 (elaboration): the statements of a model body: input(...), init(...) and scaling(...) (pycls fast
compound scaling of the named model parameters)."""

from __future__ import annotations

import math
from typing import Any

from .. import syntax as S
from ..errors import Span, did_you_mean
from ..interp import fmt, type_name
from ..ir import Ref, join
from .base import _ERR, Frame, _bounded, _map_ints


class ModelStatements:
    """Part of Elaborator (elaborate/__init__.py): its methods use the Elaborator's state."""

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
        from ..ir import INIT_SCHEMES as SCHEMES

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
