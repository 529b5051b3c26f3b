"""`archdsl search --start FILE`: points evaluated first (search/starts.py, ArchSearcher), and --asha-grace."""

from __future__ import annotations

from pathlib import Path

import pytest
from archdsl.search.errors import SearchError
from archdsl.search.searcher import ArchSearcher
from archdsl.search.space import Candidate, SearchSpace
from archdsl.search.starts import load_starts

from archdsl.cli import main
from archdsl.errors import ArchError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "search" / "tiny_space.arch"
FULL = {"width": 24, "stages.0.kind": "inception", "stages.0.kernel": 5, "stages.0.blocks": 2,
        "stages.1.kind": "dwconv", "stages.1.kernel": 7, "stages.1.blocks": 1}


def _fixes(values: dict) -> str:
    def lit(v):
        return f'"{v}"' if isinstance(v, str) else repr(v)
    return "".join(f'fix "{k}" = {lit(v)}\n' for k, v in values.items())


def _start(tmp_path: Path, values: dict, name: str = "start.arch") -> Path:
    p = tmp_path / name
    p.write_text("# a starting point\n" + _fixes(values))
    return p


@pytest.mark.parametrize("algo", ["tpe", "random"])
def test_a_complete_start_is_the_first_point_and_is_labelled(tmp_path, algo):
    space = SearchSpace(TINY)
    (st,) = load_starts([str(_start(tmp_path, FULL))], space)
    assert st.complete and st.values == FULL
    s = ArchSearcher(space, algo=algo, budget_ms=5.0, max_trials=10, seed=3, starts=[st])
    first = s.suggest("t1")
    assert first["point"] == FULL and first["start"] == st.name
    second = s.suggest("t2")
    assert "start" not in second and second["hash"] != first["hash"]
    # the same point built from the file's values is the same network
    assert space.check_point(FULL).hash == first["hash"]


def test_a_partial_start_fixes_its_choices_and_samples_the_rest(tmp_path):
    space = SearchSpace(TINY)
    part = {"width": 32, "stages.1.kind": "inception"}
    (st,) = load_starts([str(_start(tmp_path, part))], space)
    assert not st.complete
    seen = set()
    for seed in range(4):
        s = ArchSearcher(space, algo="random", budget_ms=5.0, max_trials=10, seed=seed, starts=[st])
        first = s.suggest("t1")
        assert first["start"] == st.name
        assert {k: first["point"][k] for k in part} == part
        seen.add(first["point"]["stages.0.kind"])
    assert len(seen) > 1  # the open choices are sampled, not set to their first values


def test_a_start_recorded_earlier_is_not_evaluated_again(tmp_path):
    space = SearchSpace(TINY)
    (st,) = load_starts([str(_start(tmp_path, FULL))], space)
    cand = space.check_point(FULL)
    assert isinstance(cand, Candidate)
    history = [{"trial": 0, "status": "ok", "point": FULL, "hash": cand.hash, "score": 0.5, "latency_ms": 1.0,
                "start": st.name}]
    s = ArchSearcher(space, algo="tpe", budget_ms=5.0, max_trials=10, history=history, starts=[st])
    nxt = s.suggest("t1")
    assert "start" not in nxt and nxt["hash"] != cand.hash


