"""The measurement engine: statistics, the stop rule (on a fake clock), drift, the cross-process lock, the
fingerprint, the allocator policy and `archdsl bench` exit codes. No assertion depends on a measured time."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fake_clock import FakeClock

from archdsl.bench import (
    LockTimeout,
    compare,
    compare_micro,
    compute_lock,
    default_lock_path,
    fingerprint,
    measure,
    measurement_lock,
    stats,
    steady_state_allocator,
)
from archdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
ATTO = str(ROOT / "examples" / "convnext_atto.arch")


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "locks"))


# --- statistics ------------------------------------------------------------------------------------------

def test_percentiles_match_numpy():
    np = pytest.importorskip("numpy")
    xs = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0]
    for q in (0, 10, 50, 90, 100):
        assert stats.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert stats.median([1.0, 2.0, 3.0, 4.0]) == 2.5


def test_median_ci_order_statistics():
    xs = list(range(1, 101))  # n = 100: ranks floor(50 - 9.8) = 40 and ceil(51 + 9.8) = 61
    assert stats.median_ci(xs) == (40, 61)
    assert stats.rel_ci_halfwidth(xs) == pytest.approx(10.5 / 50.5)
    assert stats.rel_ci_halfwidth([1.0] * 5) == math.inf  # too few samples to say anything
    assert stats.rel_ci_halfwidth([2.0] * 6) == 0.0


def test_drift_detection():
    assert stats.drifted([1.0] * 10 + [1.2] * 10) == (True, pytest.approx(0.2))
    assert stats.drifted([1.0] * 10 + [1.05] * 10)[0] is False
    assert stats.drifted([1.0, 2.0]) == (False, 0.0)  # too few to judge


# --- the stop rule on a fake clock -----------------------------------------------------------------------

def test_measure_statistics_on_fake_clock():
    clock = FakeClock()
    durations = [9.0] * 2 + [float(i) for i in range(1, 11)]  # 2 warm-ups, then 1..10
    m = measure(clock.work(durations), warmup=2, min_runs=10, max_runs=10, max_seconds=1e9, reference=False,
                timer=clock)
    assert m.runs == 10 and m.samples == [float(i) for i in range(1, 11)]
    assert (m.median, m.p10, m.p90, m.min) == (5.5, pytest.approx(1.9), pytest.approx(9.1), 1.0)
    assert m.stop == "max_runs" and not m.stable
    assert m.reference_median is None and not m.drift


def test_constant_time_stops_at_min_runs():
    clock = FakeClock()
    m = measure(clock.work([1e-3] * 10_000), warmup=3, min_runs=10, max_runs=1000, max_seconds=1e9,
                reference=False, timer=clock)
    assert m.stop == "converged" and m.runs == 10 and m.stable and m.rel_ci == pytest.approx(0.0, abs=1e-9)
    assert m.median == pytest.approx(1e-3)


def test_noisy_function_hits_the_time_cap():
    clock = FakeClock()
    noisy = [1.0, 3.0] * 10_000  # the median's CI always spans [1, 3]
    m = measure(clock.work(noisy), warmup=0, min_runs=10, max_runs=10_000, max_seconds=100.0, reference=False,
                timer=clock)
    assert m.stop == "max_seconds" and not m.stable and m.rel_ci > 0.02
    assert 45 <= m.runs <= 55  # about 100 s of 2 s per run pair


def test_noisy_function_hits_the_run_cap():
    clock = FakeClock()
    m = measure(clock.work([1.0, 3.0] * 100), warmup=0, min_runs=5, max_runs=30, max_seconds=1e9,
                reference=False, timer=clock)
    assert m.stop == "max_runs" and m.runs == 30 and not m.stable


def test_reference_drift_triggers_one_remeasure_and_is_flagged():
    clock = FakeClock()
    # the reference takes 1 ms for the first 10 rounds, then 2 ms: a regime change, every time it is measured
    ref_times = ([1e-3] * 10 + [2e-3] * 10) * 2
    m = measure(clock.work([1e-3] * 100), warmup=0, min_runs=20, max_runs=20, max_seconds=1e9,
                reference=clock.work(ref_times), timer=clock)
    assert m.remeasured and m.drift and not m.stable
    assert m.reference_change == pytest.approx(1.0)


def test_reference_drift_once_is_remeasured_clean():
    clock = FakeClock()
    ref_times = [1e-3] * 10 + [2e-3] * 10 + [1e-3] * 20
    m = measure(clock.work([1e-3] * 100), warmup=0, min_runs=20, max_runs=20, max_seconds=1e9,
                reference=clock.work(ref_times), timer=clock)
    assert m.remeasured and not m.drift and m.stable


def test_compare_interleaves_round_robin():
    order: list[str] = []
    fns = {k: (lambda k=k: order.append(k)) for k in "ABC"}
    out = compare(fns, rounds=4, warmup=1, min_runs=4, reference=lambda: order.append("ref"), detect=False)
    assert list(out) == ["A", "B", "C"] and all(m.runs == 4 for m in out.values())
    assert order == ["A", "B", "C", "ref"] * 5  # one warm-up round, then four measured rounds


def test_compare_micro_batches_calls_and_drops_hopeless_candidates():
    clock = FakeClock()
    calls = {"fast": 0, "ours": 0, "slow": 0}

    def work(name, dt):
        def fn():
            calls[name] += 1
            clock.t += dt
        return fn
    # a 10 ms sample is 10 calls of the 1 ms candidates and 1 call (at least) of the 40 ms one
    fns = {"fast": work("fast", 1e-3), "ours": work("ours", 2e-3), "slow": work("slow", 40e-3)}
    out = compare_micro(fns, 7, sample_s=10e-3, warmup=1, drop_slower_than=3.0, keep="ours", timer=clock)
    assert list(out) == ["fast", "ours", "slow"]
    assert out["fast"].median == pytest.approx(1e-3) and out["ours"].median == pytest.approx(2e-3)
    assert out["slow"].median == pytest.approx(40e-3) and out["slow"].runs == 3  # screened out after 3 rounds
    assert out["fast"].runs == out["ours"].runs == 7
    # warm-up + sizing call, 3 screening rounds and 7 timed rounds of 10 (fast) or 5 (ours) calls each
    assert calls == {"fast": 2 + 10 * 10, "ours": 2 + 10 * 5, "slow": 2 + 3}
    kept = compare_micro({"ours": work("ours", 2e-3), "slow": work("slow", 40e-3)}, 4, sample_s=10e-3,
                         drop_slower_than=3.0, keep="slow", timer=clock)
    assert kept["slow"].runs == 4 and kept["ours"].runs == 4  # `keep` is never dropped, the fastest never is


def test_real_clock_smoke():
    m = measure(lambda: sum(range(100)), warmup=1, min_runs=6, max_runs=50, max_seconds=1.0)
    d = m.disturbance
    assert d["probe"] in ("schedstat", "rusage") and d["rounds"] == m.runs + d["discarded"] <= 50
    if not m.disturbed:  # on a busy machine too few rounds may be clean; then the result says so instead
        assert 6 <= m.runs and m.min <= m.median <= m.p90 and m.reference_median is not None


# --- the lock --------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from archdsl.bench import measurement_lock
    with measurement_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def test_file_lock_excludes_another_process(tmp_path):
    path = tmp_path / "measure.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockTimeout):
            with measurement_lock(path, timeout=0.2):
                pass
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=20) == 0
        with measurement_lock(path, timeout=10) as got:
            assert got == path
    finally:
        if holder.poll() is None:
            holder.kill()


def test_lock_is_reentrant_and_default_path_follows_env(tmp_path):
    assert default_lock_path() == tmp_path / "locks" / "measure.lock"
    with measurement_lock(timeout=1):
        with measurement_lock(timeout=1):  # compare() -> measure() nesting must not deadlock
            pass
    assert default_lock_path().exists()


COMPUTER = textwrap.dedent("""
    import sys, time
    from archdsl.bench import compute_lock
    # a stream of short compute slices (training steps), back to back, until stdin closes
    import threading
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    first = True
    while not stop.is_set():
        with compute_lock(sys.argv[1]):
            if first:
                print("computing", flush=True)
                first = False
            time.sleep(0.02)
