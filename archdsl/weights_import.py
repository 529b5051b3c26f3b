"""Pretrained weights in: a state_dict saved by another implementation of the same network (timm's, the authors',
torchvision's) matched onto the training-form model archdsl builds from a spec.

Takes: the archdsl module (its state_dict names, in the order the model uses them), the other state_dict and an
optional name map. Returns: (our state_dict, Report). The tensors are matched
  1. by the name map first: rules `PATTERN=REPLACEMENT` (a regular expression over the other implementation's
     name, matched whole, and its replacement with \\1 ... groups; the first rule that matches a name wins), for
     the names whose order alone is ambiguous
     (a module registered before the ones it runs after; a block's own parameter that state_dict lists before its
     children);
  2. then a tensor whose name and shape are those of one of the model's (timm's ConvNeXt names most of its tensors
     as the bundled spec does);
  3. then every other tensor in order: the k-th of ours takes the k-th of theirs that is left, and their shapes
     must agree, allowing a reshape of the same numbers that differs only in dimensions of size 1 (a 1x1 conv
     weight against a linear weight; a GRN gamma stored as 1x1x1xC against C).
A shape that disagrees stops the import with both names and shapes and where the two orders part (a shuffled
checkpoint, another architecture; a .safetensors file, whose names are stored sorted, has lost its order). A
tensor left unmatched on either side is an error unless allow_missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .weights import WeightsError

__all__ = ["WeightsImportError", "Report", "import_state_dict", "parse_rules"]


class WeightsImportError(WeightsError):
    """The other state_dict does not fit the model (a message naming the tensors)."""


@dataclass
class Report:
    """What was matched with what: ours name -> (their name, how: "map", "order", "map+reshape" ...)."""

    matched: dict[str, tuple[str, str]] = field(default_factory=dict)
    reshaped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)  # ours: (theirs, ours)
    missing: list[str] = field(default_factory=list)     # ours, left without a tensor
    unused: list[str] = field(default_factory=list)      # theirs, left over

    def to_json(self) -> dict[str, Any]:
        return {"matched": [{"ours": k, "theirs": v[0], "by": v[1],
                             **({"reshaped_from": list(self.reshaped[k][0])} if k in self.reshaped else {})}
                            for k, v in self.matched.items()],
                "missing": self.missing, "unused": self.unused,
                "counts": {"matched": len(self.matched), "reshaped": len(self.reshaped),
                           "missing": len(self.missing), "unused": len(self.unused)}}

    def summary(self) -> str:
        return (f"{len(self.matched)} tensors matched ({sum(v[1].startswith('map') for v in self.matched.values())} "
                f"by the name map, {len(self.reshaped)} reshaped), {len(self.missing)} of ours missing, "
                f"{len(self.unused)} of theirs unused")


def parse_rules(rules: list[str] | dict[str, str] | None) -> list[tuple[re.Pattern, str]]:
    """`PATTERN=REPLACEMENT` strings (or a {pattern: replacement} dict) -> compiled rules; a bad one raises
    WeightsImportError naming it."""
    items = list(rules.items()) if isinstance(rules, dict) else [_split(r) for r in (rules or [])]
    out = []
    for pat, rep in items:
        try:
            out.append((re.compile(pat), rep))
        except re.error as e:
            raise WeightsImportError(f"name map rule {pat!r}: not a regular expression ({e})") from None
    return out


def _split(rule: str) -> tuple[str, str]:
    if "=" not in rule:
        raise WeightsImportError(f"name map rule {rule!r}: write PATTERN=REPLACEMENT (theirs = ours)")
    pat, rep = rule.split("=", 1)
    return pat.strip(), rep.strip()


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _fits(theirs: tuple[int, ...], ours: tuple[int, ...]) -> bool:
    return theirs == ours or _squeezed(theirs) == _squeezed(ours)


def import_state_dict(module, theirs: dict[str, Any], rules: list[str] | dict[str, str] | None = None,
                      allow_missing: bool = False, ordered: bool = True) -> tuple[dict[str, Any], Report]:
    """Match `theirs` onto `module`'s state_dict (see the module docstring). `ordered`: False when the checkpoint's
    order is not its network's (a .safetensors file stores its tensors sorted): then nothing is matched by order.
    Returns (a state_dict with our names, loadable strictly, or with allow_missing our own values where theirs had
    none; the Report)."""
    import torch

    ours = module.state_dict()
    report = Report()
    out: dict[str, Any] = {}
    compiled = parse_rules(rules)
    theirs = {k: v for k, v in theirs.items() if isinstance(v, torch.Tensor)}
    left = list(theirs)
    for name in list(theirs):  # 1. the name map
        for pat, rep in compiled:
            m = pat.fullmatch(name)
            if m is None:
                continue
            target = m.expand(rep)
            if target not in ours:
                raise WeightsImportError(f"name map: {name} -> {target}, which the model does not have"
                                   + _near(target, ours))
            if target in out:
                raise WeightsImportError(f"name map: {name} and {out[target][1]} both map to {target}")
            _take(out, report, target, ours[target], name, theirs[name], "map")
            left.remove(name)
            break
    for name in list(left):  # 2. a tensor of the very name and shape of one of ours (most of timm's ConvNeXt)
        if name in ours and name not in out and _fits(tuple(theirs[name].shape), tuple(ours[name].shape)):
            _take(out, report, name, ours[name], name, theirs[name], "name")
            left.remove(name)
    queue = [k for k in ours if k not in out]
    if not ordered and queue and left and not allow_missing:
        raise WeightsImportError(
            f"{len(queue)} of the model's tensors (first: {queue[0]}) and {len(left)} of the checkpoint's (first: "
            f"{left[0]}) are not named alike, and the checkpoint lists its tensors sorted by name (a .safetensors "
            "file does), so the order its network uses them is lost: map those names with --map rules, or import "
            "a torch.save'd state_dict of the same network (timm's pytorch_model.bin, the authors' .pth)")
    if not ordered:
        queue = []
    i = 0
    for k in queue:  # 3. in order
        if i >= len(left):
            report.missing.append(k)
            continue
        name = left[i]
        if not _fits(tuple(theirs[name].shape), tuple(ours[k].shape)):
            raise WeightsImportError(_parting(k, ours[k], name, theirs[name], i))
        _take(out, report, k, ours[k], name, theirs[name], "order")
        i += 1
    report.unused = left[i:]
    if (report.missing or report.unused) and not allow_missing:
        raise WeightsImportError(f"{len(report.missing)} of the model's tensors have no match"
                           + (f" (first: {report.missing[0]})" if report.missing else "")
                           + f", {len(report.unused)} of the checkpoint's are left over"
                           + (f" (first: {report.unused[0]})" if report.unused else "")
                           + "; pass allow_missing (--allow-missing) to keep the model's own values for the missing")
    for k in report.missing:
        out[k] = ours[k]
    return out, report


def _take(out, report: Report, ours_name: str, ours_t, their_name: str, their_t, how: str) -> None:
    if tuple(their_t.shape) != tuple(ours_t.shape):
        if not _fits(tuple(their_t.shape), tuple(ours_t.shape)):
            raise WeightsImportError(f"{their_name} {tuple(their_t.shape)} cannot be {ours_name} {tuple(ours_t.shape)}")
        report.reshaped[ours_name] = (tuple(their_t.shape), tuple(ours_t.shape))
        their_t = their_t.reshape(ours_t.shape)
        how += "+reshape"
    out[ours_name] = their_t.detach().clone().to(ours_t.dtype)
    report.matched[ours_name] = (their_name, how)


def _parting(k, t_ours, name, t_theirs, i) -> str:
    return (f"the orders part at tensor {i + 1} of those matched in order: the model's {k} "
            f"{tuple(t_ours.shape)} against the checkpoint's {name} {tuple(t_theirs.shape)}. Either the checkpoint "
            "is of another architecture (or other sizes: check --set), or its names are listed in another order "
            "than the model uses them: map those names (--map 'PATTERN=REPLACEMENT', theirs = ours)")


def _near(target: str, ours: dict) -> str:
    import difflib

    leaf = target.rsplit(".", 1)[-1]
    same_leaf = [k for k in ours if k.rsplit(".", 1)[-1] == leaf]
    close = difflib.get_close_matches(target, same_leaf or list(ours), n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""
