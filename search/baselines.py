"""Hand-designed baselines beside a search: each scaled to the latency budget by its one knob, then trained (or
scored) with the trials' own recipe, so the search's best can be compared with it at equal measured latency.

Takes: baseline spec paths (concrete models whose parameter `s` feeds `scaling(s=s, ...)`, pycls fast compound
scaling), the search's settings (`trial.TrialSettings`: budget, data set, epochs, objective, input shape, latency
meters) and a progress callback. Returns: one JSON-ready record per baseline (`run_baselines`), also written to
OUT/baselines.json, with the scaled concrete spec in OUT/baselines/<name>.arch:
    name, file, knob, s, status (ok | over_budget | unmeasured | failed), latency_ms, latency (Measurement
    JSON), params, macs, score, accuracy, accuracies (per epoch), steps [{s, latency_ms, status}], arch, error.

Scaling: the latency of a scaled model grows with s but is measured (noisy, and flat where rounding maps several
s to one network), so the knob is bracketed by doubling or halving from s=1 and then bisected in log space;
the largest s whose measured latency fits the budget wins. Networks met twice (same resolved parameters) are
measured once.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..errors import ArchError
from .errors import SearchError

__all__ = ["KNOB", "S_RANGE", "validate_baselines", "scale_to_budget", "run_baselines", "pending_baselines",
           "compare_with_best", "baseline_lines", "BASELINES_FILE"]

KNOB = "s"
S_RANGE = (1 / 64, 64.0)
BISECT_STEPS = 6
BASELINES_FILE = "baselines.json"


def validate_baselines(paths: list[str], input_shape: tuple[int, int, int] | None) -> list[dict[str, Any]]:
    """Check each baseline spec before the search starts: it parses and checks at s=1, has no open choice, and
    its model has the parameter `s` that scaling(...) reads. Returns [{"path", "name", "files"}]. Raises
    ArchError (the spec's own diagnostics) or SearchError (no knob, a duplicate name)."""
    from ..api import check_file, require_resolved
    from ..program import load_program
    from .space import program_files

    out, names = [], set()
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise SearchError(f"--baseline {p}: no such file")
        g = check_file(path, None, input_shape)
        require_resolved(g)
        if KNOB not in g.params:
            raise SearchError(f"--baseline {p}: model {g.model} has no parameter '{KNOB}' to scale it by; give it "
                              f"one that feeds its scaling rule, e.g. `{KNOB}: float = 1.0` and "
                              f"`scaling(s={KNOB}, d=1, w=1, r=0, depth=depths, width=dims)` (docs/language.md, "
                              "section 15)")
        if not g.scaling:
            raise SearchError(f"--baseline {p}: model {g.model} has no scaling(...) rule for '{KNOB}' to drive")
        if g.model in names:
            raise SearchError(f"--baseline {p}: a second baseline named {g.model}; each needs its own model name")
        names.add(g.model)
        files = program_files(path, load_program(path))
        out.append({"path": str(path), "name": g.model, "files": files})
    return out


def scale_to_budget(latency: Callable[[float], float | None], budget_ms: float, *,
                    s_range: tuple[float, float] = S_RANGE, steps: int = BISECT_STEPS) -> tuple[float | None, list]:
    """The largest knob value s whose `latency(s)` (ms; None: that s gives no valid or measurable network) fits
    `budget_ms`: bracket from s=1 by doubling (it fits) or halving (it does not) within `s_range`, then `steps`
    bisections in log space. Returns (s or None when even the smallest s is over, [(s, latency or None)])."""
    lo_s, hi_s = s_range
    seen: list[tuple[float, float | None]] = []

    def at(s: float) -> float | None:
        v = latency(s)
        seen.append((s, v))
        return v

    def fits(v: float | None) -> bool:
        return v is not None and v <= budget_ms

    s = min(max(1.0, lo_s), hi_s)
    ok_s = over_s = None
    if fits(at(s)):
        ok_s = s
        while s * 2 <= hi_s:
            s *= 2
            v = at(s)
            if fits(v):
                ok_s = s
            else:
                over_s = s
                break
    else:
        over_s = s
        while s / 2 >= lo_s:
            s /= 2
            if fits(at(s)):
                ok_s = s
                break
            over_s = s
    if ok_s is None:
        return None, seen
    if over_s is None:  # fits up to the top of the range
        return ok_s, seen
    for _ in range(steps):
        mid = math.sqrt(ok_s * over_s)
        if fits(at(mid)):
            ok_s = mid
        else:
            over_s = mid
    return ok_s, seen


def _key(settings, base: dict[str, Any]) -> str:
    """What a baseline's result depends on: its files and the search's budget, recipe, data and input."""
    blob = json.dumps({"files": base["files"], "budget": settings.budget_ms, "objective": settings.objective,
                       "dataset": settings.dataset, "limit": settings.dataset_limit, "epochs": settings.epochs,
                       "batch": settings.batch_size, "lr": settings.lr, "seed": settings.seed,
                       "input": settings.input_shape,
                       # settings added later enter the key only when set, so earlier results stay valid
                       **({"val": settings.val_fraction} if settings.val_fraction != 0.2 else {}),
                       **({"extra_seeds": settings.extra_seeds} if settings.extra_seeds else {})},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_previous(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {r["key"]: r for r in data if isinstance(r, dict) and r.get("key")} if isinstance(data, list) else {}


def pending_baselines(bases: list[dict[str, Any]], settings, out: Path) -> list[dict[str, Any]]:
    """The baselines not yet done with these settings in OUT/baselines.json (those `run_baselines` will run)."""
    previous = _load_previous(out / BASELINES_FILE)
    return [b for b in bases if previous.get(_key(settings, b), {}).get("status") not in ("ok", "over_budget")]


def run_baselines(bases: list[dict[str, Any]], settings, out: Path, progress: Callable[[str], None],
                  measure: Callable[[Any, dict], dict] | None = None) -> list[dict[str, Any]]:
    """Scale, measure and train (or score) each validated baseline (`validate_baselines`) with the search's
    `settings` (a TrialSettings; its meters measure). A baseline already done with the same key (files and
    settings) in OUT/baselines.json is reused (a resumed search). Writes OUT/baselines.json after each one."""
    measure = measure or _measure
    path = out / BASELINES_FILE
    previous = _load_previous(path)
    keys = [_key(settings, b) for b in bases]
    paths = {b["path"] for b in bases}
    done: list[dict[str, Any]] = []
    for i, (base, key) in enumerate(zip(bases, keys)):
        if key in previous and previous[key].get("status") in ("ok", "over_budget"):
            done.append(previous[key])
            progress(f"baseline {base['name']}: done earlier ({_short(previous[key])})")
            continue
        t0 = time.perf_counter()
        s = replace(settings, files=base["files"], spec_name=Path(base["path"]).name, fixed={}, model=None,
                    crash_marker=None, load_marker=None)
        rec = _one(base, s, out, progress, measure)
        rec.update(key=key, seconds=round(time.perf_counter() - t0, 1))
        done.append(rec)
        progress(f"baseline {base['name']}: {_short(rec)}")
        # kept: what this run has, the results of the baselines still to come (reused below, or kept should this
        # run be cut short), and other specs' records; dropped: older-settings records of these specs
        ahead = set(keys[i + 1:])
        kept = {d.get("key") for d in done}
        _write(path, done + [r for k, r in previous.items()
                             if k not in kept and (r.get("file") not in paths or k in ahead)])
    return done


def _measure(s, point: dict) -> dict:
    """On the search's latency meter (the target node), as a trial measures; in this process without meters."""
    from .trial import _measure as measure_on_meter

    return measure_on_meter(s, point, 0)


def _write(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _short(rec: dict) -> str:
    if rec["status"] == "ok":
        score = "–" if rec.get("score") is None else f"{rec['score']:.4f}"
        return (f"s={rec['s']:.3g}, {rec['latency_ms']:.3f} ms, {rec['params']:,} params, {rec['macs']:,} MACs, "
                f"score {score}")
    return f"{rec['status']}: {rec.get('error') or ''}".strip()


def _one(base: dict, s, out: Path, progress, measure) -> dict[str, Any]:
    from .space import canonical_hash
    from .trial import bounded_over, check_point

    rec: dict[str, Any] = {"name": base["name"], "file": base["path"], "knob": KNOB, "s": None, "status": "failed",
                           "latency_ms": None, "latency": None, "params": None, "macs": None, "score": None,
                           "accuracy": None, "accuracies": [], "steps": [], "arch": None, "error": None}
    cache: dict[str, dict | None] = {}
    graphs: dict[float, Any] = {}
    lats: dict[float, dict] = {}  # s -> its clean measurement

    def latency(v: float) -> float | None:
        try:
            g = check_point(s, {KNOB: v})
        except ArchError as e:
            rec["steps"].append({"s": v, "latency_ms": None, "status": "invalid",
                                 "error": str(e).strip().splitlines()[0]})
            return None
        graphs[v] = g
        k = canonical_hash(g, structure_only=True)  # the network, not the knob: values of s building one network
        # share one reading
        if k not in cache:
            lat = measure(s, {KNOB: v})
            # disturbed: no figure, unless its lower bound shows it far over the budget (trial.bounded_over)
            cache[k] = (lat if not lat.get("disturbed") else
                        {**lat, "latency_ms": lat["lower_bound_ms"], "latency_bound": "lower"}
                        if bounded_over(lat.get("lower_bound_ms"), s, ms=True) else None)
        lat = cache[k]
        bound = lat is not None and lat.get("latency_bound") == "lower"
        rec["steps"].append({"s": v, "latency_ms": None if lat is None else lat["latency_ms"],
                             "status": "unmeasured" if lat is None else "over (lower bound)" if bound else "measured",
                             "macs": g.total().macs})
        if lat is not None and not bound:
            lats[v] = lat
        return None if lat is None else lat["latency_ms"]

    try:
        best, _ = scale_to_budget(latency, s.budget_ms)
    except Exception as e:  # noqa: BLE001 - a baseline that cannot be scaled is reported, the search's result stays
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec
    if best is None:
        measured = [st for st in rec["steps"] if st["latency_ms"] is not None]
        rec["status"] = "over_budget" if measured else "unmeasured"
        rec["error"] = (f"over the budget even at s={S_RANGE[0]:.3g}" if measured
                        else "no clean latency measurement for any s")
        return rec
    g = graphs[best]
    tot = g.total()
    rec.update(s=best, status="ok", latency_ms=lats[best]["latency_ms"], latency=lats[best], params=tot.params,
               macs=tot.macs)
    rec["arch"] = str(_write_scaled(base, best, out))
    progress(f"baseline {base['name']}: scaled to s={best:.3g} ({lats[best]['latency_ms']:.3f} ms, "
             f"{tot.params:,} params); {'training' if s.objective == 'accuracy' else 'scoring'}")
    try:
        _evaluate(s, g, rec)
    except Exception as e:  # noqa: BLE001 - as for a trial: the failure is the baseline's result
        rec.update(status="failed", error=f"{type(e).__name__}: {e}")
    return rec


def _write_scaled(base: dict, s_value: float, out: Path) -> Path:
    from ..concrete import write_concrete

    header = (f"baseline {base['name']} scaled by archdsl search to the latency budget: {KNOB} = {s_value:.6g}\n"
              f"from {base['path']}")
    return write_concrete(base["path"], {}, out / "baselines", base["name"], header=header,
                          values={KNOB: s_value})


def _evaluate(s, g, rec: dict) -> None:
    """Train with the trials' recipe (or score with their proxy): the same data, epochs, batch, lr and seed, and
    `s.extra_seeds` more seeds when the search rescores its best (rescore.py): the score is then their mean."""
    import statistics

    from .rescore import extra_seeds, train_once
    from .trial import _proxy_score

    if s.objective != "accuracy":
        rec["score"] = _proxy_score(s, g)
        return
    res = train_once(s, g, s.seed)
    rec.update(accuracies=res.accuracies, accuracy=res.final_accuracy, score=res.final_accuracy,
               train_seconds=round(res.seconds, 1))
    if res.diverged:
        rec["error"] = "the training loss went non-finite"
        return
    if s.extra_seeds:
        scores = [res.final_accuracy]
        for seed in extra_seeds(s.seed, s.extra_seeds):
            more = train_once(s, g, seed)
            if not more.diverged and more.accuracies:
                scores.append(more.final_accuracy)
            rec["train_seconds"] = round(rec["train_seconds"] + more.seconds, 1)
        rec.update(scores=scores, score=statistics.fmean(scores))


def compare_with_best(best: dict | None, baselines: list[dict]) -> list[dict[str, Any]]:
    """Per baseline: {"name", "baseline_score", "best_score", "margin", "beats"} (margin = best - baseline;
    None where either side has no score)."""
    out = []
    for b in baselines:
        bs = b.get("score") if b.get("status") == "ok" else None
        top = None if best is None else best.get("score")
        margin = None if bs is None or top is None else top - bs
        out.append({"name": b["name"], "baseline_score": bs, "best_score": top, "margin": margin,
                    "beats": None if margin is None else margin > 0, "latency_ms": b.get("latency_ms"),
                    "s": b.get("s"), "status": b.get("status")})
    return out


def baseline_lines(rows: list[dict[str, Any]], budget_ms: float) -> list[str]:
    """The summary's lines: per baseline (compare_with_best rows), whether the search's best beats it."""
    lines = []
    for r in rows:
        if r["status"] != "ok" or r["baseline_score"] is None:
            lines.append(f"baseline {r['name']}: {r['status']} (not compared)")
            continue
        head = (f"baseline {r['name']} scaled to s={r['s']:.3g} ({r['latency_ms']:.2f} ms): score "
                f"{r['baseline_score']:.4f}")
        if r["best_score"] is None:
            lines.append(f"{head}; the search found nothing under {budget_ms:g} ms to compare")
        elif r["beats"]:
            lines.append(f"{head}; the search's best beats it by {r['margin']:+.4f}")
        else:
            lines.append(f"{head}; the search's best does NOT beat it ({r['margin']:+.4f})")
    return lines
