"""What a loader returns (RawData), what training reads (DataBundle of Splits), and stratified splits.

For in-memory data a split is two tensors on the training device, so an epoch is a permutation
and slices: no per-sample Python.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import torch

from dltool.config.schema import DataConfig
from dltool.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


def model_selection() -> Any:
    """scikit-learn's model_selection, imported on the first split rather than with this module.

    Importing it costs ~2 s (scikit-learn's base with scipy); `predict` and every module that only needs the
    types below (RawData, TensorSplit, DataBundle) must not pay for it. importlib at the call site because only
    dltool/cli*.py may hold import statements inside functions (tests/test_structure.py).
    """
    return importlib.import_module("sklearn.model_selection")


@dataclass
class RawData:
    """What a loader returns: float inputs (N, ...) and targets per available split: int64 class numbers (N,)
    for classification, float32 (N, K) for binary (K=1), multi-label (0/1 per label) and regression."""

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "all", or "train"/"test" (and maybe "val")
    class_names: list[str]  # classification: the classes; otherwise one name per label / target (K)
    layout: str = "image"  # image (C,H,W) | features (F,) | sequence (T,F) | signal (C,L)
    feature_names: list[str] | None = None  # CSV columns
    task: str = "classification"  # classification | binary | multilabel | regression (dltool.tasks)


class Split(Protocol):
    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]: ...
    def num_batches(self, batch_size: int) -> int: ...
    def __len__(self) -> int: ...


@dataclass
class TensorSplit:
    """A split held as two tensors (already normalized, already on the device)."""

    x: torch.Tensor  # (N, ...)
    y: torch.Tensor  # (N,) class numbers, or (N, K) float targets
    sampler: torch.Tensor | None = None  # data.sampler=balanced: (N,) drawing weights on the CPU

    def __len__(self) -> int:
        return len(self.y)

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """One epoch's example order: a permutation, or as many weighted draws (with replacement) as examples."""
        if self.sampler is None:
            return torch.randperm(len(self.y), generator=generator)
        return torch.multinomial(self.sampler, len(self.y), replacement=True, generator=generator)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.y) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Shuffled when a generator is given (training), in order otherwise."""
        n = len(self.y)
        if generator is None:
            for i in range(0, n, batch_size):
                yield self.x[i:i + batch_size], self.y[i:i + batch_size]
            return
        order = self.order(generator).to(self.x.device, non_blocking=True)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx]


@dataclass
class DataBundle:
    train: Split
    val: Split | None  # None with data.val_fraction=0
    test: Split | None
    input_shape: tuple[int, ...]
    num_classes: int  # the model's output units: classes, labels (binary: 1) or regression targets
    class_names: list[str]
    norm: dict = field(default_factory=dict)  # plain data: kind + tensors, stored in checkpoints
    layout: str = "image"
    feature_names: list[str] | None = None  # CSV columns, so predict can read rows of a CSV
    task: str = "classification"
    target_norm: dict | None = None  # regression: {"mean": (K,), "std": (K,)} of the training targets

    def split(self, name: str) -> Split:
        s = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if s is None:
            have = [k for k in ("train", "val", "test") if getattr(self, k) is not None]
            raise ConfigError(f"split={name!r} is not available for this data set; valid splits: {', '.join(have)}.")
        return s


def strata(y: torch.Tensor) -> torch.Tensor | None:
    """What a split keeps the proportions of: the class (classification), the 0/1 label of a binary task;
    None (a plain shuffled split) for multi-label and regression targets."""
    if y.dim() == 1:
        return y
    if y.shape[1] == 1 and bool(((y == 0) | (y == 1)).all()):
        return y[:, 0].long()
    return None


def stratified(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, what: str,
               task: str = "classification") -> tuple:
    """Split off `fraction` of (x, y), keeping class proportions; returns (x_keep, y_keep, x_out, y_out)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.{what}={fraction} must be a fraction from 0 (no such split) up to below 1 "
                          f"(e.g. 0.15).")
    idx = torch.arange(len(y)).numpy()
    labels = strata(y) if task in ("classification", "binary") else None
    counts = torch.bincount(labels) if labels is not None else torch.ones(1)
    strat = labels.numpy() if labels is not None and counts[counts > 0].min() >= 2 \
        and round(fraction * len(y)) >= len(counts) else None
    keep, out = model_selection().train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    keep, out = torch.as_tensor(keep), torch.as_tensor(out)
    return x[keep], y[keep], x[out], y[out]


