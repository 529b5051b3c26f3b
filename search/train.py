"""Stage 6 (accuracy side): train one search trial's model briefly and measure its validation accuracy.

Takes: an nn.Module (its initial weights are the caller's), a `Dataset` that fits its input (see
`data.fit_to_input`) and the training settings. Returns: a `TrainResult` with the validation accuracy and
mean training loss of every epoch.

Recipe: AdamW (no weight decay on biases and norm weights: parameters of <= 1 dimension), a cosine learning
rate decayed per step to 0 over all epochs, cross-entropy. The seed fixes the batch order and every other
random draw made while training (the global torch RNG is restored afterwards). Each training step and each
validation batch runs inside its own `compute_lock()` slice, so a latency measurement in another process waits
at most one step and never times a model while this one trains.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..bench.lock import compute_lock
from ..bench.model import is_oom
from .data import Dataset

__all__ = ["TrainError", "TrainResult", "evaluate", "train_and_eval"]

EpochCallback = Callable[[int, float, float], "bool | None"]


class TrainError(RuntimeError):
    """Training could not run (the model does not fit in memory)."""


@dataclass
class TrainResult:
    """Per-epoch validation accuracy (0..1) and mean training loss, for the epochs that completed."""

    accuracies: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    diverged: bool = False  # a loss went non-finite; the epoch it happened in is not counted
    stopped: bool = False  # on_epoch returned False
    chance: float = 0.0  # share of the most frequent class in val: what a constant guess scores

    @property
    def best_accuracy(self) -> float:
        return max(self.accuracies, default=self.chance)

    @property
    def final_accuracy(self) -> float:
        """Accuracy after the last completed epoch (the chance level when none completed)."""
        return self.accuracies[-1] if self.accuracies else self.chance


def train_and_eval(module: nn.Module, data: Dataset, *, epochs: int, batch_size: int = 64, lr: float = 2e-3,
                   weight_decay: float = 0.05, seed: int = 0, threads: int | None = 1,
                   on_epoch: EpochCallback | None = None,
                   lock_path: str | os.PathLike | None = None) -> TrainResult:
    """Train `module` in place for up to `epochs` epochs on data.x_train and evaluate on data.x_val after each.

    `on_epoch(epoch, val_acc, train_loss)` (epoch counts from 1) runs after every epoch; returning False ends
    training there. `threads` sets torch's intra-op threads for the call (None: leave as is). A non-finite loss
    ends training with `diverged=True`. Raises TrainError when the model runs out of memory."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    start = time.perf_counter()
    counts = torch.bincount(data.y_val, minlength=data.num_classes)
    result = TrainResult(chance=float(counts.max()) / max(1, len(data.y_val)))
    old_threads = torch.get_num_threads()
    was_training = module.training
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _train(module, data, epochs, batch_size, lr, weight_decay, seed, on_epoch, lock_path, result)
    except MemoryError as e:
        raise TrainError(_oom_message(module, batch_size, e)) from e
    except RuntimeError as e:
        if not is_oom(e):
            raise
        raise TrainError(_oom_message(module, batch_size, e)) from e
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
        module.train(was_training)
        result.seconds = time.perf_counter() - start
    return result


def _train(module: nn.Module, data: Dataset, epochs: int, batch_size: int, lr: float, weight_decay: float,
           seed: int, on_epoch: EpochCallback | None, lock_path, result: TrainResult) -> None:
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    n = len(data.y_train)
    # Whole batches only (a last batch of 1 breaks BatchNorm on a 1x1 map), unless the set is under one batch.
    steps_per_epoch = max(1, n // batch_size)
    total_steps = epochs * steps_per_epoch
    decay = [p for p in module.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        module.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size:(step + 1) * batch_size] if n >= batch_size else perm
            x, y = data.x_train[idx].to(device), data.y_train[idx].to(device)
            with compute_lock(lock_path):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(module(x), y)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    result.diverged = True
                    return
                loss.backward()
                opt.step()
            sched.step()
            loss_sum += loss_value
        acc = evaluate(module, data, batch_size=max(256, batch_size), lock_path=lock_path)
        result.accuracies.append(acc)
        result.losses.append(loss_sum / steps_per_epoch)
        result.epochs_run = epoch
        if on_epoch is not None and on_epoch(epoch, acc, result.losses[-1]) is False:
            result.stopped = True
            return


def evaluate(module: nn.Module, data: Dataset, *, batch_size: int = 256,
             lock_path: str | os.PathLike | None = None) -> float:
    """Top-1 accuracy of `module` (put in eval mode) on data.x_val; each batch inside a compute_lock slice."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data.y_val), batch_size):
            x, y = data.x_val[i:i + batch_size].to(device), data.y_val[i:i + batch_size].to(device)
            with compute_lock(lock_path):
                correct += int((module(x).argmax(dim=1) == y).sum())
    return correct / max(1, len(data.y_val))


def _oom_message(module: nn.Module, batch_size: int, e: BaseException) -> str:
    name = getattr(module, "arch_name", None) or type(module).__name__
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{name} ran out of memory while training at batch size {batch_size}: {first}"
