"""`fix "NAME" = VALUE` lines and concrete architectures (archdsl.concrete).

(a) fix semantics: a fix sets a choice point or a model parameter like --set, with source "fixed"; --set wins over
    it; it is a keyword only at the top level; (its errors are golden cases in tests/golden/errors/fix_*.arch);
(b) concrete_spec / write_concrete: a point of examples/search/convnext_space.arch written out checks to the same
    graph as check_file(spec, overrides=point), with every choice fixed, also through the CLI and as a
    hypothesis property; imports are copied beside it; an import outside the spec's directory is refused.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from archdsl import report
from archdsl.api import ArchError, check_file, check_text, require_resolved
from archdsl.cli import main
from archdsl.concrete import concrete_spec, write_concrete
from archdsl.fmt import format_text
from archdsl.parse import parse_text
from archdsl.printer import format_ir

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "search" / "convnext_space.arch"

NET = """
model net(width: int = 16, act: str = choice("relu", "gelu")) {
    input(3, 32, 32)
    stem: conv(width, k=choice(3, 5, 7, name="k"))
    stages: for i in range(2) {
        let kernel = choice(3, 5, 7, default=5)
        dwconv(kernel)
    }
    head: gap()
}
"""


def choices(g) -> dict:
    return {c.name: (c.value, c.source) for c in g.choices}


def comparable(g) -> str:
    """The IR without positions and without the line naming the file."""
    return "\n".join(line for line in format_ir(g, spans=False).splitlines() if not line.startswith("# model "))


# ---------------------------------------------------------------- (a) fix semantics


def test_fix_sets_choices_and_parameters():
    text = 'fix "k" = 7\nfix "stages.1.kernel" = 3\nfix "width" = 24\nfix "act" = "gelu"\n' + NET
    g = check_text(text, "fix.arch")
    assert choices(g) == {"act": ("gelu", "fixed"), "k": (7, "fixed"), "stages.0.kernel": (5, "default"),
                          "stages.1.kernel": (3, "fixed")}
    assert g.params["width"] == 24 and g.node("stem").raw_params()["out"] == 24
    require_resolved(g)  # fixed and default values count as resolved
    assert "[fixed]" in report.table(g) and "[default]" in report.table(g)
    assert [c["source"] for c in report.to_json(g)["choices"]].count("fixed") == 3


def test_fix_checks_like_the_same_overrides():
    fixes = {"k": 5, "stages.0.kernel": 7, "width": 8, "act": '"gelu"'}
    lines = "".join(f'fix "{k}" = {v}\n' for k, v in fixes.items())
    assert comparable(check_text(lines + NET, "fix.arch")) == comparable(check_text(NET, "net.arch", overrides=fixes))


def test_override_wins_over_a_fix():
    g = check_text('fix "k" = 7\nfix "width" = 24\n' + NET, "fix.arch", overrides={"k": 3, "width": 8})
    assert choices(g)["k"] == (3, "override") and g.params["width"] == 8
    # ... and an override outside the domain is still reported as --set, at the choice
    with pytest.raises(ArchError, match=r"--set k=4 is outside choice\(3, 5, 7\)"):
        check_text('fix "k" = 7\n' + NET, "fix.arch", overrides={"k": 4})


def test_fix_names_are_checked_even_without_strict_overrides():
    with pytest.raises(ArchError) as err:
        check_text('fix "stages.0.kernal" = 3\n' + NET, "fix.arch", strict_overrides=False)
    text = err.value.render()
    assert 'fix "stages.0.kernal" names no choice point of model \'net\'' in text
    assert 'close names: "stages.0.kernel"' in text


def test_fix_of_a_choice_behind_an_untaken_branch_names_nothing():
    text = ('fix "deep.k" = 5\nmodel m(big: bool = false) {\n    input(3, 8, 8)\n'
            '    deep: if big { conv(8, k=choice(3, 5)) } else { conv(8) }\n}\n')
    with pytest.raises(ArchError, match="names no choice point"):
        check_text(text, "untaken.arch")
    assert choices(check_text('fix "big" = true\n' + text, "taken.arch"))["deep.k"] == (5, "fixed")


def test_unknown_fix_is_not_reported_after_another_error():
    """Choice points after an error are never met: a fix naming one must not add a second, misleading error."""
    text = 'fix "b.k" = 5\nmodel m() {\n    input(3, 8, 8)\n    a: cnov(8)\n    b: conv(8, k=choice(3, 5))\n}\n'
    with pytest.raises(ArchError) as err:
        check_text(text, "after.arch")
    assert len(err.value.diagnostics) == 1 and "unknown op 'cnov'" in err.value.render()


def test_fix_values_are_literals_of_every_kind():
    text = """
