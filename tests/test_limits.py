"""Resource limits (archdsl/limits.py): each is refused before anything is allocated, with its catalogue message
(docs/errors.md, "Resource limits") at the place in the spec that causes it."""

from __future__ import annotations

import os

import pytest
import torch

import archdsl
from archdsl import limits
from archdsl.api import check_text
from archdsl.cli import main
from archdsl.codegen.module import InputError
from archdsl.errors import ArchError


def _model(stmts: str, inp: str = "3, 8, 8") -> str:
    return f"model m() {{\n    input({inp})\n    {stmts}\n}}\n"


def _error(text: str, file: str = "lim.arch") -> tuple[str, ArchError]:
    with pytest.raises(ArchError) as ei:
        check_text(text, file)
    d = ei.value.diagnostics[0]
    return f"{d.span.line}:{d.span.col} {d.message}", ei.value


# ---------------------------------------------------------------- text and nesting


def test_file_too_big():
    text = _model("relu()") + "#" * limits.MAX_FILE_BYTES
    where, _ = _error(text)
    assert where == f"1:1 file is {len(text)} bytes"


def test_line_too_long():
    text = _model("relu()" + " " * limits.MAX_LINE_CHARS)
    where, e = _error(text)
    assert where == f"3:1 line is {limits.MAX_LINE_CHARS + 10} characters long"
    assert f"at most {limits.MAX_LINE_CHARS} characters" in e.render()


def test_nesting_too_deep():
    n = limits.MAX_EXPR_DEPTH + 5
    where, _ = _error(_model("conv(" + "-" * n + "8)"))
    assert where.endswith(f"nesting is deeper than {limits.MAX_EXPR_DEPTH} levels")
    assert where.startswith("3:")


def test_integer_literal_too_large():
    where, _ = _error(_model("conv(" + "9" * 30 + ")"))
    assert where == "3:10 integer literal 99999999999999999999... is too large"


def test_float_literal_too_large():
    where, _ = _error(_model("conv(int(1e400))"))
    assert where == "3:14 number 1e400 is too large"


def test_integer_overflow():
    where, _ = _error(_model("conv(2 ** 100)"))
    assert where == "3:10 integer overflow (result is larger than 2^62)"


# ---------------------------------------------------------------- values and elaboration


def test_list_too_long():
    where, _ = _error(_model("let x = [1] * 1000000\n    relu()"))
    assert where == f"3:13 list of 1000000 elements is longer than {limits.MAX_LIST}"


def test_range_too_long():
    where, _ = _error(_model("for i in range(1000000000000) { relu() }"))
    assert where == f"3:14 range of 1000000000000 elements is longer than {limits.MAX_LIST}"


def test_string_too_long():
    where, _ = _error(_model('let s0 = "ab"\n    ' + "\n    ".join(f"let s{i + 1} = s{i} + s{i}" for i in range(20))
                             + "\n    relu()"))
    assert f"characters is longer than {limits.MAX_LIST}" in where


def test_too_many_nodes(monkeypatch):
    monkeypatch.setattr(limits, "MAX_NODES", 500)
    where, _ = _error(_model("for i in range(1000) { relu() }"))
    assert where == "3:28 the model has more than 500 operator nodes"


def test_too_many_steps(monkeypatch):
    monkeypatch.setattr(limits, "MAX_STEPS", 1000)
    # within RUNAWAY x the limit as foreseen: run to the real limit
    where, e = _error(_model("for i in range(60) { for j in range(30) { } }"))
    assert where.endswith("the model runs more than 1000 loop iterations and block calls")
    assert "reduce repeat counts" in e.render()


