"""`dltool evaluate`: measure a trained model on one split from its run dir (or checkpoint) alone.

The split is rebuilt from the stored data config (same loader, same seeded split) and normalized with
the statistics stored in the checkpoint, so the numbers are those training would have reported.
Metrics are computed here from the confusion matrix; tests compare them with scikit-learn's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dltool.commands.evaluate_tasks import (
    fmt,
    output_files,
    pick_threshold,
    print_task_report,
    task_report,
    write_outputs,
)
from dltool.commands.rundir import inside, write_text
from dltool.console import console, note, table
from dltool.data.build import load
from dltool.data.normalize import apply_norm
from dltool.data.splits import DataBundle, make_splits, relayout
from dltool.data.targets import standardize_targets
from dltool.errors import ConfigError
from dltool.plots import confusion_matrix
from dltool.train.infer import infer, resolve_precision
from dltool.train.losses import LossContext, build_loss
from dltool.train.metrics import probabilities, split_metrics, tune_threshold
from dltool.train.plugged import plugin_metrics
from dltool.train.report import finite_or_null
from dltool.train.restore import Restored, restore

OPTIONS = {"split": "test", "topk": 3, "checkpoint": "best", "batch_size": None, "device": "auto", "threshold": None}


def load_split(r: Restored, name: str) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor | None]:
    """Inputs (normalized with the stored statistics) and targets of one split (regression: standardized with
    the stored statistics, as training saw them), the class / label names and the training targets (for a loss
    weighted from them)."""
    cfg = r.cfg.data
    loaded = load(cfg)
    if isinstance(loaded, DataBundle):  # streamed data, normalized by its loader with train statistics
        x, y, names = streamed_split(loaded, name, r)
        return x, y, names, getattr(loaded.train, "y", None)
    raw = relayout(loaded, cfg.layout)
    splits = make_splits(raw, cfg)
    if name not in splits:
        raise ConfigError(f"split={name!r} is not available for the data set {cfg.name!r}; "
                          f"valid splits: {', '.join(k for k in ('train', 'val', 'test') if k in splits)}.")
    x, y = splits[name]
    outputs = len(raw.class_names) if raw.task == "classification" else int(y.shape[1])
    if outputs != int(r.ckpt["num_classes"]):
        raise ConfigError(f"data.name={cfg.name!r} now has {outputs} classes/targets but checkpoint {r.path} "
                          f"was trained on {r.ckpt['num_classes']}; evaluate it on the data it was trained on.")
    norm_y = r.ckpt.get("target_norm")
    return (apply_norm(x, r.ckpt["norm"]), standardize_targets(y, norm_y),
            list(r.ckpt.get("class_names") or raw.class_names), standardize_targets(splits["train"][1], norm_y))


def streamed_split(bundle: DataBundle, name: str, r: Restored) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All batches of one split of a streamed data set (the same files and seeded split as in training)."""
    if bundle.num_classes != int(r.ckpt["num_classes"]):
        raise ConfigError(f"data.root now has {bundle.num_classes} classes but checkpoint {r.path} was trained on "
                          f"{r.ckpt['num_classes']}; evaluate it on the data it was trained on.")
    xs, ys = zip(*bundle.split(name).batches(256))
    return torch.cat(xs), torch.cat(ys), list(r.ckpt.get("class_names") or bundle.class_names)


def predict_logits(r: Restored, x: torch.Tensor, y: torch.Tensor | None, batch_size: int,
                   train_y: torch.Tensor | None = None) -> tuple:
    """(logits (N, C) float32 on the CPU, mean loss over the split or None), batch by batch as the trainer
    evaluates (the loss over the whole split at once, as validation computes it)."""
    precision = resolve_precision(r.cfg.trainer.precision, r.device)
    batches = ((x[i:i + batch_size], None) for i in range(0, len(x), batch_size))
    task = r.ckpt.get("task", "classification")
    logits = infer(r.model, batches, r.device, precision, keep_logits=True, task=task).logits
    if y is None or logits is None:
        return logits, None
    loss_fn = build_loss(r.cfg.loss, LossContext(task, train_y, int(r.ckpt["num_classes"])))
    with torch.no_grad():
        return logits, float(loss_fn(logits, y))