fix "neg" = -2
fix "f" = 1e-6
fix "flag" = false
fix "nothing" = none
fix "ks" = [3, 5]
fix "name" = "a\\"b"
model m(neg: int = 0, f: float = 0.5, flag: bool = true, nothing: any = 1, name: str = "x",
        ks: list[int] = choice([3, 3], [3, 5])) {
    input(3, 8, 8)
    conv(8, k=ks[1])
}
"""
    g = check_text(text, "lit.arch")
    assert g.params == {"neg": -2, "f": 1e-6, "flag": False, "nothing": None, "name": 'a"b', "ks": (3, 5)}
    assert choices(g)["ks"] == ((3, 5), "fixed")


def test_fix_is_a_keyword_only_at_the_top_level():
    """`fix` stays usable as a variable, a layer name and a block name inside bodies."""
    text = """
block fix(c: int) {
    conv(c)
}

model m(fix_width: int = 8) {
    input(3, 8, 8)
    let fix = 3
    fix: conv(fix_width, k=fix)
    again: fix(fix * 4)
}
fix "fix_width" = 16
"""
    g = check_text(text, "soft.arch")
    assert g.node("fix").raw_params()["out"] == 16 and g.node("again").raw_params()["out"] == 12


def test_fix_lines_format_and_round_trip():
    text = '# pinned\nfix "k"=7  # seven\nfix "stages.1.kernel" = 3\n' + NET
    out = format_text(text, "fmt.arch")
    assert out.startswith('# pinned\nfix "k" = 7  # seven\nfix "stages.1.kernel" = 3\n\nmodel net(')
    assert parse_text(out, "fmt.arch") == parse_text(text, "fmt.arch")
    assert comparable(check_text(out, "fmt.arch")) == comparable(check_text(text, "fmt.arch"))


def test_cli_check_shows_fixed_choices(tmp_path, capsys):
    spec = tmp_path / "fixed.arch"
    spec.write_text('fix "k" = 7\n' + NET, encoding="utf-8")
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["k", "=", "7"] and "[fixed]" in line for line in out.splitlines()), out
    assert main(["check", str(spec), "--set", "k=3"]) == 0
    assert "[override]" in capsys.readouterr().out


# ---------------------------------------------------------------- (b) concrete specs of convnext_space

BASE = check_file(SPACE)
DOMAINS = {c.name: c.values for c in BASE.choices}  # every choice of the space is a choice(...)


def valid_points(n: int, seed: int) -> list[dict]:
    """n random points of the space that check (the spec's `require` rejects dilations that do not fit)."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        point = {k: rng.choice(v) for k, v in DOMAINS.items()}
        try:
            check_file(SPACE, overrides=point)
        except ArchError:
            continue
        out.append(point)
    return out


@pytest.mark.parametrize("point", valid_points(3, seed=0), ids=["p0", "p1", "p2"])
def test_concrete_spec_checks_to_the_same_graph(point, tmp_path):
    expected = check_file(SPACE, overrides=point)
    top = write_concrete(SPACE, point, tmp_path, "top1", header="latency 1.23 ms\naccuracy 0.71")
    assert top == tmp_path / "top1.arch" and sorted(p.name for p in tmp_path.iterdir()) == ["top1.arch"]
    text = top.read_text(encoding="utf-8")
    assert text.startswith("# latency 1.23 ms\n# accuracy 0.71\n# concrete architecture: model convnext_space")
    fixes = [line for line in text.splitlines() if line.startswith("fix ")]
    assert fixes == sorted(fixes) and len(fixes) == len(DOMAINS)
    assert text.endswith(SPACE.read_text(encoding="utf-8"))  # the spec's text verbatim
    g = check_file(top)
    assert comparable(g) == comparable(expected)
    assert (g.total().params, g.total().macs) == (expected.total().params, expected.total().macs)
    assert {c.name: c.value for c in g.choices} == {c.name: c.value for c in expected.choices}
    assert all(c.source == "fixed" for c in g.choices)
    require_resolved(g)


def test_concrete_spec_passes_archdsl_check(tmp_path):
    (point,) = valid_points(1, seed=1)
    top = write_concrete(SPACE, point, tmp_path, "best.arch")
    r = subprocess.run([sys.executable, "-m", "archdsl", "check", str(top)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "[fixed]" in r.stdout and "[first]" not in r.stdout


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in DOMAINS.items()}))
def test_concrete_spec_rechecks_identically(point):
    try:
        expected = check_file(SPACE, overrides=point)
    except ArchError:
        assume(False)
    files = concrete_spec(SPACE, point)
    assert list(files) == ["convnext_space.arch"]
    g = check_text(files["convnext_space.arch"], str(SPACE.with_name("concrete_property.arch")))
    assert comparable(g) == comparable(expected)
    require_resolved(g)


