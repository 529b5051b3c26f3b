"""What every data set loader returns (`RawData`) and the error every loader raises (`DatasetError`): the base
that data.py (the bundled sets, splits, fitting to an input) and data_files.py (a user's image folders and .npz
files) both build on.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["DatasetError", "RawData"]


class DatasetError(Exception):
    """A data set is unknown, not installed here, unreadable, or does not fit the architecture."""


class RawData(NamedTuple):
    """What a loader returns: every image (N x C x H x W or N x H x W, any numeric dtype) and label (N ints
    0..K-1); optionally the set's own test split (`x_test`, `y_test`, described by `test_source`) and class
    names."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    source: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    test_source: str | None = None
    classes: tuple[str, ...] | None = None
