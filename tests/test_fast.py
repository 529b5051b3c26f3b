"""The measured fused-kernel runtime (archdsl.codegen.fast): same function as the training form on random
weights and BN statistics, the block patterns found, choices cached, bad candidates refused, fallback."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.api import check_file, check_text
from archdsl.codegen import fast as fastmod
from archdsl.codegen.fast import FastModule
from archdsl.codegen.module import build_module
from archdsl.codegen.tune import TuneCache
from archdsl.kernels import native

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

needs_native = pytest.mark.skipif(not native.available(), reason=f"no native kernels: {native.why_unavailable()}")


def randomized(graph, seed: int = 0):
    """The training form in eval mode with random weights, BN statistics, layer scales and GRN gammas (their
    initial values, 1e-6 and 0, would hide a wrong block body)."""
    torch.manual_seed(seed)
    m = build_module(graph).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.normal_(1, 0.2)
                mod.bias.normal_(0, 0.2)
        for name, p in m.named_parameters():
            if name.endswith(("gamma", "beta")):
                p.normal_(0, 0.5)
    return m


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


MODELS = [("convnext_atto", {}, 12), ("inceptionnext_atto", {}, 12), ("unireplknet_a", {}, 12),
          ("convnext_atto", {"kernel": 31}, 12)]


@pytest.mark.parametrize("name,overrides,blocks", MODELS, ids=[f"{m}{o}" for m, o, _ in MODELS])
@pytest.mark.parametrize("prefer", [("fused", "kernel"), ("torch_cl",)], ids=["kernels", "plain_cl"])
def test_same_function_as_training_form(name, overrides, blocks, prefer, tmp_path):
    g = check_file(EXAMPLES / f"{name}.arch", overrides, input_shape=(3, 64, 64))
    m = randomized(g)
    f = FastModule(archdsl.deploy(m), cache=TuneCache(tmp_path / "t.jsonl"), prefer=prefer)
    assert sum(1 for s in f.steps if s.kind == "block") == blocks
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = copy.deepcopy(m).double()(x.double())  # float64: not torch's float32 rounding, which varies by CPU
        out = f(x)
    assert out.shape == ref.shape
    assert rel_err(ref, out.double()) < 1e-4
    if native.available() and prefer[0] == "fused":
        assert sum(p["choice"] == "fused" for p in f.plan()) == blocks


@pytest.mark.parametrize("name,overrides,blocks", MODELS, ids=[f"{m}{o}" for m, o, _ in MODELS])
def test_every_candidate_of_every_step_agrees(name, overrides, blocks, tmp_path):
    """Each step's candidates (fused kernels with either GEMM, plain modules in either layout) on the values the
    plain path computes, channels-last and contiguous inputs alike."""
    g = check_file(EXAMPLES / f"{name}.arch", overrides, input_shape=(3, 48, 48))
    m = randomized(g, seed=1)
    f = FastModule(archdsl.deploy(m), cache=TuneCache(tmp_path / "t.jsonl"))
    vals = {f.base.input_node: torch.randn(2, 3, 48, 48)}
    seen = set()
    with torch.inference_mode():
        for step in f.steps:
            args = [vals[src] for src, _ in step.refs]
            ref = step.candidates["torch"](*args)
            for fmt in (torch.channels_last, torch.contiguous_format):
                fargs = [a.contiguous(memory_format=fmt) if a.dim() == 4 else a for a in args]
                for cname, cand in step.candidates.items():
                    out = cand(*fargs)
                    assert out.shape == ref.shape, (step.out, cname)
                    assert rel_err(ref, out) < 1e-5, (step.out, cname, fmt)
                    seen.add(cname)
            vals[step.out] = ref
    if native.available():
        assert {"fused", "fused_gemm"} <= seen


@needs_native
def test_measured_choice_is_cached_and_reused(tmp_path, monkeypatch):
    g = check_file(EXAMPLES / "convnext_atto.arch", input_shape=(3, 32, 32))
    m = randomized(g)
    dep = archdsl.deploy(m)
    cache = TuneCache(tmp_path / "tune.jsonl")
    x = torch.randn(1, 3, 32, 32)
    f = FastModule(dep, cache=cache, max_seconds=0.2).tune(x)
    plan = [(p["node"], p["choice"]) for p in f.plan()]
    assert (tmp_path / "tune.jsonl").exists()
    assert any(len(p["ms"]) > 1 for p in f.plan())  # candidates were timed

    def no_measuring(*a, **k):
        raise AssertionError("a cached choice was measured again")

    monkeypatch.setattr(fastmod, "pick", no_measuring)
    # (a narrow choice would be measured again on a quiet machine: the next test)
    monkeypatch.setattr(fastmod, "is_quiet", lambda threads: False)
    # a new FastModule with a new TuneCache object reads the file, as a fresh process would
    g2 = FastModule(dep, cache=TuneCache(tmp_path / "tune.jsonl"), max_seconds=0.2).tune(x)
    assert [(p["node"], p["choice"]) for p in g2.plan()] == plan
    with torch.inference_mode():
        assert rel_err(m(x), g2(x)) < 1e-4


@needs_native
def test_a_new_input_shape_is_tuned_on_first_use(tmp_path):
    g = check_file(EXAMPLES / "convnext_atto.arch", input_shape=(3, 32, 32))
    m = randomized(g)
    f = FastModule(archdsl.deploy(m), cache=TuneCache(tmp_path / "t.jsonl"), prefer=("fused", "kernel"))
    for shape in [(1, 3, 32, 32), (3, 3, 48, 40)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            assert rel_err(m(x), f(x)) < 1e-4
    assert len(f.steps[0].choice) == 2


@needs_native
def test_a_candidate_that_disagrees_is_never_chosen(tmp_path, caplog):
    g = check_file(EXAMPLES / "convnext_atto.arch", input_shape=(3, 32, 32))
    m = randomized(g)
    f = FastModule(archdsl.deploy(m), cache=TuneCache(tmp_path / "t.jsonl"), max_seconds=0.2)
    block = next(s for s in f.steps if s.kind == "block")
    good = block.candidates["fused"]
    block.candidates["fused"] = lambda *a: good(*a) * 1.01  # a wrong kernel, however fast
    block.candidates["torch"] = block.candidates["torch_cl"]
    with caplog.at_level(logging.WARNING, logger="archdsl.fast"):
        f.tune(torch.randn(1, 3, 32, 32))
    assert all(c != "fused" for c in block.choice.values())
    assert "disagrees" in caplog.text and block.out in caplog.text


def test_without_native_kernels_only_plain_candidates(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHDSL_NO_NATIVE", "1")
    native.reset()
    try:
        assert not native.available()
        g = check_file(EXAMPLES / "inceptionnext_atto.arch", input_shape=(3, 32, 32))
        m = randomized(g)
        f = FastModule(archdsl.deploy(m), cache=TuneCache(tmp_path / "t.jsonl"), max_seconds=0.2)
        assert all(set(s.candidates) <= {"torch", "torch_cl", "torch_cf"} for s in f.steps)
        x = torch.randn(1, 3, 32, 32)
        with torch.inference_mode():
            assert rel_err(m(x), f(x)) < 1e-5
    finally:
        monkeypatch.delenv("ARCHDSL_NO_NATIVE")
        native.reset()


def test_deploy_kernels_argument_and_load_form(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHDSL_TUNE_CACHE", str(tmp_path / "tune.jsonl"))
    spec = ("model m() { input(3, 16, 16) conv(8) bn() relu() "
            "residual { dwconv(5) nhwc() layernorm() linear(32) gelu() linear(8) nchw() } }")
    f = archdsl.build(spec, form="fast")
    assert isinstance(f, FastModule)
    assert [s.kind for s in f.steps].count("block") == 1
    x = torch.randn(1, 3, 16, 16)
    plain = archdsl.build(spec, form="deploy")
    plain.load_state_dict(f.base.state_dict())
    with torch.inference_mode():
        assert rel_err(plain(x), f(x)) < 1e-5
    assert (tmp_path / "tune.jsonl").exists() or not native.available()
    with pytest.raises(ValueError, match="kernels must be"):
        archdsl.deploy(build_module(check_text(spec)), kernels="triton")
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\)"):
        f(torch.randn(1, 4, 16, 16))


def test_off_the_cpu_the_plain_deploy_form_runs(tmp_path, monkeypatch, caplog):
    """archdsl's kernels are CPU code: deploy(kernels="auto") of a model on another device is the plain form, and a
    FastModule moved there runs its plain form (the meta device stands in for CUDA here; the real CUDA run is
    benchmarks/reference_models.py on a GPU machine); weights and input on different devices are one clear error."""
    monkeypatch.setenv("ARCHDSL_TUNE_CACHE", str(tmp_path / "tune.jsonl"))
    spec = ("model m() { input(3, 16, 16) conv(8) bn() relu() "
            "residual { dwconv(5) nhwc() layernorm() linear(32) gelu() linear(8) nchw() } }")
    f = archdsl.build(spec, form="fast")
    x = torch.randn(1, 3, 16, 16)
    f(x)
    f.to("meta")
    with caplog.at_level(logging.WARNING, logger="archdsl.fast"):
        y = f(x.to("meta"))
    assert y.shape == (1, 8, 16, 16) and y.device.type == "meta"
    assert "run on the CPU" in caplog.text
    with pytest.raises(ValueError, match="weights are on meta and its input on cpu"):
        f(x)
    m = build_module(check_text(spec)).to("meta")
    assert not isinstance(archdsl.deploy(m, kernels="auto"), FastModule)


def test_a_narrow_choice_is_measured_again_on_a_quiet_machine_and_cache_sources_are_reported(tmp_path,
                                                                                               monkeypatch):
    """Issue 20: each cached choice keeps its margin over the runner-up and when it was measured; a narrow one
    (under NARROW) is measured again when its step is next built on a quiet machine, until NARROW_CHECKS clean
    comparisons agree; plan() says which choices came from the cache, and how old they are."""
    g = check_file(EXAMPLES / "convnext_atto.arch", input_shape=(3, 32, 32))
    dep = archdsl.deploy(randomized(g))
    x = torch.randn(1, 3, 32, 32)
    calls: list[int] = []

    def close_race(cands, **kw):  # every comparison: the first candidate 5% ahead of the second, cleanly
        calls.append(len(cands))
        names = list(cands)
        return names[0], {n: 1.0 + 0.05 * i for i, n in enumerate(names)}, True

    monkeypatch.setattr(fastmod, "pick", close_race)
    monkeypatch.setattr(fastmod, "is_quiet", lambda threads: True)
    path = tmp_path / "t.jsonl"
    first = FastModule(dep, cache=TuneCache(path)).tune(x)
    measured = len(calls)
    # each signature measured once; later steps of the same signature read the choice back
    assert measured and {p["source"]["from"] for p in first.plan() if len(p["ms"]) > 1} == {"measured", "cache"}
    rec = next(r for r in TuneCache(path)._load().values() if len(r["ms"]) > 1)
    assert rec["margin"] == pytest.approx(0.05) and rec["checks"] == 1 and rec["t"] > 0
    # quiet: the narrow choices are measured once more (now two comparisons agree), then trusted
    second = FastModule(dep, cache=TuneCache(path)).tune(x)
    assert len(calls) == 2 * measured and any(p["source"].get("rechecked") for p in second.plan())
    third = FastModule(dep, cache=TuneCache(path)).tune(x)
    assert len(calls) == 2 * measured
    sources = [p["source"] for p in third.plan() if len(p["ms"]) > 1]
    assert sources and all(s["from"] == "cache" and s["margin"] == pytest.approx(0.05) for s in sources)
    # on a busy machine a narrow choice that has not been confirmed is used as it is, not measured
    monkeypatch.setattr(fastmod, "is_quiet", lambda threads: False)
    path.unlink()
    FastModule(dep, cache=TuneCache(path)).tune(x)
    FastModule(dep, cache=TuneCache(path)).tune(x)
    assert len(calls) == 3 * measured
    from archdsl.bench.model import tune_summary

    s = tune_summary(third.plan())
    assert s["from_cache"] == len(sources) and s["measured"] == 0 and s["narrowest_margin"] == pytest.approx(0.05)
    assert 0 <= s["oldest_cache_hours"] < 1
