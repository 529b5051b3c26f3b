"""A user's own images as a data set: `folder:PATH` (image folders, decoded with Pillow) and `npz:PATH` (arrays).

Takes: a path. Returns: a `data.RawData` (images N x C x H x W, labels 0..K-1, class names; the test split when
the files hold one, else `data.load_dataset` holds one out). Every problem is a `DatasetError` that names the
file: a missing path, an empty class folder, images of two sizes (both named, with their sizes), an unreadable
or corrupt image, an npz without its arrays or with arrays of the wrong shape, labels out of range.

folder:PATH, the common ImageFolder layout: one subfolder per class (sorted names are the labels 0..K-1), images
anywhere below it (files Pillow knows by their extension; hidden files and other files are skipped):
    PATH/CLASS/*.png                       test split held out (data.TEST_FRACTION, fixed)
    PATH/train/CLASS/... + PATH/test/CLASS/...   (or PATH/val/ when there is no test/): test from there
Every image must have the same width and height. When all are grey (Pillow modes 1, L, LA, I, I;16, F) the set
has 1 channel; otherwise every image is converted to RGB (3 channels; alpha is dropped).

npz:PATH, a NumPy .npz archive (np.savez) with arrays `x` (images) and `y` (integer labels 0..K-1), optionally
`x_test` + `y_test` (the test split) and a scalar `num_classes` (default: the largest label + 1). Image layouts:
    N x H x W                  grey
    N x C x H x W              channels first (any C)
    N x H x W x C              channels last, recognized when the last dimension is 1 or 3 and dimension 1 is not
Pickled (object) arrays are refused: the archive is read with allow_pickle=False.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .rawdata import DatasetError, RawData

__all__ = ["load_folder", "load_npz", "GREY_MODES"]

GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_SPLIT_DIRS = ("train", "test", "val")


# ------------------------------------------------------------------------------------------ folder:PATH

def load_folder(path: str | os.PathLike) -> RawData:
    """Image folders under `path` (see the module docstring for the layouts)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise DatasetError("folder: data sets need Pillow: pip install pillow") from None
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder (folder:PATH wants one subfolder of images per class)")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (folder:PATH wants one subfolder of images per class)")
    train_dir, test_dir = _layout(root)
    classes = _class_dirs(train_dir)
    if len(classes) < 2:
        raise DatasetError(f"{train_dir}: found {len(classes)} class subfolder(s) ({', '.join(classes) or 'none'}); "
                           f"a data set needs at least 2 (PATH/CLASS/IMAGE, one subfolder per class)")
    Image.init()
    exts = {e.lower() for e in Image.registered_extensions()}
    files, labels = _list_images(train_dir, classes, exts)
    test_files: list[Path] = []
    test_labels: list[int] = []
    if test_dir is not None:
        test_classes = _class_dirs(test_dir)
        unknown = [c for c in test_classes if c not in classes]
        if unknown:
            raise DatasetError(f"{test_dir}: class folder(s) {', '.join(unknown)} have no counterpart in {train_dir} "
                               f"(its classes: {', '.join(classes)})")
        if not test_classes:
            raise DatasetError(f"{test_dir}: no class subfolders (the test split is laid out like {train_dir})")
        test_files, test_labels = _list_images(test_dir, test_classes, exts, [classes.index(c) for c in test_classes])
    images, grey = _decode(Image, files + test_files)
    x = _stack(images, grey)
    n = len(files)
    what = "grey" if grey else "RGB"
    h, w = x.shape[2:]
    source = f"image folders under {root}: {n} images of {len(classes)} classes, {w}x{h} {what}"
    if test_dir is None:
        return RawData(x, np.asarray(labels, dtype=np.int64), len(classes), source, classes=tuple(classes))
    return RawData(x[:n], np.asarray(labels, dtype=np.int64), len(classes), source, x_test=x[n:],
                   y_test=np.asarray(test_labels, dtype=np.int64),
                   test_source=f"official: {len(test_files)} images under {test_dir}", classes=tuple(classes))


def _layout(root: Path) -> tuple[Path, Path | None]:
    """(folder of the training classes, folder of the test classes or None): PATH/train + PATH/test (or val) when
    PATH has a train/ folder and no folders but train/, test/ and val/; else PATH itself."""
    subdirs = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if "train" not in subdirs or not subdirs <= set(_SPLIT_DIRS):
        return root, None
    for name in ("test", "val"):
        if name in subdirs:
            return root / "train", root / name
    return root / "train", None


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _list_images(folder: Path, classes: list[str], exts: set[str],
                 labels: list[int] | None = None) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    out: list[int] = []
    for i, name in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(folder / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath) / f for f in sorted(filenames)
                      if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
        if not found:
            raise DatasetError(f"{folder / name}: empty class folder (no image files: .png, .jpg, .bmp, ...)")
        files += found
        out += [i if labels is None else labels[i]] * len(found)
    return files, out


def _decode(Image, files: list[Path]) -> tuple[list[np.ndarray], bool]:
    """Each file as an array (H x W grey or H x W x 3 RGB), all of one size; whether every one was grey."""
    images: list[np.ndarray] = []
    all_grey = True
    first: tuple[Path, tuple[int, int]] | None = None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                if first is None:
                    first = (f, im.size)
                elif im.size != first[1]:
                    (w0, h0), (w1, h1) = first[1], im.size
                    raise DatasetError(f"images differ in size: {first[0]} is {w0}x{h0} but {f} is {w1}x{h1} "
                                       f"(width x height); resize them to one size first")
                if im.mode in GREY_MODES:
                    arr = np.asarray(im.convert("L") if im.mode in ("1", "LA") else im)
                else:
                    all_grey = False
                    arr = np.asarray(im.convert("RGB"))
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ... for bad files
            raise DatasetError(f"{f}: cannot read this image ({type(e).__name__}: {e})") from None
        images.append(arr)
    return images, all_grey


