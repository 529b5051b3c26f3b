"""Stage 1: a spec file and every file it imports, parsed (`load_program` -> `Program`).

Takes: a .arch path, extra import search paths, whether imports may leave the spec's directory. Returns: a
`Program`: the root module and every module reachable through imports, keyed by display name, with the import
links. Raises ArchError (positioned at the import) for a missing, unreadable, cyclic or disallowed import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import limits
from . import syntax as S
from .errors import ArchError, Collector, Diagnostic, Span
from .parse import parse_text


@dataclass
class Program:
    """The root module and every module reachable through imports, keyed by resolved path."""

    root: S.Module
    modules: dict[str, S.Module] = field(default_factory=dict)  # display file name -> module
    # (importing display file, import path) -> imported display file
    links: dict[tuple[str, str], str] = field(default_factory=dict)


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def load_program(path: str | os.PathLike, search_paths: tuple[str, ...] = (), allow_outside: bool = False,
                 text: str | None = None) -> Program:
    """Parse `path` (or `text`, named `path`) and, recursively, every file it imports."""
    root_path = Path(path).resolve() if text is None else Path(os.path.abspath(path))
    roots = [root_path.parent] + [Path(p).resolve() for p in search_paths]
    col = Collector()
    modules: dict[str, S.Module] = {}
    links: dict[tuple[str, str], str] = {}

    def read(p: Path, display: str, given: str | None = None) -> S.Module | None:
        if given is not None:
            src = given
        else:
            try:
                size = p.stat().st_size
                if size > limits.MAX_FILE_BYTES:
                    raise limits.too_big_file(display, size)
                src = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                col.add(Span(display, 1, 1, 1, 2), "file is not valid UTF-8 text")
                return None
            except OSError as err:  # unreadable (permissions, a directory, ...)
                col.add(Span(display, 1, 1, 1, 2), f"cannot read the file: {err.strerror or err}")
                return None
        try:
            return parse_text(src, display)
        except ArchError as e:
            col.extend(e)
            return None

    def visit(p: Path, display: str, stack: list[str], given: str | None = None) -> None:
        mod = read(p, display, given)
        if mod is None:
            return
        modules[display] = mod
        for imp in mod.imports:
            target = _resolve_import(imp, p, roots, allow_outside, col)
            if target is None:
                continue
            tdisp = _display(target)
            links[(display, imp.path)] = tdisp
            if tdisp in stack or tdisp == display:
                cycle = stack[stack.index(tdisp):] if tdisp in stack else []
                chain = " -> ".join([*cycle, display, tdisp])
                col.add(imp.span, f"import cycle: {chain}", "remove one of the imports in the cycle")
                continue
            if tdisp not in modules:
                visit(target, tdisp, [*stack, display])

    if text is None:
        what = not_a_spec_file(root_path)
        if what is not None:
            raise ArchError([Diagnostic(Span(str(path), 1, 1, 1, 1), f"{path}: {what}")])
    root_display = _display(root_path) if text is None else str(path)
    visit(root_path, root_display, [], text)
    col.raise_if_any()
    return Program(modules[root_display], modules, links)


def _resolve_import(imp: S.Import, importer: Path, roots: list[Path], allow_outside: bool,
                    col: Collector) -> Path | None:
    if not imp.path.endswith(".arch"):
        col.add(imp.span, f"can only import .arch files, not {imp.path!r}")
        return None
    rel = Path(imp.path)
    if rel.is_absolute() and not allow_outside:
        col.add(imp.span, f"absolute import path {imp.path!r} is not allowed",
                "import relative to this file, or pass --allow-outside-imports")
        return None
    try:
        candidates = [(importer.parent / rel).resolve()] + [(r / rel).resolve() for r in roots[1:]]
        found = [c for c in candidates if not_a_spec_file(c) is None]
        there = [(c, not_a_spec_file(c)) for c in candidates if c.exists()]
    except (OSError, ValueError) as err:  # a NUL character, a name too long for the file system, ...
        col.add(imp.span, f"cannot use import path {imp.path!r}: {getattr(err, 'strerror', None) or err}")
        return None
    for c in found:
        if not allow_outside and not any(c.is_relative_to(r) for r in roots):
            col.add(imp.span, f"import {imp.path!r} leaves the spec's directory ({_display(roots[0])})",
                    "add the directory with --import-path, or pass --allow-outside-imports")
            return None
        return c
    if there:  # something is there, but not a file to read: say what
        c, what = there[0]
        col.add(imp.span, f"cannot import {imp.path!r}: {_display(c)} {what.removeprefix('no such file: ')}")
        return None
    where = ", ".join(dict.fromkeys(_display(c) for c in candidates))
    col.add(imp.span, f"imported file not found: {imp.path!r}", f"looked for {where} (import paths are relative "
            "to the importing file)")
    return None


def not_a_spec_file(path: Path) -> str | None:
    """None for a regular file that can be read as a spec; else what it is instead (read nothing from it): missing,
    a directory, a device or pipe (/dev/zero, a FIFO: endless or blocking), or a kernel pseudo-file (/proc,
    /sys: its size is not what it holds)."""
    import stat

    try:
        st = path.stat()
    except (OSError, ValueError):
        return "no such file"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a spec file"
    if not stat.S_ISREG(st.st_mode):
        return "is a special file (a device, a pipe or a socket), not a spec file"
    real = path.resolve()
    if real.parts[1:2] in (("proc",), ("sys",)):
        return f"is a kernel pseudo-file (/{real.parts[1]}), not a spec file"
    return None
