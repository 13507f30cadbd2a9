"""Figures of `dltool evaluate` for the tasks beyond classification: predicted vs actual and residuals
(regression), ROC and precision-recall curves per label (binary, multi-label)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from dltool.plots import Figure, _save

MAX_PANELS = 6  # targets drawn side by side; more are announced in the title, never dropped silently


def panels(n: int, title: str) -> tuple[Figure, int, str]:
    shown = min(n, MAX_PANELS)
    note = f" (first {shown} of {n} targets)" if n > shown else ""
    fig = Figure(figsize=(4.2 * shown, 4))
    fig.suptitle(title + note)
    return fig, shown, note


def predicted_vs_actual(pred: np.ndarray, true: np.ndarray, names: Sequence[str], path: Path, title: str) -> None:
    """One scatter per target (original units) with the y = x line a perfect model would lie on."""
    fig, shown, _ = panels(pred.shape[1], title)
    for k in range(shown):
        ax = fig.add_subplot(1, shown, k + 1)
        ax.scatter(true[:, k], pred[:, k], s=10, alpha=0.6)
        lo, hi = float(min(true[:, k].min(), pred[:, k].min())), float(max(true[:, k].max(), pred[:, k].max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="y = x")
        ax.set_xlabel(f"actual {names[k]}")
        ax.set_ylabel(f"predicted {names[k]}")
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def residuals(pred: np.ndarray, true: np.ndarray, names: Sequence[str], path: Path, title: str) -> None:
    """Residual (actual - predicted) against the prediction, per target: structure here is what the model missed."""
    fig, shown, _ = panels(pred.shape[1], title)
    for k in range(shown):
        ax = fig.add_subplot(1, shown, k + 1)
        ax.scatter(pred[:, k], true[:, k] - pred[:, k], s=10, alpha=0.6)
        ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(f"predicted {names[k]}")
        ax.set_ylabel("residual (actual - predicted)")
        ax.grid(alpha=0.3)
    _save(fig, path)


def roc_pr(p: np.ndarray, y: np.ndarray, names: Sequence[str], path: Path, title: str) -> None:
    """ROC (left) and precision-recall (right) curves, one line per label that has both values in the split."""
    fig = Figure(figsize=(10, 4.4))
    roc, pr = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    drawn = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    skipped = len(names) - len(drawn)
    fig.suptitle(title + (f" ({skipped} label(s) with one value only in this split not drawn)" if skipped else ""))
    for k in drawn[:20]:
        fpr, tpr, _ = roc_curve(y[:, k], p[:, k])
        prec, rec, _ = precision_recall_curve(y[:, k], p[:, k])
        roc.plot(fpr, tpr, label=f"{names[k]} (AUROC {roc_auc_score(y[:, k], p[:, k]):.3f})")
        pr.plot(rec, prec, label=f"{names[k]} (AP {average_precision_score(y[:, k], p[:, k]):.3f})")
    roc.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for ax, (xl, yl) in ((roc, ("false positive rate", "true positive rate")), (pr, ("recall", "precision"))):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
