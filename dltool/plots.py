"""matplotlib (Agg) figures written to the run dir: learning curves, confusion matrix."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.image

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (after choosing the headless backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402

# held while a figure renders: a sweep draws one job's figures on a background thread while the next job
# redraws its curves.png (dltool/train/deferred.py), and matplotlib's caches are not made for two renderers at once
DRAWING = threading.Lock()


def _save(fig: Figure, path: Path, dpi: int = 110, tight: bool = True) -> None:
    """Write fig atomically; tight=False skips bbox_inches="tight" (a second full draw) for figures laid out by hand."""
    tmp = Path(path).with_suffix(f".tmp{threading.get_ident()}.png")
    with DRAWING:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)
    tmp.replace(path)


def read_png(path: Path):
    """A PNG as an (H, W, 3) float array in [0, 1] (for TensorBoard images)."""
    img = matplotlib.image.imread(str(path))
    return img[..., :3]


# a loss panel whose positive values span more than this ratio gets a log axis (one huge epoch would flatten
# every other one against the x axis)
LOG_SPAN = 100.0


def spans_decades(values: Sequence[float]) -> bool:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > LOG_SPAN


def learning_curves(history: Sequence[dict], path: Path, best_epoch: int | None, monitor: str,
                    unit: str = "epoch", metric: str = "acc", label: str = "accuracy") -> None:
    """curves.png: see curves_figure."""
    _save(curves_figure(history, best_epoch, monitor, unit, metric, label), path, tight=False)


def curves_figure(history: Sequence[dict], best_epoch: int | None, monitor: str, unit: str = "epoch",
                  metric: str = "acc", label: str = "accuracy") -> Figure:
    """Loss (train vs val) and a metric (accuracy, or the task's: R², AUROC, ...; train vs val where both are
    recorded) per epoch, or per optimizer step (unit="step", x = the rows' step); the best point and a
    non-finite loss marked; the loss on a log axis when it spans decades."""
    at = {h["epoch"]: (h.get("step", h["epoch"]) if unit == "step" else h["epoch"]) for h in history}
    xs = [at[h["epoch"]] for h in history]
    bad = next((h["epoch"] for h in history for k in ("train_loss", "val_loss")
                if not math.isfinite(float(h.get(k, 0.0)))), None)
    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.91, wspace=0.22)  # by hand: no second draw
    panels = ((fig.add_subplot(1, 2, 1), "loss", "loss"), (fig.add_subplot(1, 2, 2), metric, label))
    for ax, metric, title in panels:
        every = []
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = [h.get(f"{split}_{metric}", float("nan")) for h in history]
            every += ys
            ax.plot(xs, ys, style, markersize=3, label=split)
        if best_epoch and best_epoch in at:
            ax.axvline(at[best_epoch], color="grey", linestyle="--", linewidth=1,
                       label=f"best ({monitor}) {unit} {at[best_epoch]}")
        if bad is not None:
            ax.axvline(at[bad], color="red", linewidth=2, label=f"loss non-finite at {unit} {at[bad]}")
        log = metric == "loss" and spans_decades(every)
        if log:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        pad = 0.5 if unit == "epoch" else 0.02 * max(1, max(xs) - min(xs))
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
        ax.set_xlabel(unit if unit == "epoch" else "step (optimizer steps)")
        ax.set_ylabel(f"{title} (log scale)" if log else title)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix(cm: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str) -> None:
    """Counts with true classes on rows, predicted on columns."""
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        peak = max(max(r) for r in cm) or 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i][j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i][j] > peak / 2 else "black")
    _save(fig, path)


def loss_curve(losses: Sequence[float], path: Path, threshold: float | None, expected_init: float | None,
               title: str) -> None:
    """Training loss per step (log scale), with the pass threshold and the expected initial loss."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    steps = range(1, len(losses) + 1)
    ax.plot(steps, [v if v > 0 else float("nan") for v in losses], "-", label="training loss")
    if threshold:
        ax.axhline(threshold, color="green", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if expected_init:
        ax.axhline(expected_init, color="grey", linestyle=":", linewidth=1,
                   label=f"expected at init {expected_init:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def lr_range(lrs: Sequence[float], smoothed: Sequence[float], suggested: float, min_lr: float, path: Path,
             title: str) -> None:
    """Smoothed loss against the learning rate (log axis), the lowest-loss lr and the suggestion marked."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(lrs, smoothed, "-", label="smoothed training loss")
    ax.axvline(min_lr, color="grey", linestyle=":", linewidth=1, label=f"lowest loss at {min_lr:.2e}")
    ax.axvline(suggested, color="red", linestyle="--", linewidth=1.2, label=f"suggested lr {suggested:.2e}")
    ax.set_xscale("log")
    finite = [v for v in smoothed if v == v and abs(v) != float("inf")]
    if finite:  # the last steps may shoot up: keep the interesting part in view
        lo, first = min(finite), finite[0]
        ax.set_ylim(lo - 0.05 * abs(first - lo), max(first, lo) + 0.25 * abs(first - lo) + 1e-12)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)


def overlay_curves(histories: dict[str, Sequence[dict]], path: Path) -> None:
    """dltool compare: the runs' loss (train dashed, val solid) and accuracy per epoch on shared axes."""
    fig = Figure(figsize=(11, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.24, top=0.91, wspace=0.22)
    panels = ((fig.add_subplot(1, 2, 1), "loss"), (fig.add_subplot(1, 2, 2), "acc"))
    colors = matplotlib.colormaps["tab10"].colors
    for i, (label, history) in enumerate(histories.items()):
        for ax, metric in panels:
            for split, style in (("train", "--"), ("val", "-")):
                points = [(h["epoch"], h[f"{split}_{metric}"]) for h in history if f"{split}_{metric}" in h]
                if points:
                    ax.plot(*zip(*points), style, color=colors[i % len(colors)], label=f"{label} {split}")
    for ax, metric in panels:
        ax.set_title("loss" if metric == "loss" else "accuracy")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    panels[0][0].legend(loc="upper center", bbox_to_anchor=(1.1, -0.13), ncol=min(4, 2 * len(histories)),
                        fontsize=8, frameon=False)
    _save(fig, path, tight=False)