def test_a_runaway_loop_is_refused_after_its_first_iteration():
    """Issue 21: 10^10 empty iterations, or 10^6 nodes, once ran 13-22 s to the limit (and flipped between refused
    and hung). After its first iteration a loop foreseen to pass a limit RUNAWAY times over stops at once, at the
    loop, saying how much it would make."""
    import time

    t0 = time.perf_counter()
    where, _ = _error(_model("for i in range(100000) { for j in range(100000) { } }"))
    assert where.startswith("3:5 ") and "would have about 10,000,100,000 loop iterations" in where
    where, _ = _error(_model("s: for i in range(1000) { b: for j in range(1000) { r: relu() } }"))
    assert "would have about 1,001,000 loop iterations" in where and "(this loop repeats 1,000 times" in where
    assert time.perf_counter() - t0 < 60  # about a second each on 2 quiet cores (no timing target)


def test_a_runaway_recursion_is_refused_after_its_first_call():
    """Issue 21: a binary recursion once took 20 s to reach the step limit. Identical block calls in a row (same
    block, same arguments) are a repetition like a loop: after the first returns, the spec is refused at once."""
    where, e = _error("block t(n: int) { if n > 0 { t(n - 1); t(n - 1) } else { relu() } }\n" + _model("t(40)"))
    assert where.startswith("1:30 the model would have about 2,199,023,255,5")
    assert "(this call of 't' is made 2 times in a row, each making about" in where and len(e.diagnostics) == 1
    fan = "block b0() { relu() }\n" + "".join(
        f"block b{i}() {{ {' '.join(f'b{i - 1}()' for _ in range(10))} }}\n" for i in range(1, 7))
    where, _ = _error(fan + _model("b6()"))
    assert "would have about 1,111,110 loop iterations" in where and "'b5' is made 10 times in a row" in where


@pytest.mark.parametrize("spec", [
    # calls with other arguments cost what they cost: a deep recursion whose second call is cheap is no runaway
    "block t(n: int) { if n > 0 { t(n - 1); t(0) } else { relu() } }\n" + _model("t(60)"),
    "block b() { relu() }\n" + _model("b(); b(); b(); b()"),
    _model("for i in range(3) { for j in range(1000) { relu() } }"),  # within the limits: run to the end
])
def test_repetitions_within_the_limits_are_not_refused(spec):
    check_text(spec, "ok.arch")


def test_layer_names_count_against_a_budget(monkeypatch):
    """Issue 21: 9,000-character layer names in a 100,000-iteration loop grew by 20 MB/s; names are charged as
    they are made."""
    long = "n" * 9000
    where, _ = _error(_model(f"for i in range(100000) {{ {long}: relu() }}"))
    assert where == f"3:30 the model's layer names have more than {limits.MAX_NAME_CHARS:,} characters in all " \
        "(this one has 9,004)"


@pytest.mark.parametrize("stmt", [
    "let big = [[i for i in range(100000)] for j in range(100000)]",  # nested comprehensions: 10^10 elements
    "let big = [[0] * 100000 for j in range(100000)]",
    "let big = range(100000)\n    for i in range(100000) { require big == big }",  # a huge comparison in a loop
])
def test_every_value_built_counts_against_one_budget(stmt):
    """Issue 21: comprehensions, repeated lists and comparisons of long lists are charged as they are built, to
    one budget per elaboration; the spec is refused at its place, at once (it once grew to the memory cap or ran
    for an hour), and the elaboration stops there (no error per loop iteration)."""
    import time

    t0 = time.perf_counter()
    where, e = _error(_model(stmt))
    assert f"more than {limits.MAX_WORK:,} values in all" in where and len(e.diagnostics) == 1
    assert time.perf_counter() - t0 < 30  # refused within about a second on 2 quiet cores (no timing target)


# ---------------------------------------------------------------- memory


BIG = _model("stem: conv(64, k=3)\n    body: conv(4096, k=9)\n    gap()", "3, 64, 64")  # 21.2M params


def test_parse_memory():
    assert limits.parse_memory("8G") == 8 * 10**9
    assert limits.parse_memory("512MiB") == 512 * 2**20
    assert limits.parse_memory("1.5e9") == 1_500_000_000
    assert limits.parse_memory(" 2 gb ") == 2 * 10**9
    assert limits.parse_memory(1000) == 1000
    assert limits.parse_memory("50%") == limits.machine_memory() // 2
    for bad in ("", "lots", "8X", "-1G", "0", "1e", "G"):
        with pytest.raises(ValueError, match="memory limit"):
            limits.parse_memory(bad)


