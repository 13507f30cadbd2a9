"""`arrays`: your own NumPy arrays, a `.npz` file or a folder of `.npy` files.

data.path is either FILE.npz holding `x`, `y` (and optionally `x_val`, `y_val`, `x_test`, `y_test`,
`class_names`) or a folder holding `x.npy`, `y.npy` (and `x_val.npy`, `y_val.npy`, `x_test.npy`,
`y_test.npy`, `class_names.txt` with one name a line). Inputs stay float (float32); labels are
integers 0..K-1 or strings (sorted, they become the class names). The layout follows the shape:
(N, F) features, (N, C, H, W) images, (N, T, F) sequences (or data.layout=signal for (N, C, L)).

A folder `.npy` input larger than data.memory_cap_mb is memory-mapped and read batch by batch
(ArraySplit), so resident memory stays about one batch however large the file is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from dltool.config.schema import DataConfig
from dltool.data.normalize import apply_norm, channel_axes
from dltool.data.splits import Batch, DataBundle, RawData, TensorSplit, make_splits
from dltool.data.targets import fit_target_norm, sampler_weights, standardize_targets
from dltool.data.validate import (
    check_examples,
    check_finite,
    check_label_range,
    check_two_classes,
    load_npy,
    load_npz,
    read_text_lines,
)
from dltool.errors import ConfigError
from dltool.tasks import task_of

log = logging.getLogger(__name__)

SUFFIXES = {"all": "", "val": "_val", "test": "_test"}
LAYOUTS = {2: ("features",), 3: ("sequence", "signal"), 4: ("image",)}
NPZ_KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test", "class_names")


def data_path(cfg: DataConfig, what: str) -> Path:
    if not cfg.path:
        raise ConfigError(f"data.path is not set; data={cfg.name} needs data.path=PATH ({what}).")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ConfigError(f"data.path={cfg.path!r} does not exist; give {what}.")
    return path


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str] | None]:
    arrays = load_npz(path)
    extra = sorted(set(arrays) - set(NPZ_KEYS))
    if extra:
        raise ConfigError(f"data.path={str(path)!r} holds arrays {extra} that data=arrays does not read; "
                          f"valid names: {', '.join(NPZ_KEYS)}.")
    names = arrays.pop("class_names", None)
    return arrays, None if names is None else [str(n) for n in names.tolist()]


def read_folder(path: Path, cap_bytes: float) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """x*.npy (memory-mapped above the cap) and y*.npy of a folder, and its class_names.txt if present."""
    arrays = {}
    for suffix in SUFFIXES.values():
        for kind in ("x", "y"):
            f = path / f"{kind}{suffix}.npy"
            if f.is_file():
                big = kind == "x" and f.stat().st_size > cap_bytes
                arrays[f"{kind}{suffix}"] = load_npy(f, mmap=big)
    names_file = path / "class_names.txt"
    names = read_text_lines(names_file, "data.path's class names") if names_file.is_file() else None
    return arrays, names


def encode_targets(ys: dict[str, np.ndarray], names: list[str] | None,
                   task: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The targets of data.task: class numbers (classification), or float32 (N, K) for binary, multilabel and
    regression, checked against the task (one sentence naming the array, its dtype/shape and what is valid)."""
    spec = task_of(task)
    if task == "classification":
        for k, y in ys.items():
            if y.ndim != 1:
                raise ConfigError(f"y{SUFFIXES[k]} has shape {y.shape} but data.task=classification needs "
                                  f"{spec.targets}; for a 0/1 matrix use data.task=multilabel, for several real "
                                  f"targets data.task=regression.")
        return encode_labels(ys, names)
    out = {}
    for k, y in ys.items():
        name = f"y{SUFFIXES[k]}"
        if y.dtype.kind not in "fiub":
            raise ConfigError(f"{name} holds {y.dtype} values but data.task={task} needs {spec.targets}.")
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1) if y.ndim in (1, 2) else None
        if y2 is None or (task == "binary" and y2.shape[1] != 1):
            raise ConfigError(f"{name} has shape {y.shape} but data.task={task} needs {spec.targets}.")
        if not np.isfinite(y2).all():
            row = int(np.argwhere(~np.isfinite(y2))[0][0])
            raise ConfigError(f"{name} row {row} holds {y2[row].tolist()}: targets must be finite numbers "
                              f"(no NaN or inf).")
        if task != "regression" and not np.isin(y2, (0, 1)).all():
            bad = sorted(set(np.unique(y2).tolist()) - {0.0, 1.0})[:5]
            hint = "a real-valued target is data.task=regression" if task == "binary" else "mark each label 0 or 1"
            raise ConfigError(f"{name} holds {bad} but data.task={task} needs {spec.targets}; {hint}.")
        out[k] = torch.from_numpy(y2.astype(np.float32))
    widths = {t.shape[1] for t in out.values()}
    if len(widths) > 1:
        raise ConfigError(f"the y arrays have {sorted(widths)} columns; every split needs the same targets.")
    width = widths.pop()
    default = ["positive"] if task == "binary" else [f"{'label' if task == 'multilabel' else 'target'}{i}"
                                                    for i in range(width)]
    names = names or default
    if len(names) != width:
        what = "targets" if task == "regression" else "labels"
        raise ConfigError(f"class_names has {len(names)} names but y has {width} {what} per example; give one name "
                          f"per column.")
    return out, names


