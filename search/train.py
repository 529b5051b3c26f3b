"""Stage 6 (accuracy side): the training recipe, one implementation for search trials and `archdsl train`.

Takes: an nn.Module (its initial weights are the caller's), a `Dataset` that fits its input (see
`data.fit_to_input`) and a `Recipe`. Returns: `train_and_eval` (what a trial calls) a `TrainResult` with the
validation accuracy, validation loss and mean training loss of every epoch; `Trainer` (what `archdsl train`
drives) runs one epoch at a time and checkpoints its whole state (`state_dict` / `load_state_dict`), so a run
continued from a checkpoint ends with the same weights, bit for bit, as one that was never stopped.

Recipe: AdamW (no weight decay on biases and norm weights: parameters of <= 1 dimension), a cosine learning
rate decayed per step to 0 over all epochs, cross-entropy (with optional label smoothing; the validation and
test losses are plain cross-entropy), whole batches in an order drawn afresh each epoch, no augmentation (the
data sets are normalized per channel, data.py); before each evaluation, BatchNorm statistics are recomputed
exactly over the first `precise_bn` training images (`precise_bn`). The seed fixes the batch order and every
other random draw made while training (the caller's global torch RNG is left as it was). Each training step and
each evaluation batch runs inside its own `compute_lock()` slice, so a latency measurement in another process
waits at most one step and never times a model while this one trains.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..bench.lock import compute_lock
from ..bench.machine import torch_threads
from ..bench.model import is_oom
from .data import Dataset

__all__ = ["EpochStats", "Recipe", "TrainError", "TrainResult", "Trainer", "evaluate", "evaluate_split",
           "precise_bn", "recipe_context", "recipe_optimizer", "seeded_rng_state", "train_and_eval"]

EpochCallback = Callable[[int, float, float], "bool | None"]
StepCallback = Callable[[int, float], None]


class TrainError(RuntimeError):
    """Training could not run (the model does not fit in memory)."""


@dataclass(frozen=True)
class Recipe:
    """The training settings. The defaults are a search trial's."""

    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    seed: int = 0
    precise_bn: int = 2048  # training images whose statistics BatchNorm evaluates with (0: running averages)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.precise_bn < 0:
            raise ValueError(f"precise_bn must be >= 0, got {self.precise_bn}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochStats:
    """One epoch: mean training loss, validation accuracy (0..1) and loss; diverged: a loss went non-finite (the
    epoch stopped there and its figures are NaN)."""

    epoch: int
    train_loss: float
    val_accuracy: float
    val_loss: float
    seconds: float
    diverged: bool = False


class Trainer:
    """The recipe applied to one module and data set, an epoch at a time. Its state (optimizer, learning-rate
    schedule, the batch-order generator, the RNG state training draws from, the epochs done) is `state_dict()`;
    the module's weights are the module's own state_dict."""

    def __init__(self, module: nn.Module, data: Dataset, recipe: Recipe,
                 lock_path: str | os.PathLike | None = None) -> None:
        self.module, self.data, self.recipe, self.lock_path = module, data, recipe, lock_path
        self.device = next((p.device for p in module.parameters()), torch.device("cpu"))
        n = len(data.y_train)
        # Whole batches only (a last batch of 1 breaks BatchNorm on a 1x1 map), unless the set is under one batch.
        self.steps_per_epoch = max(1, n // recipe.batch_size)
        total_steps = recipe.epochs * self.steps_per_epoch
        params = [p for p in module.parameters() if p.requires_grad]
        self.opt, self.sched = recipe_optimizer([p for p in params if p.dim() > 1],
                                                [p for p in params if p.dim() <= 1], recipe, total_steps)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.gen = torch.Generator().manual_seed(recipe.seed)
        self.rng_state = seeded_rng_state(recipe.seed)
        self.epoch = 0

    def run_epoch(self, on_step: StepCallback | None = None) -> EpochStats:
        """Train one epoch and evaluate on the validation split. `on_step(step, loss)` runs after each step."""
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng_state)
            loss = self._train_epoch(on_step)
            if math.isfinite(loss):
                precise_bn(self.module, self.data.x_train[:self.recipe.precise_bn], lock_path=self.lock_path)
                acc, val_loss = evaluate_split(self.module, self.data.x_val, self.data.y_val,
                                               batch_size=max(256, self.recipe.batch_size), lock_path=self.lock_path)
            self.rng_state = torch.get_rng_state()
        self.epoch += 1
        if not math.isfinite(loss):
            return EpochStats(self.epoch, math.nan, math.nan, math.nan, time.perf_counter() - start, diverged=True)
        return EpochStats(self.epoch, loss, acc, val_loss, time.perf_counter() - start)

    def _train_epoch(self, on_step: StepCallback | None) -> float:
        """Mean training loss of the epoch, or NaN at the first non-finite loss (that step is not applied)."""
        data, bs, n = self.data, self.recipe.batch_size, len(self.data.y_train)
        self.module.train()
        perm = torch.randperm(n, generator=self.gen)
        loss_sum = 0.0
        for step in range(self.steps_per_epoch):
            idx = perm[step * bs:(step + 1) * bs] if n >= bs else perm
            x, y = data.x_train[idx].to(self.device), data.y_train[idx].to(self.device)
            with compute_lock(self.lock_path):
                self.opt.zero_grad(set_to_none=True)
                loss = self.loss_fn(self.module(x), y)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    return math.nan
                loss.backward()
                self.opt.step()
            self.sched.step()
            loss_sum += loss_value
            if on_step is not None:
                on_step(step + 1, loss_value)
        return loss_sum / self.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights that the next epoch depends on (tensors and plain values only)."""
        return {"epoch": self.epoch, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "batch_order_rng": self.gen.get_state(), "torch_rng": self.rng_state.clone(),
                "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(f"the checkpoint has {state['steps_per_epoch']} steps per epoch, this run "
                             f"{self.steps_per_epoch}")
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["batch_order_rng"])
        self.rng_state = state["torch_rng"].clone()
        self.epoch = int(state["epoch"])


def recipe_optimizer(decay: list, no_decay: list, recipe: Recipe, total_steps: int):
    """The recipe's optimizer and schedule: AdamW (weight decay on `decay`, none on `no_decay`: biases and norm
    weights) and a cosine learning rate decayed per step to 0 over `total_steps`. Returns (optimizer, scheduler)."""
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    return opt, sched


def seeded_rng_state(seed: int) -> torch.Tensor:
    """torch's CPU RNG state after manual_seed(seed), the caller's own RNG left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state()