def test_default_limit_is_a_fraction_of_ram(monkeypatch):
    monkeypatch.delenv("ARCHDSL_MAX_MEMORY", raising=False)
    assert limits.memory_limit() == int(limits.DEFAULT_MEMORY_FRACTION * limits.machine_memory())
    assert 0 < limits.machine_memory() < 2**50
    monkeypatch.setenv("ARCHDSL_MAX_MEMORY", "3G")
    assert limits.memory_limit() == 3 * 10**9
    assert limits.memory_limit("1G") == 10**9  # an explicit value wins over the environment


def test_parameters_over_limit_refused_before_allocating(monkeypatch):
    monkeypatch.setenv("ARCHDSL_MAX_MEMORY", "50M")
    allocated = []
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", lambda *a, **k: allocated.append(1))
    with pytest.raises(ArchError) as ei:
        archdsl.build(BIG, file="big.arch")
    d = ei.value.diagnostics[0]
    assert not allocated
    assert (d.span.line, d.span.col) == (4, 11)  # the conv with the most parameters
    assert d.message == "the model has 21,239,552 parameters (85 MB as float32), more than the memory limit"
    assert d.hint.startswith("the limit is 50 MB (--max-memory / ARCHDSL_MAX_MEMORY=50M)")
    assert d.notes[0] == "'body' (conv) has 21,237,760 parameters, at big.arch:4:11"


def test_activations_over_limit_refused(monkeypatch):
    monkeypatch.setenv("ARCHDSL_MAX_MEMORY", "1G")
    text = _model("stem: conv(64, k=3)\n    wide: conv(4096, k=1)\n    gap()", "3, 256, 256")
    with pytest.raises(ArchError) as ei:
        archdsl.build(text, file="wide.arch")
    d = ei.value.diagnostics[0]
    assert (d.span.line, d.span.col) == (4, 11)
    assert d.message.startswith("one inference pass at batch 1 holds at its peak 1.09 GB of activations (the "
                                "largest: 'wide' (conv), output 4096x256x256)")
    assert archdsl.build(text, file="wide.arch", max_memory="2G") is not None  # explicit max_memory= wins


def test_activation_peak_frees_after_last_use():
    g = check_text(_model("a: conv(8)\n    b: conv(8)\n    c: conv(8)\n    gap()", "3, 10, 10"), "peak.arch")
    peak, at = limits.activation_peak(g)
    assert peak == 2 * 800  # two 8x10x10 maps alive at once (the input, 300, is freed after a)
    assert at in ("a", "b", "c")
    deep = check_text(_model("for i in range(50) { conv(8) }\n    gap()", "3, 10, 10"), "deep.arch")
    assert limits.activation_peak(deep)[0] == 1600  # not 50 x 800: a chain frees as it goes


def test_forward_batch_over_limit(monkeypatch):
    monkeypatch.setenv("ARCHDSL_MAX_MEMORY", "200M")
    m = archdsl.build(_model("conv(64)\n    gap()", "3, 64, 64"), file="b.arch").eval()
    with torch.inference_mode():
        assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 64)
        with pytest.raises(InputError, match=r"inference pass on input \(1000, 3, 64, 64\) needs about 1.1 GB"):
            m(torch.zeros(1, 3, 64, 64).expand(1000, 3, 64, 64))
    m.train()  # training keeps every activation: a smaller batch is already too much
    with pytest.raises(InputError, match=r"training pass on input \(300, 3, 64, 64\)"):
        m(torch.zeros(1, 3, 64, 64).expand(300, 3, 64, 64))


