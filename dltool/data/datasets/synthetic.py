"""Generated and embedded toy data: the K-class spiral, digits read row by row, the adding problem.

Every generator is seeded by data.split_seed, so a config always means the same examples.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as sk_digits

from dltool.config.schema import DataConfig
from dltool.data.splits import RawData
from dltool.errors import ConfigError


def positive(cfg: DataConfig, key: str, minimum: float = 1) -> None:
    value = getattr(cfg, key)
    if value < minimum:
        raise ConfigError(f"data.{key}={value} must be at least {minimum}.")


def load_spiral(cfg: DataConfig) -> RawData:
    """cs231n's K-class 2-D spiral: class k's arm sweeps 4 radians; angle noise `data.noise`."""
    positive(cfg, "points_per_class", 2)
    k = cfg.num_classes if cfg.num_classes is not None else 3
    if k < 2:
        raise ConfigError(f"data.num_classes={k} must be at least 2 for the spiral.")
    if cfg.noise < 0:
        raise ConfigError(f"data.noise={cfg.noise} must be zero or positive.")
    g = torch.Generator().manual_seed(cfg.split_seed)
    n = cfg.points_per_class
    r = torch.linspace(0.0, 1.0, n).repeat(k)  # (K*N,) radius
    arm = torch.arange(k).repeat_interleave(n)  # (K*N,) class
    t = torch.linspace(0.0, 4.0, n).repeat(k) + arm * 4.0 + torch.randn(k * n, generator=g) * cfg.noise
    x = torch.stack([r * torch.sin(t), r * torch.cos(t)], dim=1)  # (K*N, 2)
    return RawData({"all": (x, arm)}, [f"arm{i}" for i in range(k)], "features")


def load_digits_rows(cfg: DataConfig) -> RawData:
    """scikit-learn's 8x8 digits as sequences: 8 time steps (rows) of 8 features (pixels), in [0, 1]."""
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (N, T=8, F=8)
    y = torch.tensor(d.target, dtype=torch.int64)
    return RawData({"all": (x, y)}, [str(c) for c in d.target_names], "sequence")


def load_adding(cfg: DataConfig) -> RawData:
    """The adding problem (Hochreiter & Schmidhuber 1997) as classification.

    Each step carries (value ~ U(0,1), marker); exactly two steps are marked, one in each half of the
    sequence. The label is 1 when the two marked values add up to more than 1, else 0 (balanced), so a
    model must carry a value across up to `data.length` steps.
    """
    positive(cfg, "length", 2)
    positive(cfg, "num_samples", 10)
    g = torch.Generator().manual_seed(cfg.split_seed)
    n, t = cfg.num_samples, cfg.length
    values = torch.rand(n, t, generator=g)  # (N, T)
    half = t // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, t, (n,), generator=g)
    marks = torch.zeros(n, t)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    total = values[rows, first] + values[rows, second]
    x = torch.stack([values, marks], dim=2)  # (N, T, 2)
    y = (total > 1.0).long()
    return RawData({"all": (x, y)}, ["sum<=1", "sum>1"], "sequence")


def load_recall(cfg: DataConfig) -> RawData:
    """Delayed recall: a one-hot symbol at step 0, then `data.length - 1` steps of noise; name the symbol.

    The class is the first symbol (`data.num_classes`, default 4), so a model must remember it across
    the whole sequence; the distractor steps carry random one-hot symbols of the same alphabet.
    """
    positive(cfg, "length", 2)
    positive(cfg, "num_samples", 10)
    k = cfg.num_classes if cfg.num_classes is not None else 4
    if k < 2:
        raise ConfigError(f"data.num_classes={k} must be at least 2 for delayed recall.")
    g = torch.Generator().manual_seed(cfg.split_seed)
    symbols = torch.randint(0, k, (cfg.num_samples, cfg.length), generator=g)  # (N, T)
    x = torch.nn.functional.one_hot(symbols, k + 1).float()  # (N, T, K+1); the extra channel marks step 0
    x[:, 0, k] = 1.0
    return RawData({"all": (x, symbols[:, 0].clone())}, [f"symbol{i}" for i in range(k)], "sequence")