def precise_bn(module: nn.Module, x: torch.Tensor, *, batch_size: int = 256,
               lock_path: str | os.PathLike | None = None) -> None:
    """Set every BatchNorm's running mean and variance to the exact averages over the images `x` (pycls's
    "precise BN"), the rest of the module in eval mode (no dropout or drop-path, no random draw). After a short
    training the momentum-averaged statistics still lag the weights, so a BatchNorm network evaluates near chance
    after one epoch while it has learned (MobileNetV2, FasterNet, ResNet); this makes a short schedule fair to
    them. A module without BatchNorm, or an empty `x`, is left as it was."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(x) == 0:
        return
    was_training = module.training
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    momenta = [bn.momentum for bn in bns]
    module.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches below
        bn.train()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                with compute_lock(lock_path):
                    module(x[i:i + batch_size].to(device))
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        module.train(was_training)


@contextlib.contextmanager
def recipe_context(module: nn.Module, batch_size: int, threads: int | None) -> Iterator[None]:
    """Around training: torch's intra-op threads set to `threads` (None: as is) and restored, the module's
    train/eval mode restored, and running out of memory raised as TrainError."""
    was_training = module.training
    try:
        with torch_threads(threads):
            yield
    except MemoryError as e:
        raise TrainError(_oom_message(module, batch_size, e)) from e
    except RuntimeError as e:
        if not is_oom(e):
            raise
        raise TrainError(_oom_message(module, batch_size, e)) from e
    finally:
        module.train(was_training)


@dataclass
class TrainResult:
    """Per-epoch validation accuracy (0..1) and loss and mean training loss, for the epochs that completed."""

    accuracies: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
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
                   weight_decay: float = 0.05, label_smoothing: float = 0.0, seed: int = 0, threads: int | None = 1,
                   on_epoch: EpochCallback | None = None,
                   lock_path: str | os.PathLike | None = None) -> TrainResult:
    """Train `module` in place for up to `epochs` epochs on data.x_train and evaluate on data.x_val after each.

    `on_epoch(epoch, val_acc, train_loss)` (epoch counts from 1) runs after every epoch; returning False ends
    training there. `threads` sets torch's intra-op threads for the call (None: leave as is). A non-finite loss
    ends training with `diverged=True`. Raises TrainError when the model runs out of memory."""
    recipe = Recipe(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                    label_smoothing=label_smoothing, seed=seed)
    start = time.perf_counter()
    counts = torch.bincount(data.y_val, minlength=data.num_classes)
    result = TrainResult(chance=float(counts.max()) / max(1, len(data.y_val)))
    try:
        with recipe_context(module, batch_size, threads):
            trainer = Trainer(module, data, recipe, lock_path)
            for _ in range(epochs):
                stats = trainer.run_epoch()
                if stats.diverged:
                    result.diverged = True
                    break
                result.accuracies.append(stats.val_accuracy)
                result.losses.append(stats.train_loss)
                result.val_losses.append(stats.val_loss)
                result.epochs_run = stats.epoch
                if on_epoch is not None and on_epoch(stats.epoch, stats.val_accuracy, stats.train_loss) is False:
                    result.stopped = True
                    break
    finally:
        result.seconds = time.perf_counter() - start
    return result


def evaluate_split(module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256,
                   lock_path: str | os.PathLike | None = None) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of `module` (put in eval mode) on images x and labels y; each batch
    inside a compute_lock slice."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.eval()
    correct, loss_sum = 0, 0.0
    with torch.inference_mode():
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            with compute_lock(lock_path):
                out = module(xb)
                correct += int((out.argmax(dim=1) == yb).sum())
                loss_sum += float(nn.functional.cross_entropy(out.float(), yb, reduction="sum"))
    return correct / max(1, len(y)), loss_sum / max(1, len(y))


def evaluate(module: nn.Module, data: Dataset, *, batch_size: int = 256,
             lock_path: str | os.PathLike | None = None) -> float:
    """Top-1 accuracy of `module` (put in eval mode) on data.x_val; each batch inside a compute_lock slice."""
    return evaluate_split(module, data.x_val, data.y_val, batch_size=batch_size, lock_path=lock_path)[0]


def _oom_message(module: nn.Module, batch_size: int, e: BaseException) -> str:
    name = getattr(module, "arch_name", None) or type(module).__name__
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{name} ran out of memory while training at batch size {batch_size}: {first}"
