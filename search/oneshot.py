"""One-shot search (`archdsl search --objective oneshot`): a supernet trained once, then every candidate scored
with the weights it inherits from it.

Takes: the search's space and settings. Returns: `prepare` trains the space's supernet (search/supernet.py,
search/oneshot_train.py) for `--supernet-epochs`, one checkpoint per epoch in OUT/supernet/checkpoint.pt (a
killed or resumed search continues it; a finished one is reused), and returns the checkpoint's path;
`inherited_score` is a trial's score: the validation accuracy of the point's network with its inherited weights,
BatchNorm statistics recomputed over the first training images (a few milliseconds to a second, against minutes
of training from scratch); `save_weights` writes a top-k network's weights beside its concrete spec.

The checkpoint holds tensors and plain values only (torch.load(weights_only=True) reads it): the survey's entries,
the pool of networks the sandwich draws from, the store's weights and the trainer's state.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .supernet import Entry, Supernet, SupernetError, survey

__all__ = ["CHECKPOINT_FORMAT", "prepare", "load_supernet", "inherited_score", "save_weights"]

CHECKPOINT_FORMAT = "archdsl-supernet/1"
SUPERNET_DIR = "supernet"


def _entries_json(entries: dict[tuple, Entry]) -> list[dict]:
    return [{"key": e.key, "shape": list(e.shape), "spatial": list(e.spatial), "buffer": e.buffer, "where": e.where,
             "dtype": str(e.dtype).replace("torch.", ""), "kernels": [list(k) for k in sorted(e.kernels)]}
            for e in entries.values()]


def _entries_from_json(rows: list[dict]) -> dict[tuple, Entry]:
    from .supernet import _sig

    out = {}
    for r in rows:
        e = Entry(r["key"], tuple(r["shape"]), tuple(r["spatial"]), r["buffer"], r["where"],
                  getattr(torch, r["dtype"]), {tuple(k) for k in r["kernels"]})
        out[_sig(e.key, e.shape, e.spatial)] = e
    return out


def _settings_key(s) -> dict[str, Any]:
    """What the supernet's weights depend on (a checkpoint made with other settings is not continued)."""
    return {"files": s.files, "spec": s.spec_name, "fixed": s.fixed, "model": s.model,
            "input": list(s.input_shape) if s.input_shape else None, "dataset": s.dataset, "limit": s.dataset_limit,
            "val": s.val_fraction, "seed": s.seed, "epochs": s.supernet_epochs, "batch": s.batch_size, "lr": s.lr,
            "samples": s.supernet_samples}


