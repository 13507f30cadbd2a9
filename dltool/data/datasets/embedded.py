"""The embedded default data set: scikit-learn's 8x8 handwritten digits (no download, works offline)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as sk_digits

from dltool.config.schema import DataConfig
from dltool.data.splits import RawData


def load_digits(cfg: DataConfig) -> RawData:
    """scikit-learn's 1,797 handwritten 8x8 digits (ships with scikit-learn: no download)."""
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target, dtype=torch.int64)
    return RawData({"all": (x, y)}, [str(c) for c in d.target_names], "image")
