"""Stage 1: syntax errors in words, and recovery to find the next one (parse.py's helper).

Takes: the LALR parser, the file name and the text. `parse_recovering` returns the Lark tree (None when there
were errors) and every syntax error found, each a positioned Diagnostic with what was expected in readable words
(`_syntax_diagnostic`); for an unclosed bracket, a diagnostic at the opening one (`_unclosed_diagnostic`). After
each error it blanks the offending line (where that keeps the brackets balanced) or closes the bracket, and parses
on from the parser's state at the last line start before the change: the errors of a file cost about one parse
of it, not one each.
"""

from __future__ import annotations

import re
from typing import Any

from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import limits
from .errors import Diagnostic, Span


def parse_recovering(parser: Lark, text: str, file: str) -> tuple[Any, list[Diagnostic]]:
    """The tree of `text` and no diagnostics, or None and its syntax errors (at most limits.MAX_SYNTAX_ERRORS
    parses), in the order found."""
    diags: list[Diagnostic] = []
    run = _Resumable(parser, text)
    for _ in range(limits.MAX_SYNTAX_ERRORS):
        work = run.text
        try:
            tree = run.parse()
            return (None if diags else tree), diags
        except UnexpectedInput as e:
            d = _syntax_diagnostic(e, file, work)
            unclosed = _unclosed_diagnostic(d, e, work, file)
            if unclosed is not None:
                diags.append(unclosed[0])
                if unclosed[1] is None:
                    break
                run = run.resume(unclosed[1])
                continue
            diags.append(d)
            # Blank the offending line and parse on, but only where that cannot itself unbalance brackets
            # (which would produce errors the user did not make).
            lines = work.split("\n")
            i = d.span.line - 1
            if not (0 <= i < len(lines)) or not _balanced(lines[i]) or not lines[i].strip():
                break
            lines[i] = " " * len(lines[i])
            run = run.resume("\n".join(lines))
    return None, diags


class _Resumable:
    """An LALR parse of `text` that remembers the parser's stacks before the first token of each line, so that a
    parse of a changed text can start at the last such mark before the first change. (The text before a mark is
    the same, the character before it is a space or a newline, so no token changes across it: the errors found
    equal those of a parse from the start. Its tree may share nodes that a failed parse went on to change, which is
    why a text with errors gets no tree.)"""

    def __init__(self, parser: Lark, text: str, marks: list | None = None) -> None:
        self.parser, self.text = parser, text
        self.marks: list[tuple[int, list, list]] = marks or []  # (offset of the token, state stack, value stack)

    def parse(self) -> Any:
        ip = self.parser.parse_interactive(self.text, start="start")
        state = ip.parser_state
        if self.marks:
            pos, states, values = self.marks[-1]
            ip.lexer_thread.state.line_ctr.feed(self.text[:pos])
            state.state_stack[:], state.value_stack[:] = states, values
            del self.marks[-1]  # recorded again as the parse passes it
        line, tok = -1, None
        try:
            for tok in ip.lexer_thread.lex(state):
                if tok.line != line:
                    line = tok.line
                    self.marks.append((tok.start_pos, list(state.state_stack), list(state.value_stack)))
                state.feed_token(tok)
            return ip.feed_eof(tok)
        except UnexpectedInput as e:
            if getattr(e, "interactive_parser", None) is None:  # as Lark's own parse sets it: _expected needs it
                e.interactive_parser = ip
            raise

    def resume(self, text: str) -> "_Resumable":
        """A parse of `text`, a changed copy of this one's, that starts at the last mark before the change."""
        same = _common_prefix(self.text, text)
        keep = [m for m in self.marks if m[0] <= same]
        return _Resumable(self.parser, text, keep)


def _common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix of a and b (by halving, each comparison in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo

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
        # lines as the positions count them: split at "\n" only (str.splitlines also splits at \x1e, \x0c, ...)
        lines = text.split("\n")
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()
        line, col = len(lines), len(lines[-1].rstrip("\r")) + 1
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


# What `_unclosed` looks at: a comment, a string (a backslash escapes any character, a newline included; one not
# closed on its line ends there), a bracket or a newline.
_SCAN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\[\s\S])*"?|[()\[\]{}\n]')


def _unclosed(text: str) -> list[tuple[int, int, int]]:
    """Brackets that are never closed, as (offset, line, col); strings and comments are skipped.
    A closer that does not match the innermost opener closes an outer one, leaving the inner ones unclosed."""
    stack: list[tuple[int, int, int]] = []
    out: list[tuple[int, int, int]] = []
    line, line_start = 1, 0
    for m in _SCAN.finditer(text):
        ch, i = m.group()[0], m.start()
        if ch == "\n":
            line, line_start = line + 1, i + 1
        elif ch in _CLOSER:
            stack.append((i, line, i - line_start + 1))
        elif ch in ")]}":
            while stack and _CLOSER[text[stack[-1][0]]] != ch:
                out.append(stack.pop())
            if stack:
                stack.pop()
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
