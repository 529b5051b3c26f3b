"""Rescoring: the search's best trials trained again with more seeds and ranked by their mean score.

A trial's score is one short training run on one validation split: its initial weights and batch order move it
by about a point on Fashion-MNIST at 2 epochs, and the best of a hundred such scores is mostly the luckiest
(the winner's curse; docs/search.md). `--rescore N` trains the N best trials under the budget again with
`--rescore-seeds` more training seeds each (same recipe, data split and epochs; seeds seed+1, seed+2, ...) and
ranks them by the mean of all their scores, ahead of the trials not rescored. Baselines get the same extra seeds
(baselines.py), so the comparison stays even.

Takes: the search's records, its `trial.TrialSettings`, the output directory, N, the seed count and a progress
callback. Returns {hash: {"scores": [trial score, extra...], "seeds": [...], "score": mean}}, also kept in
OUT/rescore.json (a resumed search reuses what is there for the same recipe). `apply_rescores` returns the
records with those means as their score (`score_trial` keeps the trial's own, `rescored` marks them).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["RESCORE_FILE", "train_once", "extra_seeds", "rescore", "apply_rescores", "load_rescores"]

RESCORE_FILE = "rescore.json"


def extra_seeds(seed: int, n: int) -> list[int]:
    """The training seeds of the extra runs: seed+1 .. seed+n (the trials themselves trained with `seed`)."""
    return [seed + i for i in range(1, n + 1)]


def train_once(s, g, seed: int, threads: int | None = None):
    """Train the checked graph `g` with the trials' recipe and data split (`s`, a TrialSettings), but `seed` for
    its initial weights and batch order, on `threads` threads (default: every usable core). Returns the
    train.TrainResult."""
    import torch

    from ..codegen.module import build_module
    from .data import check_classes
    from .train import train_and_eval
    from .trial import trial_data

    torch.manual_seed(seed)
    m = build_module(g)
    ds = trial_data(s, g)
    if g.output_shape is not None:
        check_classes(g.output_shape.c, ds)
    return train_and_eval(m, ds, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=seed,
                          threads=threads or len(os.sched_getaffinity(0)))


def _recipe_key(s) -> str:
    blob = json.dumps({"dataset": s.dataset, "limit": s.dataset_limit, "val": s.val_fraction, "epochs": s.epochs,
                       "batch": s.batch_size, "lr": s.lr, "seed": s.seed, "input": s.input_shape},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def rescore(records: list[dict], settings, out: Path, n: int, seeds: int, progress: Callable[[str], None],
            train: Callable[..., Any] | None = None) -> dict[str, dict]:
    """Train the `n` best ok trials under the budget again with `seeds` more seeds each (see the module doc);
    `train(s, g, seed)` stands in for train_once. Writes OUT/rescore.json after every run."""
    from .pareto import top_k
    from .trial import check_point

    train = train or train_once
    path = out / RESCORE_FILE
    key = _recipe_key(settings)
    saved = _load(path)
    runs: dict[str, float | None] = dict(saved.get("runs") or {}) if saved.get("recipe") == key else {}
    top = top_k(records, n, settings.budget_ms, metric="score")
    if top:
        progress(f"rescoring the best {len(top)} with {seeds} more seed(s) each (--rescore {n})")
    result: dict[str, dict] = {}
    for rank, rec in enumerate(top, 1):
        h = rec["hash"]
        g = None
        scores, used = [float(rec["score"])], [settings.seed]
        for seed in extra_seeds(settings.seed, seeds):
            rk = f"{h}:{seed}"
            if rk not in runs:
                t0 = time.perf_counter()
                try:
                    g = g or check_point(settings, rec["point"])
                    res = train(settings, g, seed)
                    runs[rk] = None if res.diverged or not res.accuracies else float(res.accuracies[-1])
                except Exception as e:  # noqa: BLE001 - a failed run leaves the trial's own score standing
                    progress(f"  rescoring trial {rec.get('trial')} (seed {seed}) failed: {type(e).__name__}: {e}")
                    runs[rk] = None
                _write(path, key, runs)
                took = f" ({time.perf_counter() - t0:.0f} s)"
            else:
                took = " (done earlier)"
            if runs[rk] is not None:
                scores.append(runs[rk])
                used.append(seed)
            progress(f"  #{rank} trial {rec.get('trial')}: seed {seed} "
                     + ("failed" if runs[rk] is None else f"{runs[rk]:.4f}") + took)
        mean = statistics.fmean(scores)
        result[h] = {"scores": scores, "seeds": used, "score": mean}
        progress(f"  #{rank} trial {rec.get('trial')}: {rec['score']:.4f} -> mean {mean:.4f} over {len(scores)}")
    return result


def _write(path: Path, key: str, runs: dict) -> None:
    from .records import _write_atomic  # the run directory's own atomic write (fsynced)

    _write_atomic(path, (json.dumps({"recipe": key, "runs": runs}, indent=1) + "\n").encode("utf-8"))


def apply_rescores(records: list[dict], rescored: dict[str, dict]) -> list[dict]:
    """The records with each rescored trial's mean as its score (its own kept as score_trial, the runs as
    scores/seeds, `rescored` true); ranking puts rescored trials first (pareto._ranked)."""
    out = []
    for r in records:
        got = rescored.get(r.get("hash")) if r.get("status") == "ok" else None
        out.append(r if got is None else {**r, "score_trial": r.get("score"), "score": got["score"],
                                          "scores": got["scores"], "seeds": got["seeds"], "rescored": True})
    return out


def load_rescores(out: Path, records: list[dict], seed: int | None = None) -> dict[str, dict]:
    """What a finished (or running) search's OUT/rescore.json says, in `rescore`'s form, for readers of a run
    directory (the report): each rescored trial's own score (trained with `seed`, the search's) followed by its
    extra runs' scores, and their mean."""
    runs = _load(out / RESCORE_FILE).get("runs") or {}
    own = {r["hash"]: float(r["score"]) for r in records
           if r.get("status") == "ok" and r.get("hash") and isinstance(r.get("score"), (int, float))}
    result: dict[str, dict] = {}
    for key, acc in sorted(runs.items(), key=lambda kv: (kv[0].split(":")[0], int(kv[0].split(":")[1]))):
        h, extra = key.split(":")
        if h not in own:
            continue
        got = result.setdefault(h, {"scores": [own[h]], "seeds": [seed]})
        if isinstance(acc, (int, float)):
            got["scores"].append(float(acc))
            got["seeds"].append(int(extra))
    for got in result.values():
        got["score"] = statistics.fmean(got["scores"])
    return result
