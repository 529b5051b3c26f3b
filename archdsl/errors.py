"""Diagnostics shared by every stage: source spans, positioned errors and their rendering.

Takes: spans (file, line, column) produced by the parser and carried by every AST and IR node.
Returns: `ArchError`, the one exception type a user's mistake may raise, holding every
`Diagnostic` of a file, rendered as `file:line:col: error: message` with the source line and a caret.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterable

# Text of every file read so far, so a diagnostic can quote its line. Keyed by the span's file name. Its lines
# are split once, when the first diagnostic quotes it (quoting each of thousands of errors stays linear).
_SOURCES: dict[str, str] = {}
_LINES: dict[str, list[str]] = {}
MAX_RENDERED = 100  # diagnostics an ArchError renders; the rest are counted ("... and 912 more errors")
# control characters of a spec's text are never written to a terminal as they are (escape sequences, bells)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str, *, one_char: bool = False) -> str:
    """`text` with its control characters shown as \\xNN (or, `one_char`, as '?', keeping a quoted line's columns)."""
    return _CONTROL.sub(lambda m: "?" if one_char else f"\\x{ord(m.group()):02x}", text)


def register_source(filename: str, text: str) -> None:
    """Remember `text` as the contents of `filename` for quoting in diagnostics."""
    _SOURCES[filename] = text
    _LINES.pop(filename, None)


def source_text(filename: str) -> str | None:
    return _SOURCES.get(filename)


@dataclass(frozen=True, order=True)
class Span:
    """A region of a source file; lines and columns are 1-based, `end_col` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @staticmethod
    def unknown(file: str = "<unknown>") -> "Span":
        return Span(file, 1, 1, 1, 1)


@dataclass(frozen=True)
class Diagnostic:
    """One error: where, what, an optional hint, and notes (e.g. the chain of block calls)."""

    span: Span
    message: str
    hint: str | None = None
    notes: tuple[str, ...] = ()
    severity: str = "error"

    def render(self) -> str:
        lines = [visible(f"{self.span}: {self.severity}: {self.message}")]
        lines += _quote(self.span)
        if self.hint:
            lines.append(visible(f"  hint: {self.hint}"))
        lines += [visible(f"  note: {n}") for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict:
        s = self.span
        return {"file": s.file, "line": s.line, "col": s.col, "end_line": s.end_line, "end_col": s.end_col,
                "severity": self.severity, "message": self.message, "hint": self.hint, "notes": list(self.notes)}


def _quote(span: Span) -> list[str]:
    src_lines = _LINES.get(span.file)
    if src_lines is None:
        text = source_text(span.file)
        if text is None:
            return []
        src_lines = _LINES[span.file] = text.splitlines()
    if not 1 <= span.line <= len(src_lines):
        return []
    line = visible(src_lines[span.line - 1].expandtabs(1), one_char=True)
    if len(line) > 200:  # keep the caret readable on pathological lines
        start = max(0, span.col - 80)
        line = line[start:start + 160]
        col = span.col - start
    else:
        col = span.col
    end = span.end_col if span.end_line == span.line else len(line) + 1
    width = max(1, min(end, len(line) + 1) - col)
    gutter = f"{span.line:>5}"
    return [f"{gutter} | {line}", f"{' ' * len(gutter)} | {' ' * (col - 1)}{'^' * width}"]


class ArchError(Exception):
    """A user's mistake: one or more positioned diagnostics. The only exception archdsl raises for bad specs."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics: list[Diagnostic] = _dedupe(diagnostics)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.diagnostics)
        body = "\n".join(d.render() for d in self.diagnostics[:MAX_RENDERED])
        more = (f"\n... and {n - MAX_RENDERED} more errors (the first {MAX_RENDERED} are shown)"
                if n > MAX_RENDERED else "")
        return body + more + (f"\n{n} errors" if n > 1 else "")

    def __str__(self) -> str:
        return self.render()


def _dedupe(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple] = set()
    out = []
    for d in diags:
        key = (d.span, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def error(span: Span, message: str, hint: str | None = None, notes: Iterable[str] = ()) -> ArchError:
    return ArchError([Diagnostic(span, message, hint, tuple(notes))])


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class Collector:
    """Gathers diagnostics so one run reports every error of a file at once."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def add(self, span: Span, message: str, hint: str | None = None, notes: Iterable[str] = ()) -> None:
        self.diagnostics.append(Diagnostic(span, message, hint, tuple(notes)))

    def extend(self, err: ArchError) -> None:
        self.diagnostics.extend(err.diagnostics)

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise ArchError(self.diagnostics)