def check_folds(folds: int | None, fold: int | None) -> None:
    if folds is None:
        if fold is not None:
            raise ConfigError(f"data.fold={fold} needs data.folds (the number of cross-validation folds, e.g. 5).")
        return
    if folds < 2:
        raise ConfigError(f"data.folds={folds} must be at least 2 (or null for one train/val split).")
    if fold is None or not 1 <= fold <= folds:
        raise ConfigError(f"data.fold={fold} must be one of 1..{folds} (the fold used for validation); "
                          f"`dltool cross-validate data.folds={folds}` trains all of them.")


def kfold(x: torch.Tensor, y: torch.Tensor, folds: int, fold: int, seed: int, task: str = "classification") -> tuple:
    """Fold `fold` (1-based) of a shuffled, seeded K-fold split, stratified for classes and binary labels
    (plain K-fold for multi-label and regression targets): (x_train, y_train, x_val, y_val)."""
    if len(y) < folds:
        raise ConfigError(f"data.folds={folds} but only {len(y)} training + validation examples.")
    labels = strata(y) if task in ("classification", "binary") else None
    counts = torch.bincount(labels) if labels is not None else torch.zeros(1)
    stratify = labels is not None and counts[counts > 0].min() >= folds  # every class in every fold, if it can
    ms = model_selection()
    splitter = (ms.StratifiedKFold if stratify else ms.KFold)(n_splits=folds, shuffle=True, random_state=seed)
    groups = labels.numpy() if labels is not None else None
    train, val = list(splitter.split(torch.zeros(len(y)).numpy(), groups))[fold - 1]
    train, val = torch.as_tensor(train), torch.as_tensor(val)
    return x[train], y[train], x[val], y[val]


def make_splits(raw: RawData, cfg: DataConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train/val/test per the config: the data set's own splits, else stratified fractions (or K folds).

    A fraction of 0 leaves that split out (all data is trained on).
    """
    s = dict(raw.splits)
    check_folds(cfg.folds, cfg.fold)
    if "all" in s and cfg.test_fraction == 0:
        s["train"] = s.pop("all")
    elif "all" in s:
        xtr, ytr, xte, yte = stratified(*s.pop("all"), cfg.test_fraction, cfg.split_seed, "test_fraction", raw.task)
        s["train"], s["test"] = (xtr, ytr), (xte, yte)
    if cfg.folds is not None:  # train + val pooled, then fold `fold` validates; the test split stays as it is
        pool = [s.pop("train"), *([s.pop("val")] if "val" in s else [])]
        x, y = torch.cat([p[0] for p in pool]), torch.cat([p[1] for p in pool])
        xt, yt, xv, yv = kfold(x, y, cfg.folds, cfg.fold, cfg.split_seed, raw.task)
        s["train"], s["val"] = (xt, yt), (xv, yv)
    if "val" not in s and cfg.val_fraction != 0:
        xt, yt, xv, yv = stratified(*s["train"], cfg.val_fraction, cfg.split_seed, "val_fraction", raw.task)
        s["train"], s["val"] = (xt, yt), (xv, yv)
    if cfg.subset is not None:
        if cfg.subset < 1:
            raise ConfigError(f"data.subset={cfg.subset} must be a positive number of training examples.")
        g = torch.Generator().manual_seed(cfg.split_seed)
        keep = torch.randperm(len(s["train"][1]), generator=g)[: cfg.subset]
        s["train"] = (s["train"][0][keep], s["train"][1][keep])
    return s


def relayout(raw: RawData, layout: str | None) -> RawData:
    """data.layout=signal turns (T, F) sequences into channels-first (F, T) signals for conv1d stacks."""
    if layout is None or layout == raw.layout:
        return raw
    if layout == "signal" and raw.layout == "sequence":
        splits = {k: (x.transpose(1, 2).contiguous(), y) for k, (x, y) in raw.splits.items()}  # (N, F, T)
        return RawData(splits, raw.class_names, "signal", raw.feature_names, raw.task)
    raise ConfigError(f"data.layout={layout!r} cannot be applied to {raw.layout} data; valid: null (the data "
                      f"set's own) or signal (only for sequence data sets).")
