"""Stage 1: syntax errors in words, and recovery to find the next one (parse.py's helper).

Takes: Lark's UnexpectedInput, the file name and the text being parsed. Returns: a positioned Diagnostic with
what was expected in readable words (`_syntax_diagnostic`); for an unclosed bracket, a diagnostic at the opening
one and the text with it closed so parsing can go on (`_unclosed_diagnostic`); `_balanced` tells whether
blanking a line keeps the brackets balanced.
"""

from __future__ import annotations

import re

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import Diagnostic, Span

_READABLE = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "COLON": "':'",
    "SLICE_COLON": "':'", "EQUAL": "'='", "SEMICOLON": "';'", "DOT": "'.'", "ADD_OP": "'+' or '-'",
    "MUL_OP": "an operator", "POW_OP": "'**'", "COMP_OP": "a comparison", "$END": "end of file",
}


def _expected(e: UnexpectedInput) -> list[str]:
    names = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or [])
    ip = getattr(e, "interactive_parser", None)
    if ip is not None:
        try:  # exact: LALR state merging lists tokens that would fail after a reduction
            names = sorted(ip.accepts()) or names
        except Exception:  # noqa: BLE001 - fall back to the table's (wider) list
            pass
    out = []
    for n in names:
        if n in _READABLE:
            out.append(_READABLE[n])
        elif n.isupper() and len(n) <= 10 and n.isalpha():
            out.append(f"'{n.lower()}'")  # keywords: IF -> 'if'
        else:
            out.append(n)
    return sorted(set(out))


def _syntax_diagnostic(e: UnexpectedInput, file: str, text: str) -> Diagnostic:
    line, col = max(1, getattr(e, "line", 1) or 1), max(1, getattr(e, "column", 1) or 1)
    exp = _expected(e)
    hint = None
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else "?"
        msg = f"unexpected character {ch!r}"
        end = col + 1
        rest = text[e.pos_in_stream + 1:].split("\n", 1)[0]
        if ch in "\"'" and ch not in rest:  # a string opened here and not closed on its line
            shown = (ch + rest)[:40] + ("..." if len(rest) >= 40 else "")
            msg = f"the string {shown} is never closed"
            end = col + 1 + len(rest)
            hint = f"end it with {ch} on the same line (strings do not span lines)"
        elif ch == "=" and exp:
            hint = "use ':' to name a layer (name: op(...)) or 'let name = value' to bind a value"
    elif isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        msg = "unexpected end of file"
        end = col + 1
        if "'}'" in exp:
            hint = "a '{' is never closed"
    else:
        tok = e.token
        msg = f"unexpected {str(tok)!r}"
        end = (tok.end_column or col + 1) if tok.end_line == tok.line else col + len(str(tok).split("\n")[0])
        if tok.type == "EQUAL" and "':'" in exp:
            hint = "use ':' to name a layer (name: op(...)) or 'let name = value' to bind a value"
        elif tok.type == "RBRACE" and "')'" in exp:
            hint = "missing ')'"
        elif tok.type == "ELSE" and "'{'" not in exp:
            hint = "after let / require / for / if, put a conditional expression in parentheses: " \
                   "let k = (7 if big else 3)"
        elif tok.type == "IF" and "'or'" in exp:
            hint = "put a conditional expression in parentheses: let k = (7 if big else 3)"
        elif tok.type == "LBRACE":
            hint = "if this '{' starts a new group of layers, end the previous statement with ';'"
    src_lines = text.split("\n")
    if hint is None and line <= len(src_lines) and _FIX_VALUE.match(src_lines[line - 1], 0, col - 1):
        hint = "a fix value is a literal: a number, a string in quotes, true, false, none, or a list of these"
    if exp and len(exp) <= 8:
        msg += f"; expected {', '.join(exp)}"
    return Diagnostic(Span(file, line, col, line, max(end, col + 1)), msg, hint)


# The start of a `fix "name" = ...` line up to the value, where a syntax error is in the (literal) value.
_FIX_VALUE = re.compile(r'\s*fix\s*"(?:[^"\\\n]|\\["\\n])*"\s*=.*')


def _balanced(line: str) -> bool:
    return all(line.count(a) == line.count(b) for a, b in ("()", "[]", "{}"))


_CLOSER = {"(": ")", "[": "]", "{": "}"}


def _unclosed(text: str) -> list[tuple[int, int, int]]:
    """Brackets that are never closed, as (offset, line, col); strings and comments are skipped.
    A closer that does not match the innermost opener closes an outer one, leaving the inner ones unclosed."""
    stack: list[tuple[int, int, int]] = []
    out: list[tuple[int, int, int]] = []
    line, line_start, i, n = 1, 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line, line_start = line + 1, i + 1
        elif ch == "#":
            while i + 1 < n and text[i + 1] != "\n":
                i += 1
        elif ch == '"':
            i += 1
            while i < n and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
            if i < n and text[i] == "\n":
                continue
        elif ch in _CLOSER:
            stack.append((i, line, i - line_start + 1))
        elif ch in ")]}":
            while stack and _CLOSER[text[stack[-1][0]]] != ch:
                out.append(stack.pop())
            if stack:
                stack.pop()
        i += 1
    return sorted(out + stack)


def _code_end(line: str) -> int:
    """Index just after the last code character of `line` (before a trailing comment)."""
    in_str, i = False, 0
    while i < len(line):
        if line[i] == '"':
            in_str = not in_str
        elif line[i] == "\\" and in_str:
            i += 1
        elif line[i] == "#" and not in_str:
            break
        i += 1
    return len(line[:i].rstrip())


def _unclosed_diagnostic(d: Diagnostic, e: UnexpectedInput, work: str, file: str):
    """When a syntax error is really a bracket opened on an earlier line and never closed, a diagnostic at that
    bracket, and `work` with a closer inserted so parsing can go on; else None."""
    at_eof = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
    pos = len(work) if at_eof else getattr(e, "pos_in_stream", None)
    if pos is None:
        return None
    before = [u for u in _unclosed(work) if u[0] < pos and u[1] < d.span.line]
    if not before:
        return None
    off, line, col = before[-1]
    opener = work[off]
    closer = _CLOSER[opener]
    err_line = work.split("\n")[d.span.line - 1].lstrip()
    if at_eof:
        found = "the end of the file"
    elif opener == "{" and err_line.startswith(("block ", "model ", "import ")):
        found = f"the next definition at line {d.span.line}"
    elif f"'{closer}'" in _expected(e):
        tok = getattr(e, "token", None)
        found = f"{str(tok)!r} at line {d.span.line}, column {d.span.col}" if tok is not None else \
            f"line {d.span.line}, column {d.span.col}"
    else:
        return None
    diag = Diagnostic(Span(file, line, col, line, col + 1), f"'{opener}' is never closed",
                      f"expected '{closer}' before {found}")
    if at_eof:
        return diag, None
    # Close it where the user most likely forgot to: a '(' or '[' at the end of its own line, a '{' at the end
    # of the line before the error (so the statements between stay inside the body).
    lines = work.split("\n")
    k = line - 1 if opener != "{" else d.span.line - 2
    cut = _code_end(lines[k])
    lines[k] = lines[k][:cut] + closer + lines[k][cut:]
    return diag, "\n".join(lines)