""")


def test_compute_slices_exclude_a_measurement_and_cannot_starve_it(tmp_path):
    path = tmp_path / "measure.lock"
    worker = subprocess.Popen([sys.executable, "-c", COMPUTER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "computing"
        # the stream of shared slices holds back the exclusive side only until the current slice ends:
        # the turnstile stops new slices from starting while a measurement waits
        t0 = time.monotonic()
        with measurement_lock(path, timeout=5):
            waited = time.monotonic() - t0
            held = Path(str(path) + ".turnstile").exists()
        assert waited < 2.0 and held
    finally:
        worker.stdin.close()
        assert worker.wait(timeout=20) == 0


def test_compute_lock_waits_for_a_measurement(tmp_path):
    path = tmp_path / "measure.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    got = []
    try:
        assert holder.stdout.readline().strip() == "locked"
        def slice_():
            with compute_lock(path):
                got.append(1)

        t = threading.Thread(target=slice_)
        t.start()
        t.join(0.5)
        assert not got  # blocked while the other process measures
        holder.stdin.write("\n")
        holder.stdin.flush()
        t.join(20)
        assert got == [1]
    finally:
        if holder.poll() is None:
            holder.kill()


def test_compute_lock_inside_own_measurement_does_not_deadlock(tmp_path):
    path = tmp_path / "measure.lock"
    with measurement_lock(path, timeout=1):
        with compute_lock(path):  # this process is the one measuring: pass through
            pass
    with compute_lock(path), compute_lock(path):  # shared: several holders at once
        pass


# --- machine state ---------------------------------------------------------------------------------------

def test_fingerprint_fields():
    fp = fingerprint()
    for key in ("cpu_model", "physical_cores", "logical_cores", "torch_threads", "torch_version", "cuda_device",
                "hash"):
        assert key in fp
    assert isinstance(fp["cpu_model"], str) and fp["cpu_model"]
    assert fp["logical_cores"] >= fp["physical_cores"] >= 1
    assert len(fp["hash"]) == 12 and fingerprint()["hash"] == fp["hash"]  # stable


def test_fingerprint_tells_instruction_sets_apart(monkeypatch):
    """One model name ("AMD EPYC" under a hypervisor) covers hosts with and without AVX-512: their latencies must
    not share a cache key."""
    from archdsl.bench import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "fma", "sse4_2"}))
    avx2 = fingerprint()
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}))
    avx512 = fingerprint()
    assert avx2["isa"] == "avx2 fma" and avx512["isa"] == "avx2 fma avx512f avx512_bf16"
    assert avx2["hash"] != avx512["hash"]
    with_avx512 = machine.machine_hash()
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert machine.machine_hash() != with_avx512  # the regime anchors' and latency tables' key


def test_cpu_flags_reads_this_cpu():
    from archdsl.bench.machine import cpu_flags

    flags = cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").exists() and platform.machine() in ("x86_64", "AMD64"):
        assert "sse2" in flags  # every x86-64 CPU


def test_mallopt_applied_without_error():
    status = steady_state_allocator()
    assert set(status) == {"applied", "detail"}
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert status["applied"], status


# --- the command line ------------------------------------------------------------------------------------

def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archdsl", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_bench_cli_json():
    r = _run("bench", "examples/convnext_atto.arch", "--input", "3x32x32", "--json", "--threads", "1",
             "--max-seconds", "2")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    for key in ("model", "form", "batch", "input_shape", "median_ms", "p10_ms", "p90_ms", "min_ms", "runs",
                "rel_ci", "stable", "stop", "reference_median_ms", "drift", "fingerprint", "allocator"):
        assert key in data
    assert data["input_shape"] == [3, 32, 32] and data["form"] == "deploy" and data["threads"] == 1
    assert data["p10_ms"] <= data["median_ms"] <= data["p90_ms"] and data["runs"] >= 1
    assert data["fingerprint"]["torch_threads"] == 1


def test_bench_cli_text(capsys):
    assert main(["bench", ATTO, "--input", "3x32x32", "--form", "train", "--threads", "1",
                 "--max-seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "median" in out and "p90" in out and "fingerprint" in out and "train form" in out


def test_bench_cli_fast_form(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHDSL_TUNE_CACHE", str(tmp_path / "tune.jsonl"))
    assert main(["bench", ATTO, "--input", "3x32x32", "--form", "fast", "--threads", "1",
                 "--max-seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "fast form" in out and "step choices" in out and "measured now" in out


def test_bench_cli_ort_runtime(capsys):
    """Issue 19: `--runtime ort`: the deploy form exported to ONNX and timed in ONNX Runtime; the result names it."""
    pytest.importorskip("onnxruntime")
    assert main(["bench", ATTO, "--input", "3x32x32", "--set", "depths=[1,1,1,1]", "--runtime", "ort", "--threads",
                 "1", "--max-seconds", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["form"] == "ort" and data["runtime"] == "ort" and data["median_ms"] > 0


def test_the_ort_runtime_without_its_extra_is_one_line(monkeypatch, capsys):
    from archdsl.bench.runtimes import RuntimeUnavailable, require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(RuntimeUnavailable, match=r"needs the \[export\] extra \(onnxruntime is not installed\)"):
        require("ort")
    assert main(["bench", ATTO, "--runtime", "ort"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'archdsl[export]'" in err and err.count("\n") <= 2 and "Traceback" not in err


@pytest.mark.parametrize("args, needle", [
    (["--form", "turbo"], "--form must be"),
    (["--batch", "0"], "--batch must be a positive integer"),
    (["--threads", "0"], "--threads must be a positive integer"),
    (["--input", "3x32"], "--input must look like"),
])
def test_bench_cli_usage_errors_exit_2(capsys, args, needle):
    assert main(["bench", ATTO, *args]) == 2
    assert needle in capsys.readouterr().err


def test_bench_cli_input_the_model_cannot_take_exits_1(capsys):
    assert main(["bench", ATTO, "--input", "3x8x8"]) == 1
    err = capsys.readouterr().err
    assert "convnext_atto.arch:" in err and "error:" in err and "Traceback" not in err


def test_bench_cli_spec_error_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.arch"
    bad.write_text("model m() {\n    input(3, 32, 32)\n    cnov(64, k=3)\n}\n", encoding="utf-8")
    assert main(["bench", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.arch:3:5: error: unknown op 'cnov'" in err and "Traceback" not in err


@pytest.mark.parametrize("exc, needle", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB"), "out of memory"),
    (MemoryError(), "out of memory"),
    (RuntimeError("boom in node stages.0"), "failed: boom in node stages.0"),
])
def test_bench_cli_oom_and_run_failures_exit_1(monkeypatch, capsys, exc, needle):
    import archdsl.codegen.module as cm

    def broken(graph):
        raise exc
    monkeypatch.setattr(cm, "build_module", broken)
    assert main(["bench", ATTO, "--input", "3x32x32"]) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and "internal error" not in err


def test_reference_busy_records_the_best_and_flags_a_slow_machine(tmp_path, monkeypatch):
    from archdsl.bench.model import BUSY_FACTOR, reference_busy

    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path))
    assert reference_busy(1e-4, "m-1-cpu") == (None, False)  # the first run on a machine sets the baseline
    assert reference_busy(1.2e-4, "m-1-cpu") == (1e-4, False)  # within BUSY_FACTOR
    assert reference_busy(1e-4 * BUSY_FACTOR * 1.01, "m-1-cpu") == (1e-4, True)
    assert reference_busy(0.5e-4, "m-1-cpu") == (1e-4, False)  # faster: the new best
    assert reference_busy(0.9e-4, "m-1-cpu") == (0.5e-4, True)
    assert reference_busy(1e-3, "m-2-cpu") == (None, False)  # keys (machine, threads, device) are separate
    assert reference_busy(None, "m-1-cpu") == (None, False)
    (tmp_path / "reference_best.json").write_text("{not json")
    assert reference_busy(1e-4, "m-1-cpu") == (None, False)  # a broken cache file is started afresh


def test_bench_says_busy_when_the_whole_machine_was_slow(tmp_path, monkeypatch, capsys):
    """Drift inside one run cannot see a load that lasts the whole run; the recorded best reference can."""
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path))
    args = ["bench", ATTO, "--input", "3x32x32", "--threads", "1", "--max-seconds", "0.5", "--raw"]
    assert main(args) == 0
    assert "BUSY" not in capsys.readouterr().out
    best = tmp_path / "reference_best.json"
    data = json.loads(best.read_text())
    assert len(data) == 1
    best.write_text(json.dumps({k: v / 100 for k, v in data.items()}))  # as if this machine once ran 100x faster
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "UNSTABLE (machine busy: the reference GEMM ran" in out and "BUSY: the reference GEMM ran" in out