def test_start_errors_name_the_fix_line(tmp_path):
    space = SearchSpace(TINY)

    def err(values: dict) -> str:
        with pytest.raises(ArchError) as e:
            load_starts([str(_start(tmp_path, values, "bad.arch"))], space)
        return str(e.value)

    msg = err({"width": 20})
    assert "bad.arch:2:" in msg and "20 is not a value of" in msg and "choice(16, 24, 32)" in msg
    msg = err({"widht": 16})
    assert "bad.arch:2:" in msg and "no choice point" in msg and "width" in msg  # did you mean
    msg = err({"stages.0.blocks": 3})
    assert "bad.arch:2:" in msg and "int_range(1, 2" in msg
    # a choice behind an untaken if: the dilation exists only for the "dilated" mixer
    dil = next(n for n in _dims_with(space, {"stages.0.kind": "dilated"}) if "dilation" in n)
    msg = err({"stages.0.kind": "dwconv", dil: 1})
    assert "bad.arch:3:" in msg and "does not meet choice point" in msg
    # with the dilated mixer the same line is fine
    (ok,) = load_starts([str(_start(tmp_path, {"stages.0.kind": "dilated", dil: 1}))], space)
    assert ok.values[dil] == 1
    # a complete start that the spec's own `require` rejects
    bad = {**FULL, "stages.0.kind": "dilated", "stages.0.kernel": 3, "stages.0.blocks": 1, dil: 2}
    assert "rejects this start" in err(bad)
    empty = tmp_path / "empty.arch"
    empty.write_text("# nothing\n")
    with pytest.raises(SearchError, match="no `fix"):
        load_starts([str(empty)], space)
    with pytest.raises(SearchError, match="no such file"):
        load_starts([str(tmp_path / "missing.arch")], space)
    with pytest.raises(SearchError, match="directory"):
        load_starts([str(tmp_path)], space)
    # a start that contradicts --set
    fixed = SearchSpace(TINY, fixed={"width": 16})
    with pytest.raises(ArchError, match="fixed for the whole search"):
        load_starts([str(_start(tmp_path, {"width": 24}))], fixed)
    (same,) = load_starts([str(_start(tmp_path, {"width": 16, "stages.0.kind": "dwconv"}))], fixed)
    assert same.values == {"stages.0.kind": "dwconv"}


def _dims_with(space: SearchSpace, values: dict) -> list[str]:
    met = []

    def sample(cp):
        met.append(cp.name)
        if cp.name in values:
            return values[cp.name]
        return cp.values[0] if cp.kind == "choice" else cp.lo

    space.resolve(sample)
    return met


def test_cli_refuses_bad_starts_and_grace_without_a_traceback(tmp_path, capsys):
    out = str(tmp_path / "o")
    bad = _start(tmp_path, {"width": 20}, "bad.arch")
    assert main(["search", str(TINY), "--latency-ms", "5", "--start", str(bad), "--out", out]) == 1
    err = capsys.readouterr().err
    assert "bad.arch:2:" in err and "Traceback" not in err
    broken = tmp_path / "broken.arch"
    broken.write_text('fix "width" = \n')
    assert main(["search", str(TINY), "--latency-ms", "5", "--start", str(broken), "--out", out]) == 1
    err = capsys.readouterr().err
    assert "broken.arch:1:" in err and "Traceback" not in err
    assert main(["search", str(TINY), "--latency-ms", "5", "--start", str(tmp_path / "nope.arch"),
                 "--out", out]) == 1
    assert "nope.arch: no such file" in capsys.readouterr().err
    for grace in ("0", "4"):
        assert main(["search", str(TINY), "--latency-ms", "5", "--epochs", "3", "--asha-grace", grace,
                     "--out", out]) == 2
        assert "--asha-grace must be between 1 and --epochs (3)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing started


def test_the_bundled_fashion_starts_are_networks_of_the_fashion_space():
    space = SearchSpace(ROOT / "examples" / "search" / "fashion_space.arch")
    files = sorted((ROOT / "examples" / "search" / "starts").glob("fashion_*.arch"))
    starts = load_starts([str(f) for f in files], space)
    assert len(starts) == 2 and all(st.complete and st.values["stem"] == "conv3s1" for st in starts)
    assert all(st.values["init"] == "kaiming" for st in starts)  # ResNet's own (the space's first is trunc_normal)
    counts = {Path(st.name).stem: space.check_point(st.values).graph.total() for st in starts}
    # the counts their comments state
    assert (counts["fashion_resnet_small"].params, counts["fashion_resnet_small"].macs) == (589_146, 29_494_784)
    assert (counts["fashion_resnet_medium"].params, counts["fashion_resnet_medium"].macs) == (686_474, 40_332_800)
    s = ArchSearcher(space, algo="tpe", budget_ms=5.0, max_trials=10, seed=0, starts=starts)
    first, second, third = (s.suggest(f"t{i}") for i in range(3))
    assert [first["start"], second["start"]] == [st.name for st in starts] and "start" not in third
    assert first["point"] == starts[0].values