def load_supernet(space, path: Path) -> tuple[Supernet, dict]:
    """The supernet of a checkpoint (and the checkpoint itself); SupernetError when it is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: one line
        raise SupernetError(f"{path}: not a readable supernet checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SupernetError(f"{path}: not an archdsl supernet checkpoint")
    return Supernet(space, _entries_from_json(state["entries"]), state=state["net"]), state


def prepare(space, s, out: Path, progress: Callable[[str], None], threads: int | None = None) -> Path:
    """Train the space's supernet with the search's settings `s` (a TrialSettings with supernet_epochs and
    supernet_samples), continuing OUT/supernet/checkpoint.pt when it was made with the same settings; returns
    its path."""
    from ..bench.machine import torch_threads
    from .data import fit_to_input, load_dataset
    from .oneshot_train import SupernetTrainer
    from .train import Recipe

    d = out / SUPERNET_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / "checkpoint.pt"
    key = _settings_key(s)
    state = None
    if path.exists():
        net, state = load_supernet(space, path)
        if state.get("settings") != key:
            raise SupernetError(f"{path} was trained with other settings (spec, data, epochs or seed): continue it "
                                "with the same ones, or choose another --out")
        if state["trainer"]["epoch"] >= s.supernet_epochs:
            progress(f"supernet: trained earlier ({s.supernet_epochs} epochs, {path})")
            return path
        pool = state["pool"]
        entries = net.entries
    else:
        t0 = time.perf_counter()
        entries, seen = survey(space, s.supernet_samples, s.seed)
        net = Supernet(space, entries, seed=s.seed)
        pool = [c.point for c in seen]
        size = sum(p.numel() for p in net.parameters())
        progress(f"supernet: {len(entries)} shared tensors ({size:,} parameters) for {len(pool)} surveyed networks "
                 f"({time.perf_counter() - t0:.1f} s)")
    c, h, w = space.check_point(pool[0]).graph.input_shape.to_json()
    data = fit_to_input(load_dataset(s.dataset, seed=s.seed, val_fraction=s.val_fraction, limit=s.dataset_limit),
                        c, h, w)
    trainer = SupernetTrainer(net, data, Recipe(epochs=s.supernet_epochs, batch_size=s.batch_size, lr=s.lr,
                                                seed=s.seed), pool)
    history = []
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        history = list(state.get("history") or [])
        progress(f"supernet: continuing {path} at epoch {trainer.epoch + 1} of {s.supernet_epochs}")
    t0 = time.perf_counter()
    done0 = trainer.epoch
    with torch_threads(threads):
        while trainer.epoch < s.supernet_epochs:
            st = trainer.run_epoch()
            if st.diverged:
                raise SupernetError(f"supernet training diverged at epoch {st.epoch} (a loss went non-finite): "
                                    "lower --lr")
            history.append({"epoch": st.epoch, "train_loss": st.train_loss, "val_accuracy": st.val_accuracy,
                            "seconds": st.seconds})
            _save(path, {"format": CHECKPOINT_FORMAT, "settings": key, "entries": _entries_json(entries),
                         "pool": pool, "net": net.state_dict(), "trainer": trainer.state_dict(), "history": history})
            per = (time.perf_counter() - t0) / (trainer.epoch - done0)
            progress(f"supernet epoch {st.epoch}/{s.supernet_epochs}: loss {st.train_loss:.4f}, largest network "
                     f"{st.val_accuracy:.4f} on validation ({st.seconds:.0f} s; "
                     f"about {per * (s.supernet_epochs - trainer.epoch):.0f} s left)")
    return path


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


_LOADED: dict[tuple, Any] = {}


def _cached(path: Path, space: Callable[[], Any]) -> Supernet:
    """The supernet of a checkpoint, read once per process (again only when the file changes), in eval mode;
    `space()` makes its SearchSpace when it must be read."""
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_supernet(space(), path)[0].eval()
    return _LOADED[key]


SCREEN_Z = 2.576          # a 99% one-sided bound: a network screened on part of the split is clearly below the bar
SCREEN_PART = 4           # the first 1/SCREEN_PART of the validation split first (at least SCREEN_MIN images)
SCREEN_MIN = 500


def clearly_below(correct: int, n: int, bar: float, z: float = SCREEN_Z) -> bool:
    """Whether `correct` right of `n` shows an accuracy below `bar` with confidence: the Wilson score interval's
    upper bound at z is under the bar."""
    if n <= 0:
        return False
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n) < bar


def inherited_score(s, point: dict[str, Any], spec: Path, ds, bar: float | None = None) -> tuple[float, int]:
    """A trial's score under --objective oneshot: validation accuracy of the point's network with its inherited
    weights, BatchNorm statistics recomputed over the recipe's first training images. `spec`: the spec as the
    trial wrote it out; `ds`: the trials' data. The supernet is loaded once per process. With `bar` (the score a
    trial must reach to be measured), the first part of the split is scored first and a network clearly below
    the bar there (clearly_below) is not scored on the rest. Returns (score, images scored)."""
    from ..bench.lock import compute_lock
    from ..bench.machine import torch_threads
    from .space import SearchSpace
    from .train import Recipe, evaluate_split

    net = _cached(Path(s.supernet),
                  lambda: SearchSpace(spec, model=s.model, input_shape=s.input_shape, fixed=dict(s.fixed)))
    with torch_threads(s.train_threads), compute_lock():
        module = net.extract(point, calibrate=ds.x_train[:Recipe(epochs=1).precise_bn])
    n, first = len(ds.y_val), 0
    with torch_threads(s.train_threads):
        if bar is not None and n >= 2 * SCREEN_MIN:
            first = max(SCREEN_MIN, n // SCREEN_PART)
            acc, _ = evaluate_split(module, ds.x_val[:first], ds.y_val[:first])
            if clearly_below(round(acc * first), first, bar):
                return acc, first
        rest, _ = evaluate_split(module, ds.x_val[first:], ds.y_val[first:])
    acc = (acc * first + rest * (n - first)) / n if first else rest
    return acc, n


def save_weights(space, ckpt: Path, point: dict[str, Any], dest: Path, s) -> Path:
    """The point's network's inherited weights (BatchNorm recalibrated), as a training-form state_dict file
    beside its concrete spec (`archdsl.load(spec, weights=...)`, `archdsl train --weights`). The checkpoint is
    read once for all the top files."""
    from .data import fit_to_input, load_dataset

    net = _cached(ckpt, lambda: space)
    g = space.check_point(point).graph
    c, h, w = g.input_shape.to_json()
    data = fit_to_input(load_dataset(s.dataset, seed=s.seed, val_fraction=s.val_fraction, limit=s.dataset_limit),
                        c, h, w)
    from .train import Recipe

    module = net.extract(point, calibrate=data.x_train[:Recipe(epochs=1).precise_bn])
    torch.save(module.state_dict(), dest)
    return dest