def _stack(images: list[np.ndarray], grey: bool) -> np.ndarray:
    """N x 1 x H x W (all grey) or N x 3 x H x W (grey ones repeated); float32 when any image is not 8-bit."""
    dtype = np.uint8 if all(a.dtype == np.uint8 for a in images) else np.float32
    if grey:
        return np.stack([a.astype(dtype, copy=False) for a in images])[:, None]
    rgb = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in images]
    return np.ascontiguousarray(np.stack([a.astype(dtype, copy=False) for a in rgb]).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------- npz:PATH

def load_npz(path: str | os.PathLike) -> RawData:
    """Arrays x, y (and optionally x_test, y_test, num_classes) of a .npz archive (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file (npz:PATH wants a .npz archive with arrays x and y)")
    try:
        with np.load(p, allow_pickle=False) as z:
            names = set(z.files)
            missing = [a for a in ("x", "y") if a not in names]
            if missing:
                raise DatasetError(f"{p}: no array {' or '.join(missing)} (it has: {', '.join(sorted(names)) or 'none'}"
                                   f"); an npz data set holds x (images) and y (labels), optionally x_test and y_test")
            if ("x_test" in names) != ("y_test" in names):
                raise DatasetError(f"{p}: x_test and y_test go together (it has only "
                                   f"{'x_test' if 'x_test' in names else 'y_test'})")
            arrays = {a: z[a] for a in ("x", "y", "x_test", "y_test", "num_classes") if a in names}
    except DatasetError:
        raise
    except (AttributeError, TypeError):  # np.load gave a plain array: an .npy file, not an archive
        raise DatasetError(f"{p}: not an .npz archive (write one with numpy.savez(path, x=..., y=...))") from None
    except Exception as e:  # noqa: BLE001 - a corrupt zip, a pickled array, ...
        raise DatasetError(f"{p}: cannot read this .npz archive ({type(e).__name__}: {e})") from None
    x = _images(arrays["x"], "x", p)
    y = _labels(arrays["y"], "y", p, len(x))
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = _images(arrays["x_test"], "x_test", p)
        y_test = _labels(arrays["y_test"], "y_test", p, len(x_test))
        if x_test.shape[1:] != x.shape[1:]:
            raise DatasetError(f"{p}: x_test images are {_shape(x_test.shape[1:])} (C x H x W) but x images are "
                               f"{_shape(x.shape[1:])}")
    k = _num_classes(arrays.get("num_classes"), y, y_test, p)
    c, h, w = x.shape[1:]
    source = f"arrays of {p}: {len(y)} images {c}x{h}x{w}, {k} classes"
    if x_test is None:
        return RawData(x, y, k, source)
    return RawData(x, y, k, source, x_test=x_test, y_test=y_test,
                   test_source=f"official: x_test / y_test of {p}, {len(y_test)} images")


def _shape(shape) -> str:
    return " x ".join(str(int(d)) for d in shape)


def _images(a: np.ndarray, name: str, p: Path) -> np.ndarray:
    """N x C x H x W from N x H x W, N x C x H x W or N x H x W x C (see the module docstring)."""
    if a.dtype.kind not in "biuf":
        raise DatasetError(f"{p}: array {name} holds {a.dtype} values; images are numbers (uint8 or float)")
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[3] in (1, 3) and a.shape[1] not in (1, 3):
            a = a.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"{p}: array {name} has shape {_shape(a.shape) or 'scalar'}; images are N x H x W (grey), "
                           f"N x C x H x W or N x H x W x C")
    if len(a) == 0 or 0 in a.shape:
        raise DatasetError(f"{p}: array {name} is empty (shape {_shape(a.shape)})")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DatasetError(f"{p}: array {name} holds NaN or infinite values")
    return np.ascontiguousarray(a)


def _labels(a: np.ndarray, name: str, p: Path, n: int) -> np.ndarray:
    if a.ndim != 1 or len(a) != n:
        raise DatasetError(f"{p}: array {name} has shape {_shape(a.shape) or 'scalar'}; it must hold one label per "
                           f"image ({n})")
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        a = a.astype(np.int64)
    if a.dtype.kind not in "biu":
        raise DatasetError(f"{p}: array {name} holds {a.dtype} values; labels are integers 0..K-1")
    a = a.astype(np.int64)
    if a.min() < 0:
        raise DatasetError(f"{p}: label out of range in {name}: {int(a.min())} (labels are 0..K-1)")
    return a


def _num_classes(given: np.ndarray | None, y: np.ndarray, y_test: np.ndarray | None, p: Path) -> int:
    if given is None:
        k = int(y.max()) + 1
        if y_test is not None and int(y_test.max()) >= k:
            raise DatasetError(f"{p}: label out of range in y_test: {int(y_test.max())}, but y's labels are "
                               f"0..{k - 1} (add a scalar num_classes if a class has no training images)")
    else:
        if given.ndim != 0 or given.dtype.kind not in "iu" or int(given) < 2:
            raise DatasetError(f"{p}: num_classes must be a scalar integer >= 2, got {given!r}")
        k = int(given)
        for name, labels in (("y", y), ("y_test", y_test)):
            if labels is not None and int(labels.max()) >= k:
                raise DatasetError(f"{p}: label out of range in {name}: {int(labels.max())} (num_classes is {k}: "
                                   f"labels are 0..{k - 1})")
    if k < 2:
        raise DatasetError(f"{p}: every label is 0; a data set needs at least 2 classes")
    return k
