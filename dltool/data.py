"""Data sets, stratified splits, normalization from the training split only, fast in-memory batches.

A loader returns RawData (tensors + class names); build_data splits it, computes normalization
statistics on the training split alone, applies them to every split once, and (for in-memory data)
moves the tensors to the training device so an epoch is a permutation and slices: no per-sample Python.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import torch
from sklearn.model_selection import train_test_split

from dltool.config import DataConfig
from dltool.errors import ConfigError
from dltool.registry import lookup

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RawData:
    """What a loader returns: float inputs (N, ...) and int64 labels (N,) per available split."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "all", or "train"/"test" (and maybe "val")
    class_names: list[str]
    layout: str = "image"  # image (C,H,W) | features (F,) | sequence (T,F) | signal (C,L)


class Split(Protocol):
    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]: ...
    def num_batches(self, batch_size: int) -> int: ...
    def __len__(self) -> int: ...


@dataclass
class TensorSplit:
    """A split held as two tensors (already normalized, already on the device)."""

    x: torch.Tensor  # (N, ...)
    y: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return len(self.y)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.y) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Shuffled when a generator is given (training), in order otherwise."""
        n = len(self.y)
        if generator is None:
            for i in range(0, n, batch_size):
                yield self.x[i:i + batch_size], self.y[i:i + batch_size]
            return
        order = torch.randperm(n, generator=generator).to(self.x.device, non_blocking=True)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx]


@dataclass
class DataBundle:
    train: Split
    val: Split
    test: Split | None
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    norm: dict = field(default_factory=dict)  # plain data: kind + tensors, stored in checkpoints
    layout: str = "image"

    def split(self, name: str) -> Split:
        s = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if s is None:
            have = [k for k in ("train", "val", "test") if getattr(self, k) is not None]
            raise ConfigError(f"split={name!r} is not available for this data set; valid splits: {', '.join(have)}.")
        return s


# --------------------------------------------------------------------------- loaders
def load_digits(cfg: DataConfig) -> RawData:
    """scikit-learn's 1,797 handwritten 8x8 digits (ships with scikit-learn: no download)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target, dtype=torch.int64)
    return RawData({"all": (x, y)}, [str(c) for c in d.target_names], "image")


def lazy(module: str, fn: str) -> Callable[[DataConfig], RawData]:
    """A loader from dltool/datasets/<module>.py, imported on first use (keeps start-up fast)."""

    def load(cfg: DataConfig) -> RawData:
        import importlib

        return getattr(importlib.import_module(f"dltool.datasets.{module}"), fn)(cfg)

    load.__name__ = fn
    return load


DATASETS: dict[str, Callable[[DataConfig], RawData | DataBundle]] = {
    "digits": load_digits,
    "digits_rows": lazy("synthetic", "load_digits_rows"),
    "spiral": lazy("synthetic", "load_spiral"),
    "adding": lazy("synthetic", "load_adding"),
    "recall": lazy("synthetic", "load_recall"),
    "mnist": lazy("vision", "load_mnist"),
    "fashion_mnist": lazy("vision", "load_fashion_mnist"),
    "cifar10": lazy("vision", "load_cifar10"),
    "cifar100": lazy("vision", "load_cifar100"),
    "imagefolder": lazy("folder", "load_imagefolder"),
}
DATASET_DOCS: dict[str, str] = {
    "digits": "scikit-learn's 8x8 handwritten digits, 1,797 images, 10 classes (embedded, offline)",
    "digits_rows": "the same digits read row by row: sequences of 8 steps x 8 features (layout sequence)",
    "spiral": "K-class 2-D spiral (points_per_class, noise, num_classes=3) for MLP vs linear experiments",
    "adding": "adding problem: (value, marker) steps, is the sum of the 2 marked values > 1? (length, num_samples)",
    "recall": "delayed recall: name the symbol seen at step 0 after length-1 distractor steps (length, num_classes)",
    "mnist": "MNIST handwritten digits, 60,000 + 10,000 28x28 grayscale, 10 classes (torchvision; root, download)",
    "fashion_mnist": "Fashion-MNIST clothing, 60,000 + 10,000 28x28 grayscale, 10 classes (torchvision)",
    "cifar10": "CIFAR-10, 50,000 + 10,000 32x32 RGB, 10 classes (torchvision; root, download)",
    "cifar100": "CIFAR-100, 50,000 + 10,000 32x32 RGB, 100 fine classes (torchvision; root, download)",
    "imagefolder": "your images in root/<class>/*.png|jpg (image_size, grayscale, val_dir, test_dir, bad_images)",
}


