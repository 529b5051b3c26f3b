"""`archdsl train SPEC`: train one concrete spec with the search's recipe, then score it on the test split.

Takes: the parsed arguments of the `train` subcommand (registered by `add_train_parser`). Returns: an exit code:
0 trained (OUT/weights.pt and OUT/metrics.json written), 1 a mistake in the spec (positioned diagnostics; a spec
with open choices lists them) or a data set / output directory / resume / memory problem (one
`archdsl: error:` line), 2 bad usage, 130 interrupted (the last epoch's checkpoint is kept: rerun with --resume).

Each epoch ends with OUT/checkpoint.pt (weights, optimizer, learning-rate schedule, the RNG states training
draws from, the epochs done and their metrics), written atomically (a temporary file, then os.replace).
`--resume` continues from it to the same final weights, bit for bit, as a run never stopped (same machine and
threads), and refuses a spec, data set or setting that differs from the checkpoint's; a flag left out takes
the checkpoint's value. Test hook: ARCHDSL_TRAIN_TEST_KILL_AFTER=N kills the process (SIGKILL) right after
epoch N's checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .cli import DATASET_HELP

__all__ = ["add_train_parser", "cmd_train", "DEFAULTS"]

CHECKPOINT_FORMAT = "archdsl-train-checkpoint/1"
CHECKPOINT, WEIGHTS, METRICS = "checkpoint.pt", "weights.pt", "metrics.json"
# settings a run is defined by (the recipe's defaults are a search trial's); "threads" None: every usable core
DEFAULTS: dict[str, Any] = {"dataset": "digits", "dataset_limit": None, "val_fraction": 0.2, "epochs": 10,
                            "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05, "label_smoothing": 0.0, "seed": 0,
                            "threads": None, "weights": None}


class TrainCmdError(Exception):
    """A problem the user can fix, shown as one `archdsl: error:` line."""


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one concrete spec with the search's recipe; writes weights and "
                                     "metrics.json with the test accuracy")
    from ..cli.common import add_spec_source_args

    add_spec_source_args(p, "a spec with no open choices: a search's top/NN_*.arch, an example, or any spec "
                            "(fix choices with --set)")
    s = argparse.SUPPRESS  # left out: the default, or with --resume the checkpoint's value
    p.add_argument("--dataset", default=s, help=DATASET_HELP)
    p.add_argument("--dataset-limit", type=int, default=s, metavar="N",
                   help="train and validate on N images (a stratified subset; the test split stays whole)")
    p.add_argument("--val-fraction", type=float, default=s, metavar="F",
                   help="share of the training images held out for validation (default 0.2)")
    p.add_argument("--epochs", type=int, default=s, help="epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=s, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=s, help="peak learning rate of the cosine schedule (default 0.002)")
    p.add_argument("--weight-decay", type=float, default=s,
                   help="AdamW weight decay, not applied to biases and norm weights (default 0.05)")
    p.add_argument("--label-smoothing", type=float, default=s, help="of the training loss (default 0)")
    p.add_argument("--seed", type=int, default=s, help="fixes the initial weights, the split and the batch order "
                                                       "(default 0)")
    p.add_argument("--threads", type=int, default=s, help="torch threads (default: every usable core)")
    p.add_argument("--weights", default=s, metavar="FILE",
                   help="start from these weights (a training-form state_dict: a one-shot search's top/NN_*.pt, "
                        "an earlier run's weights.pt) instead of the seed's initialization: fine-tuning")
    p.add_argument("--out", default="train-out", help="output directory (default train-out)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(fn=cmd_train)


def cmd_train(args) -> int:
    from ..cli.common import input_shape, overrides, usage
    from ..weights import WeightsError
    from .data import DatasetError
    from .train import TrainError

    given = {k: getattr(args, k) for k in DEFAULTS if hasattr(args, k)}
    problem = _bad_flag(given)
    if problem:
        return usage(problem)
    overrides, input_shape = overrides(args.set), input_shape(args.input)
    try:
        return _train(args, given, overrides, input_shape)
    except (TrainCmdError, DatasetError, TrainError, WeightsError) as e:
        print(f"archdsl: error: {e}", file=sys.stderr)
        return 1


def _bad_flag(given: dict[str, Any]) -> str | None:
    for k in ("epochs", "batch_size", "threads"):
        if k in given and given[k] < 1:
            return f"--{k.replace('_', '-')} must be at least 1, got {given[k]}"
    if "dataset_limit" in given and given["dataset_limit"] < 2:
        return f"--dataset-limit must be at least 2, got {given['dataset_limit']}"
    if "val_fraction" in given and not 0 < given["val_fraction"] < 1:
        return f"--val-fraction must be between 0 and 1, got {given['val_fraction']}"
    if "lr" in given and not 0 < given["lr"] < float("inf"):
        return f"--lr must be positive, got {given['lr']}"
    if "weight_decay" in given and not 0 <= given["weight_decay"] < float("inf"):
        return f"--weight-decay must be >= 0, got {given['weight_decay']}"
    if "label_smoothing" in given and not 0 <= given["label_smoothing"] < 1:
        return f"--label-smoothing must be in [0, 1), got {given['label_smoothing']}"
    return None


def _train(args, given: dict[str, Any], overrides, input_shape) -> int:
    import torch

    from ..api import check_file, require_resolved
    from ..codegen.module import build_module
    from .data import check_classes, fit_to_input
    from .train import Recipe, Trainer, evaluate_split, recipe_context

    g = check_file(args.file, overrides, input_shape, args.model, tuple(args.import_path),
                   args.allow_outside_imports)
    require_resolved(g)  # a spec with open choices: ArchError naming each one (exit 1)
    out = Path(args.out)
    lock = _lock_out(out)
    try:
        ckpt = _read_checkpoint(out) if args.resume else None
        if ckpt is None:
            _refuse_earlier_run(out)
        s, loaded = _settings(given, ckpt, g, out)
        c, h, w = g.input_shape.to_json()
        ds = fit_to_input(loaded, c, h, w)
        if g.output_shape is not None:
            check_classes(g.output_shape.c, ds)
        recipe = Recipe(**{k: s[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "seed")})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s["seed"])
            module = build_module(g)
        if s["weights"] and ckpt is None:
            from ..weights import load_weights

            load_weights(module, s["weights"])
        with recipe_context(module, recipe.batch_size, s["threads"]):
            trainer = Trainer(module, ds, recipe)
            run = {"settings": s, "history": [], "seconds": 0.0, "sessions": 1}
            if ckpt is not None:
                module.load_state_dict(ckpt["model"])
                trainer.load_state_dict(ckpt["trainer"])
                run.update(history=list(ckpt["history"]), seconds=float(ckpt["seconds"]),
                           sessions=int(ckpt["sessions"]) + 1)
                print(f"resuming {out / CHECKPOINT} after epoch {trainer.epoch} of {recipe.epochs}", file=sys.stderr)
            else:
                print(f"training {g.model} ({g.total().params:,} params) on {ds.name}: {len(ds.y_train)} train / "
                      f"{len(ds.y_val)} val images {c}x{h}x{w}, {recipe.epochs} epoch(s), {s['threads']} thread(s)"
                      + (f", from the weights in {s['weights']}" if s["weights"] else ""), file=sys.stderr)
            if not _epochs(trainer, out, run):
                return 130
            test_acc, test_loss = evaluate_split(module, ds.x_test, ds.y_test, batch_size=max(256, recipe.batch_size))
        metrics = _metrics(args.file, g, ds, run, test_acc, test_loss)
        _atomic_write(out / WEIGHTS, lambda f: torch.save(module.state_dict(), f))
        _atomic_write(out / METRICS, lambda f: f.write(json.dumps(metrics, indent=2).encode() + b"\n"))
    finally:
        lock.close()
    epochs = f"{recipe.epochs} epoch" + ("" if recipe.epochs == 1 else "s")
    print(f"trained {g.model} ({metrics['params']:,} params) for {epochs} on {ds.name}: "
          f"val accuracy {metrics['val_accuracy']:.4f}, test accuracy {test_acc:.4f} ({len(ds.y_test)} test images, "
          f"{ds.test_split.split(':')[0]})")
    print(f"wrote {out / WEIGHTS} and {out / METRICS} ({run['seconds']:.1f} s of training)")
    return 0


def _settings(given: dict[str, Any], ckpt: dict[str, Any] | None, g, out: Path):
    """(the run's settings: flags given, else the checkpoint's, else the defaults; plus the network's hash and
    the data's sha256), and the data set as loaded. With a checkpoint, refuses what does not match it."""
    from .data import canonical_name, load_dataset
    from .space import canonical_hash

    if "dataset" in given:
        given["dataset"] = canonical_name(given["dataset"])
    if given.get("weights"):
        given["weights"] = str(Path(given["weights"]).resolve())
    s = {**DEFAULTS, **(ckpt["settings"] if ckpt else {}), **given}
    s["threads"] = s["threads"] or len(os.sched_getaffinity(0))
    s["dataset"] = canonical_name(s["dataset"])
    s["network"] = canonical_hash(g)
    loaded = load_dataset(s["dataset"], seed=s["seed"], val_fraction=s["val_fraction"], limit=s["dataset_limit"])
    s["data_sha256"] = _fingerprint(loaded)
    if ckpt is not None:
        _match(ckpt["settings"], s, given, out)
    return s, loaded


def _epochs(trainer, out: Path, run: dict[str, Any]) -> bool:
    """Train the epochs left, a checkpoint after each; False when interrupted (Ctrl-C)."""
    epochs = trainer.recipe.epochs
    progress = _progress(epochs, trainer.steps_per_epoch, trainer.epoch)
    saved = trainer.epoch
    try:
        while trainer.epoch < epochs:
            stats = trainer.run_epoch(progress.step)
            if stats.diverged:
                kept = f"the checkpoint of epoch {saved} is kept" if saved else "no epoch finished"
                raise TrainCmdError(f"the training loss became non-finite in epoch {stats.epoch}; try a lower --lr "
                                    f"({kept})")
            run["seconds"] += stats.seconds
            run["history"].append({"epoch": stats.epoch, "train_loss": stats.train_loss, "val_loss": stats.val_loss,
                                   "val_accuracy": stats.val_accuracy, "seconds": round(stats.seconds, 3)})
            _save_checkpoint(out, {"format": CHECKPOINT_FORMAT, **run, "model": trainer.module.state_dict(),
                                   "trainer": trainer.state_dict()})
            saved = stats.epoch
            progress.epoch_end(stats)
            _test_kill_hook(stats.epoch)
    except KeyboardInterrupt:
        progress.close()
        kept = f"{out / CHECKPOINT} holds epoch {saved}" if saved else "no epoch finished"
        print(f"archdsl: interrupted; {kept}: rerun with --resume to continue", file=sys.stderr)
        return False
    finally:
        progress.close()
    return True


def _metrics(spec, g, ds, run: dict[str, Any], test_acc: float, test_loss: float) -> dict[str, Any]:
    import torch

    s, history, total = run["settings"], run["history"], g.total()
    return {"spec": str(spec), "model": g.model, "network": s["network"], "params": total.params,
            "macs": total.macs, "input_shape": list(ds.input_shape),
            "settings": {k: s[k] for k in DEFAULTS},
            "dataset": {"name": ds.name, "source": ds.source, "test_split": ds.test_split,
                        "num_classes": ds.num_classes, "classes": list(ds.classes) if ds.classes else None,
                        "train": len(ds.y_train), "val": len(ds.y_val), "test": len(ds.y_test),
                        "sha256": s["data_sha256"]},
            "epochs": history,
            "val_accuracy": history[-1]["val_accuracy"] if history else None,
            "test_accuracy": test_acc, "test_loss": test_loss,
            "seconds": round(run["seconds"], 3), "sessions": run["sessions"], "weights": WEIGHTS,
            "torch": torch.__version__, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# ------------------------------------------------------------------------------- output directory, resume

def _lock_out(out: Path):
    """Create OUT and hold its .lock for the run (one writer per directory)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / ".lock", "a+b")  # noqa: SIM115 - held until the run ends
    except OSError as e:
        raise TrainCmdError(f"cannot use --out {out}: {e.strerror or e}") from None
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: the directory is not locked
        pass
    except OSError:
        fh.close()
        raise TrainCmdError(f"{out} is in use by another archdsl train; wait for it or choose another --out") from None
    return fh


def _refuse_earlier_run(out: Path) -> None:
    found = [n for n in (CHECKPOINT, WEIGHTS, METRICS) if (out / n).exists()]
    if found:
        raise TrainCmdError(f"{out} already holds a training run ({', '.join(found)}): pass --resume to continue it, "
                            f"or choose another --out")


def _read_checkpoint(out: Path) -> dict[str, Any]:
    import torch

    path = out / CHECKPOINT
    if not path.exists():
        raise TrainCmdError(f"nothing to resume: {path} does not exist (start without --resume)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as e:  # noqa: BLE001 - a damaged file is the user's to replace
        raise TrainCmdError(f"cannot read {path}: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainCmdError(f"{path} is not a checkpoint of archdsl train ({CHECKPOINT_FORMAT})")
    return ckpt


def _match(saved: dict[str, Any], now: dict[str, Any], given: dict[str, Any], out: Path) -> None:
    """Refuse to resume when the network, the data or a setting given on the command line differs."""
    if saved.get("network") != now["network"]:
        raise TrainCmdError(f"cannot resume {out}: the spec makes another network than the checkpoint's (network "
                            f"{now['network']}, checkpoint {saved.get('network')}); use the spec, --set, --input "
                            f"and --model it was started with, or another --out")
    diff = [f"--{k.replace('_', '-')} {now[k]} (checkpoint: {saved.get(k)})" for k in DEFAULTS
            if k in given and now[k] != saved.get(k)]
    if diff:
        raise TrainCmdError(f"cannot resume {out} with other settings: {'; '.join(diff)} (leave a flag out to keep "
                            f"the checkpoint's value)")
    if saved.get("data_sha256") != now["data_sha256"]:
        raise TrainCmdError(f"cannot resume {out}: data set {now['dataset']} is not what the checkpoint was trained "
                            f"on (its images or labels changed)")


def _fingerprint(ds) -> str:
    """sha256 of every split's images and labels, as loaded (before resizing)."""
    import hashlib

    h = hashlib.sha256()
    for t in (ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test):
        a = t.contiguous().numpy()
        h.update(str((a.dtype, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    """write(binary file) into PATH.tmp-PID, flushed to disk, then renamed over PATH."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    import torch

    _atomic_write(out / CHECKPOINT, lambda f: torch.save(state, f))


def _test_kill_hook(epoch: int) -> None:
    after = os.environ.get("ARCHDSL_TRAIN_TEST_KILL_AFTER")
    if after and after.isdigit() and epoch == int(after):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- progress

def _progress(epochs: int, steps: int, done: int, stream=None):
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return _Bar(epochs, steps, done, stream)
    return _Lines(epochs, done, stream)


def _epoch_line(stats, epochs: int) -> str:
    return (f"epoch {stats.epoch}/{epochs}: train loss {stats.train_loss:.4f}, val loss {stats.val_loss:.4f}, "
            f"val accuracy {stats.val_accuracy:.4f} ({stats.seconds:.1f} s)")


class _Bar:
    """A tqdm bar over every step of the run, with the ETA; the last epoch's validation figures beside it."""

    def __init__(self, epochs: int, steps: int, done: int, stream) -> None:
        from tqdm import tqdm

        self.epochs, self.steps, self.epoch = epochs, steps, done + 1
        try:  # a terminal that reports no size (a bare pty) would get no bar at all
            width, height = os.get_terminal_size(stream.fileno())
        except (AttributeError, OSError, ValueError):
            width = height = 0
        size = {"dynamic_ncols": True} if width > 0 else {"ncols": 100}
        size["nrows"] = height if height > 0 else 24
        self.bar = tqdm(total=epochs * steps, initial=done * steps, unit="step", file=stream,
                        desc=f"epoch {self.epoch}/{epochs}", leave=True, **size)
        self.loss_sum, self.val = 0.0, ""

    def step(self, step: int, loss: float) -> None:
        self.loss_sum = loss if step == 1 else self.loss_sum + loss
        self.bar.set_postfix_str(f"loss {self.loss_sum / step:.4f}{self.val}", refresh=False)
        self.bar.update(1)

    def epoch_end(self, stats) -> None:
        self.bar.write(_epoch_line(stats, self.epochs), file=self.bar.fp)
        self.val = f", val acc {stats.val_accuracy:.4f}"
        self.epoch = stats.epoch + 1
        if self.epoch <= self.epochs:
            self.bar.set_description_str(f"epoch {self.epoch}/{self.epochs}", refresh=False)
        self.bar.set_postfix_str(f"loss {stats.train_loss:.4f}{self.val}")

    def close(self) -> None:
        self.bar.close()


class _Lines:
    """One plain line per epoch (CI logs, pipes): losses, validation accuracy, seconds and the time left."""

    def __init__(self, epochs: int, done: int, stream) -> None:
        self.epochs, self.done, self.stream, self.start = epochs, done, stream, time.perf_counter()

    def step(self, step: int, loss: float) -> None:
        pass

    def epoch_end(self, stats) -> None:
        this_run = stats.epoch - self.done
        left = (time.perf_counter() - self.start) / this_run * (self.epochs - stats.epoch)
        print(f"{_epoch_line(stats, self.epochs)[:-1]}; about {left:.0f} s left)", file=self.stream, flush=True)

    def close(self) -> None:
        pass
