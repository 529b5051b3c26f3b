"""Training a supernet (search/supernet.py): the sandwich rule with in-place distillation, an epoch at a time.

Takes: a `Supernet`, a `Dataset` fitted to the space's input, the trial recipe (`train.Recipe`: AdamW without
decay on 1-d tensors, a cosine schedule over all steps, the same data and normalization), and the pool of
networks to draw from (the survey's valid points). Returns: `SupernetTrainer`, whose `run_epoch` trains one epoch
and reports the largest network's validation accuracy, and whose state (`state_dict`) with the supernet's
weights is a checkpoint: a run continued from it ends with the same weights, bit for bit, as one never stopped.

Each step (BigNAS / Once-for-All's sandwich rule): the largest network of the pool (most MACs) learns from the
labels; the smallest and `random_per_step` other networks learn from the largest's predictions (in-place
distillation: cross-entropy against its softmax, which carries more than the label); their gradients add up into
one optimizer step on the shared weights. One of the others is a fresh draw from the whole space (it joins the
pool; a larger or smaller one becomes an end of the sandwich), the rest come from the pool: so every part of the
space is trained, not only the surveyed networks, and the store grows where a fresh network needs more
(Supernet.grow; the optimizer's state is carried over). Draws use the trainer's own generators.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import torch
from torch import nn

from ..bench.lock import compute_lock
from .data import Dataset
from .supernet import Supernet
from .train import EpochStats, Recipe, evaluate_split, recipe_optimizer, seeded_rng_state

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
        self.total_steps = recipe.epochs * self.steps_per_epoch
        names = [n for n, p in net.named_parameters() if p.requires_grad]
        params = dict(net.named_parameters())
        self._make_optimizer([[n for n in names if params[n].dim() > 1], [n for n in names if params[n].dim() <= 1]])
        self.draws = random.Random(recipe.seed)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.gen = torch.Generator().manual_seed(recipe.seed)
        self.rng_state = seeded_rng_state(recipe.seed)
        self.epoch = 0

    def _make_optimizer(self, groups: list[list[str]]) -> None:
        """AdamW over the named parameters in `groups` (with weight decay, without), in that order."""
        params = dict(self.net.named_parameters())
        self.groups = [list(g) for g in groups]
        self.opt, self.sched = recipe_optimizer([params[n] for n in self.groups[0]],
                                                [params[n] for n in self.groups[1]], self.recipe, self.total_steps)

    def _adopt(self) -> None:
        """Carry the optimizer over to tensors the store replaced or added while growing (their gradient so far
        and AdamW's moments move with them, at the old tensor's place in the new one)."""
        if not self.net.replaced:
            return
        names = {id(p): n for n, p in self.net.named_parameters()}
        for old, new, place in self.net.replaced:
            name = names[id(new)]
            group = 0 if new.dim() > 1 else 1
            if old is None:
                self.opt.param_groups[group]["params"].append(new)
                self.groups[group].append(name)
                continue
            ps = self.opt.param_groups[group]["params"]
            ps[next(i for i, p in enumerate(ps) if p is old)] = new
            st = self.opt.state.pop(old, None)
            if st:
                for k in ("exp_avg", "exp_avg_sq"):
                    grown = torch.zeros_like(new, memory_format=torch.contiguous_format)
                    grown[place] = st[k]
                    st[k] = grown
                self.opt.state[new] = st
            if old.grad is not None:
                new.grad = torch.zeros_like(new)
                new.grad[place] = old.grad
        self.net.replaced.clear()

    def _cost(self, point: dict) -> int:
        return self.net.network(point)[1].graph.total().macs

    def _fresh(self) -> dict:
        """A network drawn from the whole space; it joins the pool, and a new largest or smallest becomes an end
        of the sandwich."""
        from .space import Candidate

        for _ in range(100):
            cand = self.net.space.resolve(lambda cp: cp.sample(self.draws))
            if isinstance(cand, Candidate):
                point, macs = cand.point, cand.graph.total().macs
                self.pool.append(point)
                if macs > self._cost(self.largest):
                    self.largest = point
                elif macs < self._cost(self.smallest):
                    self.smallest = point
                return point
        return self.pool[0]

    def _draw(self) -> list[dict]:
        idx = torch.randint(len(self.pool), (max(0, self.random_per_step - 1),), generator=self.gen).tolist()
        return [self.smallest] + ([self._fresh()] if self.random_per_step else []) + [self.pool[i] for i in idx]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One sandwich step; the largest network's loss (NaN, with nothing applied, when a loss went
        non-finite)."""
        self.opt.zero_grad(set_to_none=True)
        others = self._draw()  # before the largest runs: a fresh draw may be the new largest
        self.net.growable = True
        logits = self.net.forward_point(self.largest, x)
        self._adopt()
        loss = self.loss_fn(logits, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            return math.nan
        loss.backward()
        soft = torch.softmax(logits.detach(), dim=1)
        for point in others:
            out = self.net.forward_point(point, x)
            self._adopt()
            sub = (-(soft * torch.log_softmax(out, dim=1)).sum(1).mean() if self.distill
                   else self.loss_fn(out, y))
            if not math.isfinite(float(sub.detach())):
                return math.nan
            sub.backward()
        self.net.growable = False
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
        """Everything but the supernet's weights that the next epoch depends on (the pool grows as it trains)."""
        return {"epoch": self.epoch, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "generator": self.gen.get_state(), "torch_rng": self.rng_state.clone(), "draws": self.draws.getstate(),
                "steps_per_epoch": self.steps_per_epoch, "largest": self.largest, "smallest": self.smallest,
                "pool": self.pool, "groups": self.groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(f"the checkpoint has {state['steps_per_epoch']} steps per epoch, this run "
                             f"{self.steps_per_epoch}")
        self._make_optimizer(state["groups"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        self.rng_state = state["torch_rng"].clone()
        self.draws.setstate(_tuples(state["draws"]))
        self.epoch = int(state["epoch"])
        self.largest, self.smallest, self.pool = state["largest"], state["smallest"], list(state["pool"])


def _tuples(v):
    """random.Random's state as it was saved (a checkpoint may hand its tuples back as lists)."""
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v
