"""`dltool predict`: classify image files, saved tensors or rows of a CSV with a trained run.

Inputs are brought to the raw form the data set's loader produces (images: C x H x W floats in [0, 1],
resized to the training size, grayscale or RGB to match the channels), then the normalization stored in
the checkpoint is applied, exactly as for training data. Tensors (.npy, .pt) must already be raw inputs
of the training shape, one example (C, H, W) or a batch (N, C, H, W).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dltool.console import console, note, table
from dltool.data.datasets.table import read_feature_rows
from dltool.data.normalize import apply_norm
from dltool.data.validate import open_image
from dltool.errors import ConfigError
from dltool.train.infer import infer, resolve_precision
from dltool.train.metrics import original_units, probabilities
from dltool.train.restore import Restored, restore

OPTIONS = {"topk": 3, "checkpoint": "best", "device": "auto", "invert": False, "batch_size": 256}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TENSOR_SUFFIXES = (".npy", ".pt")


def raw_shape(ckpt: dict) -> tuple[int, ...]:
    """The shape of one raw example before normalization (PCA turns images into vectors)."""
    norm = ckpt.get("norm") or {}
    return tuple(norm["shape"]) if "shape" in norm else tuple(ckpt["input_shape"])


def read_image(path: Path, shape: tuple[int, ...], invert: bool) -> torch.Tensor:
    """An image file as a (1, C, H, W) float tensor in [0, 1], resized and converted to the training form."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(f"{path}: image files need a model trained on 1- or 3-channel images; this run's "
                          f"inputs are {'x'.join(map(str, shape))} (give a .npy or .pt tensor instead).")
    c, h, w = shape
    img = open_image(path, "L" if c == 1 else "RGB")  # decoded in full; truncated files and bombs refused
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    x = torch.from_numpy(arr.copy())
    x = x[None] if c == 1 else x.permute(2, 0, 1)  # (C, H, W)
    return (1.0 - x if invert else x)[None]


