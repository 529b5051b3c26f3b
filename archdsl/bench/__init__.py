"""archdsl.bench: latency measurement — a steady-state, lock-serialized, self-checking timing engine.

    measure(fn) -> Measurement                 median / p10 / p90 of fn() until the median's 95% CI is tight
    compare({"a": fa, "b": fb}) -> {name: Measurement}   the same, candidates interleaved round-robin
    compare_micro(fns, rounds) -> {name: Measurement}      micro-benchmarks: calls batched, fixed clean rounds
    measure(fn, normalize=True)                 also the regime-normalized latency: per-round ratio to a fixed
                                                reference block x this machine's anchor (regime.py)
    measure_until_clean(fn) -> (Measurement, info)         measure; while disturbed, wait for quiet and again
    disturb                                     the probes: run-queue wait per measuring thread, machine load
    bench_model(path, form="deploy", batch=1) -> dict     one forward pass of a .arch model, with fingerprint()
    measurement_lock()                          the cross-process lock every timing loop holds (exclusive)
    compute_lock()                              its shared side: heavy work (training steps) that pauses for it
    table.build_table(space) / table.LatencyTable   per-operator latencies of a search space, cached on disk
                                                    (validated per record: checksum, machine fingerprint)
    predict.Predictor                           whole-model latency from the table plus a fitted calibration

The predictor is not yet accurate enough for the target (docs/latency.md has the measured figures).
"""

from .lock import LockTimeout, compute_lock, default_lock_path, measurement_lock
from .measure import (
           Measurement,
           compare,
           compare_micro,
           fingerprint,
           measure,
           measure_until_clean,
           steady_state_allocator,
)
from .model import ModelRunError, OutOfMemory, bench_model

__all__ = ["Measurement", "ModelRunError", "OutOfMemory", "LockTimeout", "bench_model", "compute_lock", "compare",
           "compare_micro", "fingerprint",
           "measure", "measure_until_clean", "measurement_lock", "default_lock_path", "steady_state_allocator"]