def test_defaults_model_parameters_and_input_are_pinned(tmp_path):
    spec = tmp_path / "net.arch"
    spec.write_text(NET, encoding="utf-8")
    point = {"k": 3, "width": "32"}  # .arch text, as from --set
    files = concrete_spec(spec, point, input_shape=(3, 64, 64))
    text = files["net.arch"]
    assert "# checked at input 3x64x64" in text
    for line in ('fix "act" = "relu"', 'fix "k" = 3', 'fix "stages.0.kernel" = 5', 'fix "stages.1.kernel" = 5',
                 'fix "width" = 32'):
        assert line in text.splitlines()
    expected = check_file(spec, overrides=point, input_shape=(3, 64, 64))
    g = check_text(text, str(tmp_path / "concrete.arch"), input_shape=(3, 64, 64))
    assert comparable(g) == comparable(expected)


def test_a_concrete_file_is_reopened_with_overrides(tmp_path):
    """--set wins over the file's fixes (trying a variant of a found architecture); its own fixes are replaced."""
    (point,) = valid_points(1, seed=2)
    top = write_concrete(SPACE, point, tmp_path, "c")
    variant = {**point, "stages.0.kernel": 13, "stages.0.kind": '"inception"'}
    g = check_file(top, overrides={"stages.0.kernel": 13, "stages.0.kind": '"inception"'})
    assert comparable(g) == comparable(check_file(SPACE, overrides=variant))
    assert choices(g)["stages.0.kernel"] == (13, "override")
    # a concrete spec of the concrete file: its own fix lines are blanked, the new ones replace them
    again = concrete_spec(top, {"stages.0.kernel": 13, "stages.0.kind": '"inception"'})["c.arch"]
    assert sum(line.startswith("fix ") for line in again.splitlines()) == len(DOMAINS)
    assert 'fix "stages.0.kernel" = 13' in again.splitlines()
    assert comparable(check_text(again, str(tmp_path / "again.arch"))) == comparable(g)


LIB = """
block stage(dim: int, k: int = choice(3, 5)) {
    dwconv(k)
    conv(dim, k=1)
}
"""

USER = """
import "lib/blocks.arch" as lib
fix "s1.k" = 5

model m(dims: list[int] = [8, 16]) {
    require choice(true, false)
    input(3, 16, 16)
    s1: lib.stage(dims[0])
    s2: lib.stage(dims[1])
}
"""


def test_imports_are_copied_and_position_named_choices_renamed(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "blocks.arch").write_text(LIB, encoding="utf-8")
    (src / "user.arch").write_text(USER, encoding="utf-8")
    point = {"s2.k": 5}
    expected = check_file(src / "user.arch", overrides=point)
    assert {c.name for c in expected.choices} == {"s1.k", "s2.k", "choice@6:13"}  # the require's choice
    top = write_concrete(src / "user.arch", point, out, "user_c")
    assert (out / "lib" / "blocks.arch").read_text(encoding="utf-8") == LIB
    text = top.read_text(encoding="utf-8")
    assert text.count('fix "s1.k"') == 1  # the spec's own fix line was blanked
    g = check_file(top)
    assert comparable(g) == comparable(expected)
    assert all(c.source == "fixed" for c in g.choices)
    # a second concrete file of the same spec shares the copied import; a different one is not overwritten
    write_concrete(src / "user.arch", {"s2.k": 3}, out, "user_d")
    (out / "lib" / "blocks.arch").write_text(LIB + "\n# edited\n", encoding="utf-8")
    with pytest.raises(ValueError, match="exists with other contents"):
        write_concrete(src / "user.arch", point, out, "user_e")


def test_an_import_outside_the_spec_directory_is_refused(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.arch").write_text(LIB, encoding="utf-8")
    (tmp_path / "spec").mkdir()
    spec = tmp_path / "spec" / "user.arch"
    spec.write_text(USER.replace('"lib/blocks.arch"', '"../lib/blocks.arch"'), encoding="utf-8")
    check_file(spec, allow_outside=True)  # the spec itself is fine
    with pytest.raises(ValueError, match="outside the spec's directory"):
        concrete_spec(spec, {}, allow_outside=True)
    with pytest.raises(ArchError, match="leaves the spec's directory"):
        concrete_spec(spec, {})  # (without allow_outside the import is refused as in check)


def test_a_point_that_does_not_check_raises_the_spec_error(tmp_path):
    with pytest.raises(ArchError, match="fit inside the kernel"):
        concrete_spec(SPACE, {"stages.2.kernel": 3, "stages.2.dilation": 2})
    with pytest.raises(ArchError, match="no model parameter or choice is named"):
        concrete_spec(SPACE, {"stages.9.kernel": 3})
    assert "stages.9.kernel" not in concrete_spec(SPACE, {"stages.9.kernel": 3}, strict_overrides=False)[
        "convnext_space.arch"]
