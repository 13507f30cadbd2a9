"""Every task's metrics over a whole split, from the model's outputs and the targets, as scikit-learn computes them.

Outputs are the raw model outputs (logits; standardized values for regression) gathered over the whole
split (over every rank under DDP), so each metric is the one scikit-learn gives on the same predictions: the
classification ones (every validation) from one confusion matrix and one ranking, the others by scikit-learn's own
functions; tests/test_metrics.py compares both with scikit-learn.
Regression metrics are in the targets' original units (the standardization is inverted first).
"""

from __future__ import annotations

import importlib
import math
import warnings
from typing import Any

import numpy as np
import torch

from dltool.tasks import task_of


def skm() -> Any:
    """sklearn.metrics, imported when a metric is first computed rather than with this module (~1.5 s with scipy):
    `predict` imports the inference path and computes none. importlib at the call site because only
    dltool/cli*.py may hold import statements inside functions (tests/test_structure.py)."""
    return importlib.import_module("sklearn.metrics")


def logit(threshold: float) -> float:
    """The logit at which the sigmoid equals the decision threshold (0 for 0.5)."""
    return math.log(threshold / (1.0 - threshold))


def correct(task: str, out: torch.Tensor, y: torch.Tensor, cut: float = 0.0) -> torch.Tensor:
    """How many examples of a batch are right (on the device, no sync): argmax, or every label past the cut.

    Soft targets (N, C) of MixUp/CutMix: the mass the mixed target puts on the predicted class, i.e.
    lam * [argmax == y_i] + (1 - lam) * [argmax == y_j], so accuracy is measured against the mixed target.
    """
    if task == "classification" and y.dim() == 2 and y.is_floating_point():
        return y.gather(1, out.argmax(dim=1, keepdim=True)).sum()
    if task == "classification":
        if out.shape[1] == 1:  # one logistic output for two classes
            return ((out[:, 0] > cut).long() == y).sum()
        return (out.argmax(dim=1) == y).sum()
    return ((out > cut) == (y > 0.5)).all(dim=1).sum()  # (N, K): every label right (exact match)