def encode_labels(ys: dict[str, np.ndarray], names: list[str] | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Integer labels 0..K-1 (or strings, sorted into class names) as int64 tensors, one per split."""
    if any(y.dtype.kind in "US" for y in ys.values()):
        names = names or sorted({str(v) for y in ys.values() for v in y.tolist()})
        index = {n: i for i, n in enumerate(names)}
        bad = sorted({str(v) for y in ys.values() for v in y.tolist()} - set(index))
        if bad:
            raise ConfigError(f"labels {bad[:5]} are not in class_names; valid: {', '.join(names)}.")
        return {k: torch.tensor([index[str(v)] for v in y.tolist()], dtype=torch.int64) for k, y in ys.items()}, names
    out = {}
    for k, y in ys.items():
        if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
            raise ConfigError(f"y{SUFFIXES[k]} holds {y.dtype} values that are not class numbers but "
                              f"data.task=classification needs integers 0..K-1 or strings; for real-valued targets "
                              f"set data.task=regression.")
        out[k] = torch.as_tensor(np.asarray(y, dtype=np.int64))
    for k, t in out.items():  # before K names are made: a label of 10**9 is not 10**9 classes
        check_label_range(f"y{SUFFIXES[k]}", t, names)
    top = max(int(t.max()) for t in out.values() if len(t)) + 1
    low = min(int(t.min()) for t in out.values() if len(t))
    names = names or [str(i) for i in range(top)]
    if low < 0 or top > len(names):
        raise ConfigError(f"labels run from {low} to {top - 1} but there are {len(names)} class names; labels must "
                          f"be 0..{len(names) - 1}.")
    return out, names


def check_shapes(xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], layout: str | None) -> str:
    """Every split: as many labels as examples, the same example shape; returns the layout."""
    shape = xs["all"].shape[1:]
    for k, x in xs.items():
        name = f"x{SUFFIXES[k]}"
        if len(x) != len(ys[k]) or ys[k].ndim == 0:
            raise ConfigError(f"{name} has {len(x)} examples but y{SUFFIXES[k]} has shape {ys[k].shape}; give one "
                              f"target per example (shape ({len(x)},), or ({len(x)}, K) for several).")
        if x.shape[1:] != shape:
            raise ConfigError(f"{name} has examples of shape {x.shape[1:]} but x has {shape}; all splits must match.")
        if x.dtype.kind not in "fiub":
            raise ConfigError(f"{name} holds {x.dtype} values; inputs must be numbers.")
    valid = LAYOUTS.get(len(shape) + 1)
    if valid is None:
        raise ConfigError(f"x has shape {xs['all'].shape}; valid: (N, F) features, (N, T, F) sequences, "
                          f"(N, C, L) signals or (N, C, H, W) images.")
    if layout is not None and layout not in valid:
        raise ConfigError(f"data.layout={layout!r} does not fit x of shape {xs['all'].shape}; valid: "
                          f"{', '.join(valid)} (or null).")
    return layout or valid[0]


def load_arrays(cfg: DataConfig) -> RawData | DataBundle:
    path = data_path(cfg, "a .npz file or a folder with x.npy and y.npy")
    if path.is_dir():
        arrays, names = read_folder(path, cfg.memory_cap_mb * 2 ** 20)
    else:
        arrays, names = read_npz(path)
    for k, suffix in SUFFIXES.items():
        if (f"x{suffix}" in arrays) != (f"y{suffix}" in arrays):
            have, missing = (f"x{suffix}", f"y{suffix}") if f"x{suffix}" in arrays else (f"y{suffix}", f"x{suffix}")
            raise ConfigError(f"data.path={cfg.path!r} has {have} but no {missing}; give both or neither.")
    if "x" not in arrays:
        raise ConfigError(f"data.path={cfg.path!r} has no x (and y) arrays; expected x and y (.npz keys or "
                          f".npy files).")
    xs = {k: arrays[f"x{s}"] for k, s in SUFFIXES.items() if f"x{s}" in arrays}
    ys_np = {k: arrays[f"y{s}"] for k, s in SUFFIXES.items() if f"y{s}" in arrays}
    for k, x in xs.items():
        check_examples(f"x{SUFFIXES[k]}", x)
    layout = check_shapes(xs, ys_np, cfg.layout)
    for k, x in xs.items():
        check_finite(f"x{SUFFIXES[k]}", x)
    ys, names = encode_targets(ys_np, names, cfg.task)
    if cfg.task == "classification":  # real-valued and 0/1 label targets were checked by encode_targets
        check_two_classes(f"data.path={cfg.path!r}", list(ys.values()), names)
    main = "train" if "test" in xs else "all"
    if any(isinstance(x, np.memmap) for x in xs.values()):
        return streamed(xs, ys, names, layout, cfg)
    splits = {main if k == "all" else k: (torch.from_numpy(np.asarray(x, dtype=np.float32)), ys[k])
              for k, x in xs.items()}
    return RawData(splits, names, layout, task=cfg.task)


class ArraySplit:
    """A Split reading rows `idx` of a (memory-mapped) array one batch at a time, normalized per batch."""

    def __init__(self, x: np.ndarray, idx: torch.Tensor, y: torch.Tensor, norm: dict | None = None) -> None:
        self.x, self.idx, self.y, self.norm = x, idx, y, norm or {"kind": "none"}
        self.sampler: torch.Tensor | None = None  # data.sampler=balanced: (N,) drawing weights

    def order(self, generator: torch.Generator) -> torch.Tensor:
        return TensorSplit.order(self, generator)  # type: ignore[arg-type]  # the same draws as in memory

    def __len__(self) -> int:
        return len(self.y)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.y) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """The same batches, in the same order, as a TensorSplit of the rows (shuffled when a generator is given)."""
        n = len(self.y)
        order = self.order(generator) if generator is not None else torch.arange(n)
        for i in range(0, n, batch_size):
            pick = order[i:i + batch_size]
            x = torch.from_numpy(np.asarray(self.x[self.idx[pick].numpy()], dtype=np.float32))  # (B, ...)
            yield apply_norm(x, self.norm), self.y[pick]


def streamed(xs: dict[str, np.ndarray], ys: dict[str, torch.Tensor], names: list[str], layout: str,
             cfg: DataConfig) -> DataBundle:
    """Splits over row indices (the same stratified splits as in memory) read batch by batch from the files."""
    if cfg.normalize not in ("none", "mean", "standardize"):
        raise ConfigError(f"data.normalize={cfg.normalize!r} needs the data in memory; x is larger than "
                          f"data.memory_cap_mb={cfg.memory_cap_mb}: use none, mean or standardize, or raise the cap.")
    main = "train" if "test" in xs else "all"
    raw = {main if k == "all" else k: (torch.arange(len(y)), y) for k, y in ys.items()}
    s = make_splits(RawData(raw, names, layout, task=cfg.task), cfg)
    target_norm = fit_target_norm(s["train"][1]) if cfg.task == "regression" else None
    s = {k: (idx, standardize_targets(y, target_norm)) for k, (idx, y) in s.items()}
    source = {"train": xs["all"], "val": xs.get("val", xs["all"]), "test": xs.get("test", xs["all"])}
    train = ArraySplit(source["train"], *s["train"])
    train.sampler = sampler_weights(cfg.sampler, cfg.task, s["train"][1])
    norm = streamed_norm(train, cfg.normalize, layout)
    train.norm = norm
    split = {k: ArraySplit(source[k], *s[k], norm) if k in s else None for k in ("val", "test")}
    log.info("data=arrays: x is larger than data.memory_cap_mb=%s; reading it batch by batch", cfg.memory_cap_mb)
    outputs = len(names) if cfg.task == "classification" else int(s["train"][1].shape[1])
    return DataBundle(train, split["val"], split["test"], tuple(xs["all"].shape[1:]), outputs, names, norm, layout,
                      task=cfg.task, target_norm=target_norm)


def streamed_norm(train: ArraySplit, kind: str, layout: str, chunk: int = 1024) -> dict:
    """Per-channel (per-feature) mean and std of the training rows, accumulated in float64 chunk by chunk."""
    if kind == "none":
        return {"kind": "none"}
    total = sq = None
    count = 0
    for x, _ in train.batches(chunk):
        axes = channel_axes(layout, x.dim())
        s, q = x.double().sum(dim=axes), (x.double() ** 2).sum(dim=axes)
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += x.numel() // s.numel()
    mean = total / count
    std = ((sq / count - mean ** 2).clamp_min(0) * count / max(count - 1, 1)).sqrt().clamp_min(1e-6)
    if kind == "mean":
        std = torch.ones_like(std)
    return {"kind": kind, "layout": layout, "mean": mean.float(), "std": std.float()}