# --------------------------------------------------------------------------- splits
def stratified(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, what: str) -> tuple:
    """Split off `fraction` of (x, y), keeping class proportions; returns (x_keep, y_keep, x_out, y_out)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.{what}={fraction} must be a fraction between 0 and 1 (e.g. 0.15).")
    idx = torch.arange(len(y)).numpy()
    counts = torch.bincount(y)
    strat = y.numpy() if counts[counts > 0].min() >= 2 and round(fraction * len(y)) >= len(counts) else None
    keep, out = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    keep, out = torch.as_tensor(keep), torch.as_tensor(out)
    return x[keep], y[keep], x[out], y[out]


def make_splits(raw: RawData, cfg: DataConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    s = dict(raw.splits)
    if "all" in s:
        xtr, ytr, xte, yte = stratified(*s.pop("all"), cfg.test_fraction, cfg.split_seed, "test_fraction")
        s["train"], s["test"] = (xtr, ytr), (xte, yte)
    if "val" not in s:
        xt, yt, xv, yv = stratified(*s["train"], cfg.val_fraction, cfg.split_seed, "val_fraction")
        s["train"], s["val"] = (xt, yt), (xv, yv)
    if cfg.subset is not None:
        if cfg.subset < 1:
            raise ConfigError(f"data.subset={cfg.subset} must be a positive number of training examples.")
        g = torch.Generator().manual_seed(cfg.split_seed)
        keep = torch.randperm(len(s["train"][1]), generator=g)[: cfg.subset]
        s["train"] = (s["train"][0][keep], s["train"][1][keep])
    return s


# --------------------------------------------------------------------------- normalization
def channel_axes(layout: str, ndim: int) -> tuple[int, ...]:
    """Axes to average over for per-channel statistics of a (N, ...) tensor."""
    if layout == "sequence":  # (N, T, F): per feature
        return tuple(range(ndim - 1))
    return (0, *range(2, ndim))  # (N, C, ...) or (N, F): per channel / feature


def fit_norm(x: torch.Tensor, kind: str, layout: str, cfg: DataConfig | None = None) -> dict:
    """Statistics of the training split only, as plain data."""
    if kind == "none":
        return {"kind": "none"}
    axes = channel_axes(layout, x.dim())
    if kind in ("mean", "standardize"):
        mean = x.mean(dim=axes)
        std = x.std(dim=axes).clamp_min(1e-6) if kind == "standardize" else torch.ones_like(mean)
        return {"kind": kind, "layout": layout, "mean": mean, "std": std}
    from dltool import whitening

    if kind in whitening.KINDS:
        return whitening.fit(x, kind, cfg)
    raise ConfigError(f"data.normalize={kind!r} is not known; valid: none, mean, standardize, "
                      f"{', '.join(whitening.KINDS)}.")


def apply_norm(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """Apply stored statistics to a (N, ...) batch (training, evaluation and prediction alike)."""
    kind = norm.get("kind", "none")
    if kind == "none":
        return x
    if kind in ("mean", "standardize"):
        shape = [1] * x.dim()
        ch = x.dim() - 1 if norm["layout"] == "sequence" else 1
        shape[ch] = -1
        mean, std = norm["mean"].to(x.device).view(shape), norm["std"].to(x.device).view(shape)
        return (x - mean) / std
    from dltool import whitening

    return whitening.apply(x, norm)


def relayout(raw: RawData, layout: str | None) -> RawData:
    """data.layout=signal turns (T, F) sequences into channels-first (F, T) signals for conv1d stacks."""
    if layout is None or layout == raw.layout:
        return raw
    if layout == "signal" and raw.layout == "sequence":
        splits = {k: (x.transpose(1, 2).contiguous(), y) for k, (x, y) in raw.splits.items()}  # (N, F, T)
        return RawData(splits, raw.class_names, "signal")
    raise ConfigError(f"data.layout={layout!r} cannot be applied to {raw.layout} data; valid: null (the data "
                      f"set's own) or signal (only for sequence data sets).")


def build_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataBundle:
    """Load, split (stratified, seeded), normalize with train statistics and place on the device."""
    loaded = lookup(DATASETS, cfg.name, "data.name")(cfg)
    if isinstance(loaded, DataBundle):  # streamed folder data: the loader built its own splits and stats
        return loaded
    raw = relayout(loaded, cfg.layout)
    s = make_splits(raw, cfg)
    norm = fit_norm(s["train"][0], cfg.normalize, raw.layout, cfg)
    dev = torch.device(device) if cfg.on_device else torch.device("cpu")

    def place(pair: tuple[torch.Tensor, torch.Tensor]) -> TensorSplit:
        x, y = pair
        return TensorSplit(apply_norm(x, norm).contiguous().to(dev), y.to(dev))

    train = place(s["train"])
    num_classes = len(raw.class_names)
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise ConfigError(f"data.num_classes={cfg.num_classes} but the data set {cfg.name!r} has {num_classes} "
                          f"classes; remove the key or set it to {num_classes}.")
    layout = "features" if norm.get("kind") == "pca" else raw.layout  # PCA turns images into vectors
    return DataBundle(train, place(s["val"]), place(s["test"]) if "test" in s else None,
                      tuple(train.x.shape[1:]), num_classes, raw.class_names, norm, layout)
