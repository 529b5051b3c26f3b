"""A user's data sets: `folder:PATH` image folders (made here with Pillow) and `npz:PATH` arrays, their test
splits, and the errors that name the file at fault (empty class, mixed sizes, corrupt image, missing arrays,
wrong shapes, labels out of range)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from archdsl.search import data as D
from archdsl.search.data_files import load_folder, load_npz
from PIL import Image


def image(path: Path, value: int, size=(8, 6), mode: str = "L") -> Path:
    """A `mode` image of `size` (width, height) whose pixels are `value` (plus a little pattern)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    a = (np.add.outer(np.arange(h), np.arange(w)) % 7 + value).astype(np.uint8)
    if mode == "RGB":
        a = np.stack([a, a // 2, 255 - a], axis=2)
    Image.fromarray(a, mode).save(path)
    return path


def folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 5, **kw) -> Path:
    for i, c in enumerate(classes):
        for j in range(per_class):
            image(root / c / f"{j}.png", 40 * i + j, **kw)
    return root


def test_folder_layout_with_held_out_test(tmp_path):
    root = folder(tmp_path / "pets")
    (root / "dog" / "notes.txt").write_text("not an image")  # skipped: not an image extension
    image(root / "eel" / "more" / "deep.png", 90)  # below a class folder: still that class
    raw = load_folder(root)
    assert raw.x.shape == (16, 1, 6, 8) and raw.x.dtype == np.uint8 and raw.classes == ("cat", "dog", "eel")
    assert raw.y.tolist() == [0] * 5 + [1] * 5 + [2] * 6 and raw.x_test is None
    ds = D.load_dataset(f"folder:{root}", val_fraction=0.25)
    assert ds.input_shape == (1, 6, 8) and ds.num_classes == 3 and ds.classes == ("cat", "dog", "eel")
    assert len(ds.y_test) == round(16 * D.TEST_FRACTION) and ds.test_split.startswith("held out")
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 16 and str(root) in ds.source


def test_folder_train_test_layout_and_colour(tmp_path):
    root = tmp_path / "split"
    folder(root / "train", mode="RGB")
    folder(root / "test", classes=("cat", "eel"), per_class=2)  # grey test images join an RGB set as RGB
    raw = load_folder(root)
    assert raw.x.shape == (15, 3, 6, 8) and raw.x_test.shape == (4, 3, 6, 8)
    assert raw.y_test.tolist() == [0, 0, 2, 2] and raw.test_source.startswith("official")
    assert np.array_equal(raw.x_test[0, 0], raw.x_test[0, 2])  # a grey image repeated to 3 channels
    ds = D.fit_to_input(D.load_dataset(f"folder:{root}"), 3, 8, 8)
    assert ds.x_test.shape == (4, 3, 8, 8) and len(ds.y_train) + len(ds.y_val) == 15
    (root / "test").rename(root / "val")  # val/ serves as the test split when there is no test/
    assert load_folder(root).x_test.shape == (4, 3, 6, 8)


def test_folder_relative_path_is_made_absolute(tmp_path, monkeypatch):
    folder(tmp_path / "rel")
    monkeypatch.chdir(tmp_path)
    assert D.canonical_name("folder:rel") == f"folder:{tmp_path / 'rel'}"
    assert D.load_dataset("folder:rel").name == f"folder:{tmp_path / 'rel'}"


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(D.DatasetError, match="no such folder"):
        load_folder(tmp_path / "missing")
    root = folder(tmp_path / "a")
    (root / "fox").mkdir()
    with pytest.raises(D.DatasetError, match=r"fox: empty class folder"):
        load_folder(root)

    root = folder(tmp_path / "b")
    odd = image(root / "dog" / "odd.png", 3, size=(9, 6))
    with pytest.raises(D.DatasetError) as info:
        load_folder(root)
    msg = str(info.value)
    assert "differ in size" in msg and str(root / "cat" / "0.png") in msg and "8x6" in msg
    assert str(odd) in msg and "9x6" in msg

    root = folder(tmp_path / "c")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(D.DatasetError, match=rf"{bad}: cannot read this image"):
        load_folder(root)
    good = (root / "cat" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(D.DatasetError, match=rf"{bad}: cannot read this image"):
        load_folder(root)

    root = folder(tmp_path / "d", classes=("only",))
    with pytest.raises(D.DatasetError, match="at least 2"):
        load_folder(root)
    root = folder(tmp_path / "e" / "train")
    folder(tmp_path / "e" / "test", classes=("cat", "yak"), per_class=1)
    with pytest.raises(D.DatasetError, match="yak have no counterpart"):
        load_folder(tmp_path / "e")


def savez(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("shape,expect", [((20, 7, 9), (1, 7, 9)), ((20, 7, 9, 3), (3, 7, 9)),
                                          ((20, 7, 9, 1), (1, 7, 9)), ((20, 3, 7, 9), (3, 7, 9)),
                                          ((20, 4, 7, 9), (4, 7, 9))], ids=str)
def test_npz_layouts(tmp_path, shape, expect):
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    raw = load_npz(savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 4))
    assert raw.x.shape[1:] == expect and raw.num_classes == 4 and raw.x_test is None
    if len(shape) == 4 and shape[3] in (1, 3):
        assert np.array_equal(raw.x[:, 0], x[..., 0])  # channels last, moved first


def test_npz_with_test_split(tmp_path):
    rng = np.random.default_rng(1)
    path = savez(tmp_path / "d.npz", x=rng.integers(0, 255, (40, 5, 5), dtype=np.uint8), y=np.arange(40) % 5,
                 x_test=rng.integers(0, 255, (10, 5, 5), dtype=np.uint8), y_test=np.arange(10) % 5,
                 num_classes=np.int64(6))
    ds = D.load_dataset(f"npz:{path}", val_fraction=0.25)
    assert ds.num_classes == 6 and len(ds.y_test) == 10 and (len(ds.y_train), len(ds.y_val)) == (30, 10)
    assert ds.test_split.startswith("official") and ds.x_test.dtype == torch.float32


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((4, 5, 5))}, "no array y"),
    ({"x": np.zeros((4, 5, 5)), "y": np.arange(4), "x_test": np.zeros((2, 5, 5))}, "x_test and y_test go together"),
    ({"x": np.zeros((4, 5)), "y": np.arange(4)}, "images are N x H x W"),
    ({"x": np.zeros((4, 5, 5)), "y": np.arange(3)}, "one label per image"),
    ({"x": np.zeros((4, 5, 5)), "y": np.array([0, 1, -1, 1])}, "label out of range in y: -1"),
    ({"x": np.zeros((4, 5, 5)), "y": np.array([0.5, 1, 0, 1])}, "labels are integers"),
    ({"x": np.zeros((4, 5, 5)), "y": np.arange(4), "x_test": np.zeros((2, 5, 5)), "y_test": np.array([0, 4])},
     "label out of range in y_test: 4"),
    ({"x": np.zeros((4, 5, 5)), "y": np.arange(4), "num_classes": np.int64(3)}, "label out of range in y: 3"),
    ({"x": np.zeros((4, 5, 5)), "y": np.arange(4), "x_test": np.zeros((2, 6, 5)), "y_test": np.arange(2)},
     "x_test images are 1 x 6 x 5"),
    ({"x": np.full((4, 5, 5), np.nan), "y": np.arange(4)}, "NaN"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_npz_errors(tmp_path, arrays, message):
    path = savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(D.DatasetError, match=message) as info:
        load_npz(path)
    assert str(info.value).startswith(path)


def test_npz_not_an_archive(tmp_path):
    with pytest.raises(D.DatasetError, match="no such file"):
        load_npz(tmp_path / "missing.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(D.DatasetError, match="not an .npz archive"):
        load_npz(tmp_path / "plain.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(D.DatasetError, match="cannot read this .npz archive"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([object(), object()], dtype=object), y=np.arange(2))
    with pytest.raises(D.DatasetError, match="cannot read this .npz archive"):
        load_npz(tmp_path / "obj.npz")
