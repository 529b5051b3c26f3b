"""The training form is real: a few optimizer steps on a small batch reduce the loss for each example family."""

from __future__ import annotations

import pytest
import torch

import archdsl

FAMILIES = ["convnext_atto", "inceptionnext_atto", "unireplknet_a", "replknet_31b"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_sgd_steps_reduce_loss(name):
    torch.manual_seed(0)
    model = archdsl.load(f"examples/{name}.arch", num_classes=10, input_shape=(3, 32, 32)).train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_drop_path_is_active_only_in_training():
    model = archdsl.load("examples/convnext_atto.arch", drop_path=0.5, input_shape=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        a = model(x)
        b = model(x)
    assert not torch.equal(a, b)