def read_tensor(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A .npy / .pt file holding one raw example of `shape` or a batch (N, *shape)."""
    try:
        if path.suffix == ".npy":
            t = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as ex:  # noqa: BLE001 - numpy and torch raise many types for a damaged file
        raise ConfigError(f"cannot read tensor file {path} ({type(ex).__name__}).") from None
    if not isinstance(t, torch.Tensor):
        raise ConfigError(f"{path} holds a {type(t).__name__}, not a tensor; save one with torch.save(tensor, path).")
    if tuple(t.shape) == shape:
        t = t[None]
    if tuple(t.shape[1:]) != shape:
        raise ConfigError(f"{path} has shape {'x'.join(map(str, t.shape))}; this model takes "
                          f"{'x'.join(map(str, shape))} per example (or a batch Nx{'x'.join(map(str, shape))}).")
    if len(t) == 0:
        raise ConfigError(f"{path} holds no examples (shape {'x'.join(map(str, t.shape))}); give at least one.")
    bad = ~torch.isfinite(t.float()).reshape(len(t), -1).all(dim=1)
    if bad.any():
        raise ConfigError(f"{path} holds NaN or infinite values (example {int(bad.nonzero()[0])}); a prediction "
                          f"of such an input means nothing, so clean the input first.")
    return t.float()


def read_csv(path: Path, columns: list[str] | None) -> torch.Tensor:
    """Rows of a CSV: the training feature columns of a model trained with data=csv."""
    if not columns:
        raise ConfigError(f"input {path}: CSV rows need a model trained with data=csv (this run's checkpoint has "
                          f"no feature columns); give images or tensor files (.npy, .pt).")
    return read_feature_rows(path, columns)


def read_inputs(paths: list[str], shape: tuple[int, ...], invert: bool,
                columns: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """All inputs stacked as raw (N, *shape), with one label per example."""
    xs, labels = [], []
    for p in map(Path, paths):
        if not p.is_file():
            raise ConfigError(f"input {p} does not exist.")
        suffix = p.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            x = read_image(p, shape, invert)
        elif suffix in TENSOR_SUFFIXES:
            x = read_tensor(p, shape)
        elif suffix == ".csv":
            x = read_csv(p, columns)
        else:
            raise ConfigError(f"input {p}: unknown file type {suffix or '(none)'}; give an image "
                              f"({', '.join(IMAGE_SUFFIXES)}), a tensor file (.npy, .pt) or rows of a .csv.")
        xs.append(x)
        labels += [str(p)] if len(x) == 1 and suffix != ".csv" else [f"{p}[{i}]" for i in range(len(x))]
    return torch.cat(xs), labels


def outputs(r: Restored, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's raw outputs (N, C) for raw inputs x, normalized as in training, under the training precision."""
    precision = resolve_precision(r.cfg.trainer.precision, r.device)
    batches = ((apply_norm(x[i:i + batch_size], r.ckpt["norm"]), None) for i in range(0, len(x), batch_size))
    return infer(r.model, batches, r.device, precision, keep_logits=True).logits


def run_predict(target: str, inputs: list[str], opts: dict[str, Any], data: dict | None = None) -> dict[str, Any]:
    """classification: the top-k classes with probabilities; binary/multilabel: each label's probability and the
    labels at or above the run's threshold; regression: the predicted values in the targets' original units."""
    r = restore(target, str(opts["checkpoint"]), str(opts["device"]), data)
    x, labels = read_inputs(inputs, raw_shape(r.ckpt), bool(opts["invert"]), r.ckpt.get("feature_names"))
    return predictions(r, x, labels, opts)


def predictions(r: Restored, x: torch.Tensor, labels: list[str], opts: dict[str, Any]) -> dict[str, Any]:
    """What `dltool predict` prints, for raw inputs x (N, ...) of a restored run (also the API's run.predict)."""
    out = outputs(r, x, max(1, int(opts["batch_size"])))
    task = r.ckpt.get("task", "classification")
    names = [str(n) for n in (r.ckpt.get("class_names") or range(int(r.ckpt["num_classes"])))]
    res = {"checkpoint": str(r.path), "labels": labels, "task": task, "names": names}
    if task == "regression":
        return {**res, "values": original_units(out, r.ckpt.get("target_norm")).tolist()}
    p = probabilities(task, out)  # (N, C) or (N, K)
    if task != "classification":
        t = float(r.cfg.trainer.threshold)
        return {**res, "threshold": t, "probabilities": p.tolist(),
                "positive": [[n for n, v in zip(names, row) if v >= t] for row in p.tolist()]}
    values, indices = p.topk(max(1, min(int(opts["topk"]), p.shape[1])), dim=1)
    top = [[(names[j], float(q)) for q, j in zip(vs.tolist(), ix.tolist())] for vs, ix in zip(values, indices)]
    return {**res, "top": top}


def print_predictions(res: dict[str, Any]) -> None:
    note(f"checkpoint: {res['checkpoint']}")
    task, names = res.get("task", "classification"), res.get("names", [])
    if task == "regression":
        console.print(table("predictions (original units)", ["input", *names],
                            [(label, *[f"{v:.6g}" for v in row]) for label, row in zip(res["labels"], res["values"])]))
        return
    if task != "classification":
        rows = [(label, ", ".join(pos) or "(none)", *[f"{q:6.1%}" for q in row])
                for label, pos, row in zip(res["labels"], res["positive"], res["probabilities"])]
        console.print(table(f"predictions (labels with probability >= {res['threshold']:g}; every label's "
                            f"probability)", ["input", "labels", *names], rows))
        return
    k = len(res["top"][0]) if res["top"] else 0
    ordinal = ["1st", "2nd", "3rd"] + [f"{i}th" for i in range(4, k + 1)]
    rows = [(label, *[f"{name}  {p:6.1%}" for name, p in top]) for label, top in zip(res["labels"], res["top"])]
    console.print(table("predictions (class, probability)", ["input", *ordinal[:k]], rows))