def test_deploy_keeps_the_models_limit(monkeypatch):
    monkeypatch.delenv("ARCHDSL_MAX_MEMORY", raising=False)
    m = archdsl.build(_model("conv(64)\n    bn()\n    gap()", "3, 64, 64"), file="d.arch", max_memory="100M")
    assert archdsl.deploy(m).memory_limit == 100 * 10**6


def test_cli_max_memory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ARCHDSL_MAX_MEMORY", raising=False)
    spec = tmp_path / "big.arch"
    spec.write_text(BIG)
    assert main(["--max-memory", "lots", "check", str(spec)]) == 2
    assert "--max-memory 'lots' is not a size" in capsys.readouterr().err
    assert main(["--max-memory", "1e400", "check", str(spec)]) == 2  # an overflow, not a traceback
    assert "beyond any machine's memory" in capsys.readouterr().err
    # --input: a 5,000-digit size and one past 2^62 elements are usage errors, not an internal error
    assert main(["check", str(spec), "--input", "3x" + "9" * 5000 + "x3"]) == 2
    assert "--input sizes must be under 10^18" in capsys.readouterr().err
    assert main(["check", str(spec), "--input", "3x100000000000x100000000000"]) == 2
    assert "more than any model can take" in capsys.readouterr().err
    assert main(["check", str(spec)]) == 0  # 85 MB: within the default limit (half of this machine's memory)
    assert main(["--max-memory", "50M", "check", str(spec)]) == 1  # what load would refuse, check refuses
    assert "big.arch:4:11: error: the model has 21,239,552 parameters" in capsys.readouterr().err
    assert main(["--max-memory", "50M", "check", str(spec), "--count-only"]) == 0  # only the counts
    assert main(["--max-memory", "50M", "bench", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "big.arch:4:11: error: the model has 21,239,552 parameters" in err and "Traceback" not in err
    assert "ARCHDSL_MAX_MEMORY" not in os.environ  # the option holds for that command only


def test_search_rejects_points_over_the_limit(tmp_path, monkeypatch):
    from archdsl.search.space import Rejection, SearchSpace

    spec = tmp_path / "s.arch"
    spec.write_text(_model('conv(choice(8, 4096, name="w"), k=9)\n    gap()', "3, 64, 64"))
    monkeypatch.setenv("ARCHDSL_MAX_MEMORY", "20M")
    space = SearchSpace(spec)
    small, big = space.check_point({"w": 8}), space.check_point({"w": 4096})
    assert not isinstance(small, Rejection)
    assert isinstance(big, Rejection) and "exceeds the memory limit" in big.first


def test_allocation_refused_by_the_machine_is_worded_at_the_largest_layer(tmp_path):
    """A 6.4 GB model under a 4 GB address-space cap: within --max-memory, but the process cannot have it. load
    says so at the layer with the most parameters (torch's raw DefaultCPUAllocator error once reached the user)."""
    import resource
    import subprocess
    import sys

    spec = tmp_path / "big6.arch"
    spec.write_text("model m() {\n    input(3, 8, 8)\n    stem: conv(40000, k=7)\n    b: conv(40000, k=1)\n}\n")
    code = ("import archdsl, sys\ntry:\n    archdsl.load(sys.argv[1], max_memory='20G')\n"
            "except archdsl.ArchError as e:\n    print(e)\n")

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=300,
                         preexec_fn=cap, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert "big6.arch:4:8: error: out of memory building m: its 1,605,960,000 parameters" in out.stdout, out
    assert "Traceback" not in out.stderr


def test_a_file_of_dense_tokens_is_refused_before_it_is_parsed():
    """Issue 21: 1.6 MB of `1,1,1,...` under the 2 MB cap once took 47 s and 1.4 GB to parse before a list was
    refused; the token count is checked first."""
    rows = "\n".join(f"    let a{i} = [" + ",".join("1" for _ in range(1100)) + "]" for i in range(200))
    where, _ = _error(f"model m() {{\n{rows}\n    input(3, 8, 8)\n}}\n")
    assert where.endswith(f"the file has more than {limits.MAX_TOKENS:,} tokens")
