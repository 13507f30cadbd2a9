"""The embedded default data set: scikit-learn's 8x8 handwritten digits (no download, works offline)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_breast_cancer as sk_breast_cancer
from sklearn.datasets import load_diabetes as sk_diabetes
from sklearn.datasets import load_digits as sk_digits

from dltool.config.schema import DataConfig
from dltool.data.splits import RawData
from dltool.tasks import DATASET_TASKS  # each built-in data set's task, declared once


def load_digits(cfg: DataConfig) -> RawData:
    """scikit-learn's 1,797 handwritten 8x8 digits (ships with scikit-learn: no download)."""
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target, dtype=torch.int64)
    return RawData({"all": (x, y)}, [str(c) for c in d.target_names], "image")


def load_diabetes(cfg: DataConfig) -> RawData:
    """scikit-learn's diabetes regression data: 442 rows, 10 features, disease progression after one year."""
    d = sk_diabetes()
    x = torch.tensor(d.data, dtype=torch.float32)  # (442, 10)
    y = torch.tensor(d.target, dtype=torch.float32)[:, None]  # (442, 1)
    return RawData({"all": (x, y)}, ["progression"], "features", list(d.feature_names), DATASET_TASKS["diabetes"])


def load_breast_cancer(cfg: DataConfig) -> RawData:
    """scikit-learn's breast cancer data as a screen: positive label malignant (212 of 569), 30 features."""
    d = sk_breast_cancer()
    x = torch.tensor(d.data, dtype=torch.float32)  # (569, 30)
    y = torch.tensor(d.target == 0, dtype=torch.float32)[:, None]  # (569, 1): sklearn's 0 is malignant
    return RawData({"all": (x, y)}, ["malignant"], "features", [str(n) for n in d.feature_names],
                   DATASET_TASKS["breast_cancer"])
