"""Fenced code blocks of the Markdown docs, for the tests that keep the docs true (test_docs, test_tutorial_docs).

Takes: a Markdown file. Returns: `Fence`s (line of the opening fence, language, rest of the info string, text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Fence:
    line: int  # of the opening fence, 1-based
    lang: str
    info: str  # the rest of the info string
    text: str

    @property
    def id(self) -> str:
        return f"L{self.line}"


def fences(path: Path) -> list[Fence]:
    """Every fenced block of a Markdown file, also those indented in a list item (their text is dedented); a fence
    of N backticks closes only with N or more (so a ````text block may quote ``` fences)."""
    out: list[Fence] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^( *)(`{3,})(\S*)\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, ticks = len(m.group(1)), m.group(2)
        j = i + 1
        while j < len(lines) and not re.match(rf"^ *{ticks}`*\s*$", lines[j]):
            j += 1
        body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1:j]]
        out.append(Fence(i + 1, m.group(3), m.group(4).strip(), "\n".join(body) + "\n"))
        i = j + 1
    return out