def per_class(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support per class from a confusion matrix (true rows, predicted columns)."""
    cm = cm.double()
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def metrics(logits: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, Any]:
    """Accuracy, top-k accuracy, confusion matrix, per-class and averaged precision/recall/F1."""
    probs = probabilities("classification", logits)  # (N, C)
    c = probs.shape[1]
    pred = probs.argmax(1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()
    cm = torch.bincount(y * c + pred, minlength=c * c).view(c, c)
    k = max(1, min(int(k), c))
    topk = (probs.topk(k, dim=1).indices == y[:, None]).any(1)
    pc = per_class(cm)
    weights = pc["support"] / pc["support"].sum().clamp_min(1)
    avg = {kind: {m: float(pc[m].mean() if kind == "macro" else (pc[m] * weights).sum())
                  for m in ("precision", "recall", "f1")} for kind in ("macro", "weighted")}
    return {"examples": len(y), "acc": float((pred == y).double().mean()), "topk": k,
            "topk_acc": float(topk.double().mean()), "confusion_matrix": cm.tolist(),
            "per_class": {m: v.tolist() for m, v in pc.items()}, "macro_avg": avg["macro"],
            "weighted_avg": avg["weighted"]}


def output_names(split: str, checkpoint: Path) -> tuple[str, str]:
    """eval.json / confusion_matrix.png for best.pt on test; a suffix for any other split or checkpoint."""
    parts = [p for p in (split if split != "test" else "", checkpoint.stem if checkpoint.stem != "best" else "") if p]
    suffix = "".join(f"_{p}" for p in parts)
    return f"eval{suffix}.json", f"confusion_matrix{suffix}.png"


def run_evaluate(target: str, opts: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Restore, predict the split, compute every metric, write eval*.json and the task's figures."""
    r = restore(target, str(opts["checkpoint"]), str(opts["device"]), data)
    task = r.ckpt.get("task", "classification")
    if task == "classification" and opts.get("threshold") not in (None, "null"):
        raise ConfigError(f"threshold={opts['threshold']} applies to binary and multilabel runs; this run's task is "
                          f"classification (the class with the highest score is the prediction).")
    x, y, names, train_y = load_split(r, str(opts["split"]))
    batch_size = int(opts["batch_size"] or r.cfg.trainer.batch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be at least 1.")
    logits, loss = predict_logits(r, x, y, batch_size, train_y)
    if task != "classification":
        return evaluate_task(r, task, opts, logits, y, loss, names, batch_size)
    m = metrics(logits, y, int(opts["topk"]))
    m.update({k: v for k, v in split_metrics(task, logits, y).items() if k != "acc"})
    m.update({k: float(fn(logits, y)) for k, fn in plugin_metrics(r.cfg.trainer.metrics).items()})  # plug-ins
    json_name, png_name = output_names(str(opts["split"]), r.path)
    result = {"checkpoint": str(r.path), "epoch": r.ckpt.get("epoch"), "split": str(opts["split"]),
              "task": task, "loss": loss, **m, "class_names": names, "files": [json_name, png_name],
              "out_dir": str(r.out_dir)}
    for name in (json_name, png_name, png_name.replace(".png", ".tmp.png")):  # plots write a .tmp.png, then rename
        inside(r.out_dir, r.out_dir / name)
    r.out_dir.mkdir(parents=True, exist_ok=True)
    confusion_matrix(m["confusion_matrix"], names, r.out_dir / png_name,
                     f"{r.cfg.name}: {opts['split']} split, {r.path.name} (accuracy {m['acc']:.2%})")
    write_text(r.out_dir, r.out_dir / json_name, json.dumps(result, indent=2))
    return result


def evaluate_task(r: Restored, task: str, opts: dict[str, Any], logits: torch.Tensor, y: torch.Tensor,
                  loss: float | None, names: list[str], batch_size: int) -> dict[str, Any]:
    """binary / multilabel / regression: metrics at the chosen threshold, per label, predictions and figures."""
    def tune() -> tuple[float, float]:
        xv, yv, _, _ = load_split(r, "val")
        return tune_threshold(task, predict_logits(r, xv, None, batch_size)[0], yv)

    threshold, source = pick_threshold(opts.get("threshold"), r.cfg.trainer.threshold, task, tune) \
        if task != "regression" else (0.5, "")
    rep = task_report(task, logits, y, names, threshold, r.ckpt.get("target_norm"))
    json_name, _ = output_names(str(opts["split"]), r.path)
    suffix = json_name.removeprefix("eval").removesuffix(".json")
    r.out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{r.cfg.name}: {opts['split']} split, {r.path.name}"
    for name in (json_name, *output_files(task, suffix)):  # no write through a link planted in the run dir
        inside(r.out_dir, r.out_dir / name)
        inside(r.out_dir, r.out_dir / name.replace(".png", ".tmp.png"))
    files = write_outputs(task, logits, y, names, r.ckpt.get("target_norm"), r.out_dir, suffix, title)
    result = {"checkpoint": str(r.path), "epoch": r.ckpt.get("epoch"), "split": str(opts["split"]), "task": task,
              "examples": len(y), "loss": loss, "threshold": threshold, "threshold_source": source, **rep,
              "class_names": names, "files": [json_name, *files], "out_dir": str(r.out_dir)}
    write_text(r.out_dir, r.out_dir / json_name, json.dumps(finite_or_null(result), indent=2))
    return result


def print_report(res: dict[str, Any]) -> None:
    """Summary, per-class table with averages, and the confusion matrix as a table."""
    if res.get("task", "classification") != "classification":
        print_task_report(res)
        note(f"wrote {', '.join(res['files'])} to {res['out_dir']}")
        return
    head = [("checkpoint", f"{res['checkpoint']} (epoch {res['epoch']})"), ("split", res["split"]),
            ("examples", res["examples"]), ("loss", f"{res['loss']:.4f}"), ("accuracy", f"{res['acc']:.4f}"),
            (f"top-{res['topk']} accuracy", f"{res['topk_acc']:.4f}"), ("macro-F1", fmt(res.get("macro_f1"))),
            ("balanced accuracy", fmt(res.get("balanced_acc"))), ("AUROC (one-vs-rest)", fmt(res.get("auroc")))]
    console.print(table("[bold]evaluation[/]", ["", ""], head, False))
    pc, names = res["per_class"], res["class_names"]
    rows = [(n, f"{pc['precision'][i]:.4f}", f"{pc['recall'][i]:.4f}", f"{pc['f1'][i]:.4f}", int(pc["support"][i]))
            for i, n in enumerate(names)]
    total = int(sum(pc["support"]))
    for kind in ("macro", "weighted"):
        a = res[f"{kind}_avg"]
        rows.append((f"{kind} avg", f"{a['precision']:.4f}", f"{a['recall']:.4f}", f"{a['f1']:.4f}", total))
    console.print(table("per class", ["class", "precision", "recall", "f1", "support"], rows))
    if len(names) <= 20:
        cm = res["confusion_matrix"]
        console.print(table("confusion matrix (rows: true class, columns: predicted)", ["true \\ pred", *names],
                            [(n, *[v or "." for v in cm[i]]) for i, n in enumerate(names)]))
    note(f"wrote {', '.join(res['files'])} to {res['out_dir']}")