def probabilities(task: str, out: torch.Tensor) -> torch.Tensor:
    """classification: (N, C) softmax ([1-p, p] for one logistic output); binary/multilabel: (N, K) sigmoids."""
    if task == "classification" and out.shape[1] == 1:
        p = torch.sigmoid(out[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(out, dim=1) if task == "classification" else torch.sigmoid(out)


def original_units(values: torch.Tensor, target_norm: dict | None) -> torch.Tensor:
    """Standardized regression values (N, K) back in the targets' units."""
    if not target_norm:
        return values
    return values * target_norm["std"].to(values) + target_norm["mean"].to(values)


def split_metrics(task: str, out: torch.Tensor, y: torch.Tensor, threshold: float = 0.5,
                  target_norm: dict | None = None) -> dict[str, float]:
    """The task's metrics (TASKS[task].metrics but the loss) over one whole split; NaN where undefined
    (e.g. AUROC when a class is missing from the split)."""
    task_of(task)
    out, y = out.detach().float().cpu(), y.detach().cpu()
    if not bool(torch.isfinite(out).all()):  # a diverged model: no metric is defined
        return {m: math.nan for m in task_of(task).metrics if m != "loss"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined precision etc. are reported as 0 / NaN, not warned about
        if task == "regression":
            return regression(original_units(out, target_norm).numpy(), original_units(y.float(), target_norm).numpy())
        p = probabilities(task, out).numpy()
        if task == "classification":
            return classification(p, y.numpy())
        return labels(p, y.numpy().astype(int), threshold, task)


def regression(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    return {"mae": float(skm().mean_absolute_error(true, pred)),
            "rmse": float(np.sqrt(skm().mean_squared_error(true, pred))),
            "r2": float(skm().r2_score(true, pred)) if len(true) > 1 else math.nan}


def classification(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """accuracy, macro-F1, balanced accuracy and one-vs-rest AUROC of (N, C) probabilities, as scikit-learn defines
    them (accuracy_score; f1_score(labels=range(C), average="macro", zero_division=0); balanced_accuracy_score;
    roc_auc_score(multi_class="ovr"), or of p[:, 1] for two classes), from one confusion matrix and one ranking.

    Computed every validation: scikit-learn's four calls validate their inputs and build a ROC curve per class
    (19 ms on the 270 validation digits; this: about 1 ms). tests/test_metrics.py compares them with scikit-learn.
    AUROC is the Mann-Whitney statistic, the trapezoid area of the ROC curve: (rank sum of the class's own
    examples - n(n+1)/2) / (n * (N - n)), ties at their average rank (scipy's rankdata)."""
    n, c = p.shape
    pred = p.argmax(axis=1)
    cm = np.bincount(y * c + pred, minlength=c * c).reshape(c, c).astype(np.float64)
    tp, true, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    both = true + predicted  # 2 tp + fp + fn: F1 = 2 tp / (2 tp + fp + fn), 0 where the class is nowhere
    out = {"acc": float(tp.sum() / n), "macro_f1": float(np.mean(np.divide(2 * tp, both, out=np.zeros(c),
                                                                             where=both > 0))),
           "balanced_acc": float(np.mean(tp[true > 0] / true[true > 0])), "auroc": math.nan}
    if (true > 0).all():  # one-vs-rest AUROC needs every class among the targets
        cols = p[:, 1:] if c == 2 else p
        ranks = rankdata(cols, axis=0)  # (N, C') average ranks per column
        own = (y[:, None] == np.arange(c - cols.shape[1], c)).astype(np.float64)
        k = own.sum(axis=0)
        out["auroc"] = float(np.mean(((ranks * own).sum(axis=0) - k * (k + 1) / 2) / (k * (n - k))))
    return out


def rankdata(a: np.ndarray, axis: int) -> np.ndarray:
    """scipy.stats.rankdata (ties share their average rank), imported on first use like sklearn.metrics."""
    return importlib.import_module("scipy.stats").rankdata(a, axis=axis)


def auc_per_label(fn, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """fn (roc_auc_score, average_precision_score) for each label that has both values among the targets."""
    return np.array([fn(y[:, k], p[:, k]) if 0 < y[:, k].sum() < len(y) else math.nan for k in range(y.shape[1])])


def labels(p: np.ndarray, y: np.ndarray, threshold: float, task: str) -> dict[str, float]:
    """binary (K=1) and multi-label (K labels) metrics at the decision threshold; AUROC/AP need no threshold."""
    pred = (p >= threshold).astype(int)
    auroc, ap = auc_per_label(skm().roc_auc_score, y, p), auc_per_label(skm().average_precision_score, y, p)
    if task == "binary":
        t, q = y[:, 0], pred[:, 0]
        return {"acc": float(skm().accuracy_score(t, q)),
                "precision": float(skm().precision_score(t, q, zero_division=0)),
                "recall": float(skm().recall_score(t, q, zero_division=0)),
                "f1": float(skm().f1_score(t, q, zero_division=0)), "auroc": float(auroc[0]), "ap": float(ap[0])}
    return {"acc": float(skm().accuracy_score(y, pred)),
            "micro_f1": float(skm().f1_score(y, pred, average="micro", zero_division=0)),
            "macro_f1": float(skm().f1_score(y, pred, average="macro", zero_division=0)),
            "auroc": nanmean(auroc), "ap": nanmean(ap)}


def nanmean(a: np.ndarray) -> float:
    """The mean over the labels where the metric is defined (NaN when it is defined for none)."""
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def per_label(task: str, out: torch.Tensor, y: torch.Tensor, names: list[str], threshold: float = 0.5,
              target_norm: dict | None = None) -> list[dict]:
    """One row per label (binary/multi-label) or per target (regression) for `dltool evaluate`'s table."""
    out, y = out.detach().float().cpu(), y.detach().cpu()
    rows = []
    if task == "regression":
        pred, true = original_units(out, target_norm).numpy(), original_units(y.float(), target_norm).numpy()
        for k, name in enumerate(names):
            rows.append({"target": name, **regression(pred[:, k:k + 1], true[:, k:k + 1])})
        return rows
    p, t = probabilities(task, out).numpy(), y.numpy().astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, name in enumerate(names):
            m = labels(p[:, k:k + 1], t[:, k:k + 1], threshold, "binary")
            rows.append({"label": name, "support": int(t[:, k].sum()), **m})
    return rows


MAX_CANDIDATES = 200  # thresholds tried by tune_threshold


def tune_threshold(task: str, out: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The decision threshold with the best F1 (micro-F1 for multi-label) on these outputs: (threshold, F1)."""
    p, t = probabilities(task, out.detach().float().cpu()).numpy(), y.detach().cpu().numpy().astype(int)
    candidates = np.unique(np.round(p.ravel(), 4))
    if len(candidates) > MAX_CANDIDATES:  # a large split: its quantiles (one F1 per candidate is the cost)
        candidates = np.unique(np.quantile(candidates, np.linspace(0, 1, MAX_CANDIDATES)))
    best = (0.5, -1.0)
    for c in candidates[(candidates > 0) & (candidates < 1)]:
        f1 = float(skm().f1_score(t, (p >= c).astype(int), average="micro" if task == "multilabel" else "binary",
                                zero_division=0))
        if f1 > best[1]:
            best = (float(c), f1)
    return best
