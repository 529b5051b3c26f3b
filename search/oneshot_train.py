"""Training a supernet (search/supernet.py): the sandwich rule with in-place distillation, an epoch at a time.

Takes: a `Supernet`, a `Dataset` fitted to the space's input, the trial recipe (`train.Recipe`: AdamW without
decay on 1-d tensors, a cosine schedule over all steps, the same data and normalization), and the pool of
networks to draw from (the survey's valid points). Returns: `SupernetTrainer`, whose `run_epoch` trains one epoch
and reports the largest network's validation accuracy, and whose state (`state_dict`) with the supernet's
weights is a checkpoint: a run continued from it ends with the same weights, bit for bit, as one never stopped.

Each step (BigNAS / Once-for-All's sandwich rule): the largest network of the pool (most MACs) learns from the
labels; the smallest and `random_per_step` networks drawn from the pool learn from the largest's predictions
(in-place distillation: cross-entropy against its softmax, which carries more than the label); their gradients
add up into one optimizer step on the shared weights. The pool is drawn with the trainer's own generator.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from ..bench.lock import compute_lock
from .data import Dataset
from .supernet import Supernet
from .train import EpochStats, Recipe, evaluate_split

__all__ = ["SupernetTrainer", "sandwich_ends"]


def sandwich_ends(net: Supernet, pool: list[dict]) -> tuple[dict, dict]:
    """The largest and the smallest network of the pool, by MACs (the first of equals)."""
    macs = [(net.network(p)[1].graph.total().macs, i) for i, p in enumerate(pool)]
    return pool[max(macs, key=lambda m: (m[0], -m[1]))[1]], pool[min(macs)[1]]


class SupernetTrainer:
    """The sandwich rule over `net` (see the module docstring), with `recipe`'s optimizer and schedule."""

    def __init__(self, net: Supernet, data: Dataset, recipe: Recipe, pool: list[dict], *, random_per_step: int = 2,
                 distill: bool = True) -> None:
        if not pool:
            raise ValueError("the pool of networks to train is empty")
        self.net, self.data, self.recipe, self.pool = net, data, recipe, list(pool)
        self.random_per_step, self.distill = random_per_step, distill
        self.largest, self.smallest = sandwich_ends(net, self.pool)
        n = len(data.y_train)
        self.steps_per_epoch = max(1, n // recipe.batch_size)
        total = recipe.epochs * self.steps_per_epoch
        params = [p for p in net.parameters() if p.requires_grad]
        decay, no_decay = [p for p in params if p.dim() > 1], [p for p in params if p.dim() <= 1]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.gen = torch.Generator().manual_seed(recipe.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            self.rng_state = torch.get_rng_state()
        self.epoch = 0

    def _draw(self) -> list[dict]:
        idx = torch.randint(len(self.pool), (self.random_per_step,), generator=self.gen).tolist()
        return [self.smallest] + [self.pool[i] for i in idx]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One sandwich step; the largest network's loss (NaN, with nothing applied, when a loss went
        non-finite)."""
        self.opt.zero_grad(set_to_none=True)
        logits = self.net.forward_point(self.largest, x)
        loss = self.loss_fn(logits, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            return math.nan
        loss.backward()
        soft = torch.softmax(logits.detach(), dim=1)
        for point in self._draw():
            out = self.net.forward_point(point, x)
            sub = (-(soft * torch.log_softmax(out, dim=1)).sum(1).mean() if self.distill
                   else self.loss_fn(out, y))
            if not math.isfinite(float(sub.detach())):
                return math.nan
            sub.backward()
        self.opt.step()
        return value

    def run_epoch(self, on_step=None) -> EpochStats:
        """Train one epoch, then evaluate the largest network (its BatchNorm statistics recomputed over the first
        `recipe.precise_bn` training images) on the validation split."""
        start = time.perf_counter()
        data, bs, n = self.data, self.recipe.batch_size, len(self.data.y_train)
        self.net.train()
        loss_sum = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng_state)
            perm = torch.randperm(n, generator=self.gen)
            for s in range(self.steps_per_epoch):
                idx = perm[s * bs:(s + 1) * bs] if n >= bs else perm
                with compute_lock():
                    value = self.step(data.x_train[idx], data.y_train[idx])
                if not math.isfinite(value):
                    self.epoch += 1
                    return EpochStats(self.epoch, math.nan, math.nan, math.nan, time.perf_counter() - start, True)
                self.sched.step()
                loss_sum += value
                if on_step is not None:
                    on_step(s + 1, value)
            self.rng_state = torch.get_rng_state()
        self.epoch += 1
        acc, val_loss = self.evaluate(self.largest)
        return EpochStats(self.epoch, loss_sum / self.steps_per_epoch, acc, val_loss, time.perf_counter() - start)

    def evaluate(self, point: dict[str, Any]) -> tuple[float, float]:
        """(validation accuracy, loss) of a network with its inherited weights, BatchNorm recalibrated."""
        module = self.net.extract(point, calibrate=self.data.x_train[:self.recipe.precise_bn])
        return evaluate_split(module, self.data.x_val, self.data.y_val, batch_size=max(256, self.recipe.batch_size))

    def state_dict(self) -> dict[str, Any]:
        """Everything but the supernet's weights that the next epoch depends on."""
        return {"epoch": self.epoch, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "generator": self.gen.get_state(), "torch_rng": self.rng_state.clone(),
                "steps_per_epoch": self.steps_per_epoch, "largest": self.largest, "smallest": self.smallest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(f"the checkpoint has {state['steps_per_epoch']} steps per epoch, this run "
                             f"{self.steps_per_epoch}")
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.rng_state = state["torch_rng"].clone()
        self.epoch = int(state["epoch"])
        self.largest, self.smallest = state["largest"], state["smallest"]
