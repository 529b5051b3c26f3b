"""Stage 4: what a pass changed, as data. Each change is also its report line (a `str` subclass), so the CLI and the
JSON output print it as before, while the viz reads its fields instead of parsing the text.

Takes: the kind of change and the nodes involved. Returns: `Change`: `kind` ("removed", "reparam", "fold_bn",
"merge_branches", "fold_layer_scale", "move_bias", "refused"), `src` (the training-form node merged or removed),
`dst` (the node that receives it), `op`, `n` (branches merged) and `why` (a refusal's reason).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Change"]


class Change(str):
    """One report line with its structure: str(change) is the line."""

    kind: str
    src: str | None
    dst: str | None
    op: str | None
    n: int | None
    why: str | None

    def __new__(cls, text: str, kind: str, *, src: str | None = None, dst: str | None = None, op: str | None = None,
                n: int | None = None, why: str | None = None) -> "Change":
        self = super().__new__(cls, text)
        self.kind, self.src, self.dst, self.op, self.n, self.why = kind, src, dst, op, n, why
        return self

    def __reduce__(self):  # copy, deepcopy and pickle keep the fields (str's own reduce would drop them)
        return (_rebuild, (str(self), self.fields()))

    def fields(self) -> dict[str, Any]:
        """The structure as a dict (kind, src, dst, op, n, why), without the text."""
        return {"kind": self.kind, "src": self.src, "dst": self.dst, "op": self.op, "n": self.n, "why": self.why}


def _rebuild(text: str, fields: dict[str, Any]) -> Change:
    return Change(text, **fields)
