"""Stage 2 (elaboration): each file's namespace of definitions, the root file's `fix` lines, and which model to
elaborate."""

from __future__ import annotations

from typing import Any

from .. import syntax as S
from ..errors import ArchError, Diagnostic, Span, did_you_mean
from ..interp import EvalError, fmt
from ..ops import registry
from .base import FORMS, fix_value


class Namespaces:
    """Part of Elaborator (elaborate/__init__.py): its methods use the Elaborator's state."""

    # ------------------------------------------------------------ definitions and namespaces

    def _namespace(self, file: str) -> dict[str, tuple[S.Def, str]]:
        mod = self.program.modules[file]
        ns: dict[str, tuple[S.Def, str]] = {}
        for d in mod.defs:
            if d.name in ns:
                self.col.add(d.name_span, f"'{d.name}' is defined twice (first at {ns[d.name][0].name_span})",
                             "rename one of the two definitions, or delete one")
            elif d.name in FORMS or registry.get(d.name) is not None:
                self.col.add(d.name_span, f"'{d.name}' is a built-in {'form' if d.name in FORMS else 'op'}",
                             "choose another name for the block")
            else:
                ns[d.name] = (d, file)
        for imp in mod.imports:
            target = self.program.links.get((file, imp.path))
            if target is None or target not in self.program.modules:
                continue
            for d in self.program.modules[target].defs:
                key = f"{imp.alias}.{d.name}" if imp.alias else d.name
                if key in ns and ns[key][1] != target:
                    self.col.add(imp.span, f"import of '{key}' clashes with the definition at {ns[key][0].name_span}",
                                 "import the file with an alias: import \"...\" as lib")
                    continue
                ns.setdefault(key, (d, target))
        return ns

    def _collect_fixes(self) -> dict[str, tuple[S.Fix, Any]]:
        """The `fix` lines of the checked file, evaluated. A fix in an imported file is an error: only the checked
        file's fixes apply (a library must not pin the choices of the specs that import it)."""
        root = self.program.root
        for mod in self.program.modules.values():
            if mod is root:
                continue
            for f in mod.fixes:
                self.col.add(f.span, f"fix {fmt(f.name)} is in an imported file: only the checked file's fixes apply",
                             f"move it to the file being checked ({root.file}), or delete it")
        out: dict[str, tuple[S.Fix, Any]] = {}
        for f in root.fixes:
            if f.name in out:
                self.col.add(f.name_span, f"{fmt(f.name)} is fixed twice (first at {out[f.name][0].span})",
                             "delete one of the two fix lines")
                continue
            try:
                out[f.name] = (f, fix_value(f))
            except EvalError as err:
                self._eval_error(err, ())
        return out

    def select_model(self, name: str | None) -> S.Def:
        models = [d for d in self.program.root.defs if d.kind == "model"]
        if name is not None:
            for d in models:
                if d.name == name:
                    return d
            raise ArchError([Diagnostic(Span(self.program.root.file, 1, 1, 1, 2),
                                        f"no model named '{name}'{did_you_mean(name, [m.name for m in models])}",
                                        "models in this file: " + (", ".join(m.name for m in models) or "none"))])
        if len(models) == 1:
            return models[0]
        if not models:
            raise ArchError([Diagnostic(Span(self.program.root.file, 1, 1, 1, 2), "this file defines no model",
                                        "add `model name() { input(3, 224, 224) ... }`, or check the file that "
                                        "imports this one")])
        raise ArchError([Diagnostic(models[1].name_span, f"this file defines {len(models)} models",
                                    "choose one with --model: " + ", ".join(m.name for m in models))])

    # ------------------------------------------------------------ entry point
