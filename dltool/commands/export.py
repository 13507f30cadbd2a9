"""`dltool export`: write a run's best model as ONNX, TorchScript or a torch.export program, and check it.

The file is verified where it is written: it runs (ONNX through onnxruntime, the others loaded back
from disk) on real inputs of the run's data set in batches of 1, 7 and N, and its outputs must equal
PyTorch's within the tolerance. A JSON file beside it says what goes in and what comes out.
"""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from dltool.commands.evaluate import load_split
from dltool.commands.rundir import inside, write_text
from dltool.console import console, note, table
from dltool.data.build import DATASETS
from dltool.data.splits import DataBundle, make_splits, relayout
from dltool.errors import ConfigError
from dltool.models.export import FORMATS, ONNX_OPSETS, WithNormalization, convert, load_runner
from dltool.registry import lookup
from dltool.train.restore import Restored, restore

OPTIONS: dict[str, Any] = {"format": "onnx", "out": "", "opset": 18, "examples": 64, "tolerance": 1e-5,
                           "checkpoint": "best"}
CHECK_SIZES = (1, 7)  # batch sizes checked besides the full batch of real examples: dynamic batch size


def denormalize(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """Undo mean/standardize statistics (the only kinds streamed folder data uses)."""
    kind = norm.get("kind", "none")
    if kind == "none":
        return x
    if kind not in ("mean", "standardize"):
        raise ConfigError(f"normalization {kind!r} of streamed data cannot be undone to get raw inputs.")
    shape = [1] * x.dim()
    shape[x.dim() - 1 if norm["layout"] == "sequence" else 1] = -1
    return x * norm["std"].view(shape) + norm["mean"].view(shape)


def real_inputs(r: Restored, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalized, raw) inputs: the first n examples of the test split (the validation split without one)."""
    cfg = r.cfg.data
    loaded = lookup(DATASETS, cfg.name, "data.name")(cfg)
    if isinstance(loaded, DataBundle):  # streamed folder data: batches come normalized
        split = "test" if loaded.test is not None else "val"
        x = load_split(r, split)[0][:n]
        return x, denormalize(x, r.ckpt["norm"])
    splits = make_splits(relayout(loaded, cfg.layout), cfg)
    raw = splits["test" if "test" in splits else "val"][0][:n].float()
    return normalized(raw, r), raw


def normalized(raw: torch.Tensor, r: Restored) -> torch.Tensor:
    """The stored normalization applied to raw inputs (the same module --with-normalization bakes in)."""
    from_norm = WithNormalization(torch.nn.Identity(), r.ckpt["norm"], raw.dim())
    with torch.no_grad():
        return from_norm(raw)


def out_paths(r: Restored, opts: dict) -> tuple[Path, Path]:
    """(model file, JSON file): RUN_DIR/export/model[_with_norm]<suffix> unless --out names a folder."""
    folder = Path(opts["out"]) if opts["out"] else r.out_dir / "export"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is an existing file; --out names a folder for the model and its JSON.")
    stem = "model_with_norm" if opts["with_normalization"] else "model"
    file = folder / f"{stem}{FORMATS[opts['format']]}"
    base = folder if opts["out"] else r.out_dir
    return inside(base, file), inside(base, file.with_name(file.name + ".json"))


def verify(fmt: str, path: Path, model: torch.nn.Module, x: torch.Tensor, tolerance: float) -> dict:
    """Max |exported - PyTorch| on batches of 1, 7 and all len(x) real inputs, from the file on disk. The
    tolerance holds for outputs of size up to 1 and scales with larger ones (float32 keeps ~7 digits: a
    regression output of 150 in original units differs by ~1e-5 after any reordering of its sums)."""
    run = load_runner(fmt, path)
    sizes = sorted({min(k, len(x)) for k in (*CHECK_SIZES, len(x))})
    diffs, scale = {}, 1.0
    with torch.no_grad():
        for k in sizes:
            want = model(x[:k]).float()  # (k, C)
            got = run(x[:k].contiguous()).float()
            if got.shape != want.shape:
                raise ConfigError(f"the exported model returned shape {tuple(got.shape)} for a batch of {k}, "
                                  f"PyTorch {tuple(want.shape)}: the batch size is not dynamic in this export.")
            diffs[k] = float((got - want).abs().max())
            scale = max(scale, float(want.abs().max()))
    worst = max(diffs.values())
    return {"batch_sizes": sizes, "max_abs_diff": diffs, "worst": worst, "tolerance": tolerance,
            "output_scale": scale, "passed": worst <= tolerance * scale, "outputs": int(want.shape[1])}


def versions(fmt: str) -> dict[str, str]:
    names = ["torch", "dltool"] + (["onnx", "onnxruntime", "onnxscript"] if fmt == "onnx" else [])
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "unknown"
    return out


def normalization_info(norm: dict, in_graph: bool) -> dict:
    """The stored statistics as lists (a whitening matrix only when small), and where they are applied."""
    info: dict[str, Any] = {"kind": norm.get("kind", "none"), "in_graph": in_graph}
    if info["kind"] in ("mean", "standardize"):
        info.update(layout=norm["layout"], mean=norm["mean"].tolist(), std=norm["std"].tolist(),
                    formula="(x - mean) / std per channel" + (" (last axis)" if norm["layout"] == "sequence" else ""))
    elif info["kind"] in ("pca", "zca"):
        reshape = ", reshaped to x's shape" if info["kind"] == "zca" else ""
        info.update(mean=norm["mean"].tolist(), matrix_shape=list(norm["matrix"].shape),
                    formula=f"(x.flatten(1) - mean) @ matrix{reshape}")
        if norm["matrix"].numel() <= 100_000:
            info["matrix"] = norm["matrix"].tolist()
    return info


def output_meaning(r: Restored, with_norm: bool) -> str:
    task = r.ckpt.get("task", "classification")
    if task == "regression":
        return "predicted targets in their original units" if with_norm else \
            "standardized targets: multiply by targets.std and add targets.mean for original units"
    if task in ("binary", "multilabel"):
        return (f"one logit per label (sigmoid for probabilities; a label is positive at probability >= "
                f"{r.cfg.trainer.threshold:g}, the run's trainer.threshold)")
    return "unnormalized class scores (softmax for probabilities)"


def target_info(target_norm: dict | None, with_norm: bool) -> dict | None:
    """Regression: the training targets' mean and std (inside the graph with --with-normalization)."""
    if target_norm is None:
        return None
    return {"in_graph": with_norm, "mean": target_norm["mean"].tolist(), "std": target_norm["std"].tolist(),
            "formula": "original = output * std + mean"}


def describe(r: Restored, opts: dict, path: Path, x: torch.Tensor, check: dict) -> dict:
    """The JSON written beside the model file."""
    with_norm = bool(opts["with_normalization"])
    return {
        "format": opts["format"], "file": path.name, "checkpoint": str(r.path), "epoch": r.ckpt.get("epoch"),
        "input": {"name": "input", "shape": ["batch", *x.shape[1:]], "dtype": "float32",
                  "layout": r.ckpt.get("layout", "image"),
                  "expects": "raw inputs (as the data set's loader gives them)" if with_norm
                  else "inputs normalized with the statistics under normalization"},
        "output": {"name": "logits", "shape": ["batch", check["outputs"]], "task": r.ckpt.get("task", "classification"),
                   "meaning": output_meaning(r, with_norm)},
        "targets": target_info(r.ckpt.get("target_norm"), with_norm),
        "class_names": list(r.ckpt.get("class_names") or []),
        "normalization": normalization_info(r.ckpt.get("norm") or {}, with_norm),
        "opset": int(opts["opset"]) if opts["format"] == "onnx" else None,
        "versions": versions(opts["format"]),
        "verification": check,
    }


def check_export_options(opts: dict[str, Any]) -> None:
    """--tolerance a finite number >= 0; --opset one torch's ONNX exporter really writes (it is recorded as used)."""
    tol = float(opts["tolerance"])
    if not math.isfinite(tol) or tol < 0:
        raise ConfigError(f"--tolerance {opts['tolerance']} is not valid; use a finite number >= 0, e.g. 1e-5.")
    low, high = ONNX_OPSETS
    if opts["format"] == "onnx" and not low <= int(opts["opset"]) <= high:
        raise ConfigError(f"--opset {opts['opset']} is not one torch's ONNX exporter writes; use {low} to {high} "
                          f"(the default is 18).")


def run_export(target: str, opts: dict[str, Any]) -> dict:
    """Restore best.pt, convert, write the file and its JSON, verify the written file; returns the JSON."""
    if opts["format"] not in FORMATS:
        raise ConfigError(f"--format {opts['format']!r} is not known; valid: {', '.join(FORMATS)}.")
    if int(opts["examples"]) < 2:
        raise ConfigError(f"--examples {opts['examples']} must be at least 2 (real inputs to check the export on).")
    check_export_options(opts)
    r = restore(target, str(opts["checkpoint"]), "cpu")
    x_norm, x_raw = real_inputs(r, int(opts["examples"]))
    model, x = r.model, x_norm
    if opts["with_normalization"]:
        model, x = WithNormalization(r.model, r.ckpt["norm"], x_raw.dim(), r.ckpt.get("target_norm")).eval(), x_raw
    data = convert(model, x[:2], opts["format"], int(opts["opset"]))  # batch 2: 1 would fix the batch size
    path, json_path = out_paths(r, opts)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path.parent, path, data)
    check = verify(opts["format"], path, model, x, float(opts["tolerance"]))
    info = describe(r, opts, path, x, check)
    write_text(path.parent, json_path, json.dumps(info, indent=2))
    return {**info, "path": str(path), "json_path": str(json_path), "bytes": len(data)}


def print_export(res: dict) -> None:
    check = res["verification"]
    rows = [("format", res["format"]), ("file", f"{res['path']} ({res['bytes'] / 1024:.1f} KiB)"),
            ("input", f"{res['input']['name']} ({', '.join(map(str, res['input']['shape']))}) float32, "
                      f"{'raw (normalization in the graph)' if res['normalization']['in_graph'] else 'normalized'}"),
            ("output", f"logits ({', '.join(map(str, res['output']['shape']))}): {res['output']['meaning']}")]
    rows += [(f"check, batch of {k}", f"max |diff| {d:.2e}") for k, d in check["max_abs_diff"].items()]
    verdict = "[green]passed[/]" if check["passed"] else "[red]FAILED[/]"
    scale = check.get("output_scale", 1.0)
    bound = f"{check['tolerance']:g}" + (f" x {scale:.3g} (the largest |output|)" if scale > 1 else "")
    rows.append(("verification", f"{verdict}: outputs equal PyTorch's within {bound}" if check["passed"]
                 else f"{verdict}: max |diff| {check['worst']:.2e} > {bound}"))
    console.print(table("[bold]export[/]", ["", ""], rows, False))
    note(f"wrote {res['path']} and {Path(res['json_path']).name}")
