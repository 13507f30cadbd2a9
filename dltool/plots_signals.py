"""Figures of the per-layer training signals: update ratios, histograms, first-layer filters (matplotlib, Agg)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from dltool.plots import _save

log = logging.getLogger(__name__)
GUIDE = 1e-3  # the textbook update/weight ratio
MAX_TILES = 64  # filters drawn in filters.png (the title says when there are more)


def update_ratios(rows: Sequence[dict], path: Path) -> bool:
    """Update/weight ratio per weight tensor over epochs, log axis, with the 1e-3 guide. False: nothing to draw."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        v = r.get("update_ratio")
        if r.get("kind") == "weight" and v is not None and v == v and v > 0:
            xs, ys = series.setdefault(r["name"], ([], []))
            xs.append(int(r["epoch"]))
            ys.append(float(v))
    if not series:
        nothing(path, "update / weight ratio per layer", "no weight changed in any recorded epoch: every gradient was "
                "0 or non-finite\n(a dead net, or every layer frozen); see `dltool diagnose RUN_DIR`")
        return False
    fig = Figure(figsize=(8.5, 4))
    fig.subplots_adjust(left=0.1, right=0.7, bottom=0.13, top=0.9)  # by hand: bbox_inches="tight" draws twice
    ax = fig.add_subplot(1, 1, 1)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, "-o", markersize=3, label=name)
    ax.axhline(GUIDE, color="green", linestyle="--", linewidth=1, label="1e-3 (rule of thumb)")
    ax.axhspan(1e-2, max(1e-1, max(max(ys) for _, ys in series.values()) * 2), color="red", alpha=0.06)
    ax.axhspan(min(1e-6, min(min(ys) for _, ys in series.values()) / 2), 1e-5, color="orange", alpha=0.08)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))  # plain text: mathtext 10^k costs ~0.5 s
    ax.yaxis.set_minor_locator(NullLocator())  # decades only: ~200 minor tick artists cost more than the plot
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("||dw|| / ||w|| per step")
    ax.set_title("update / weight ratio per layer (red: too high, orange: too low)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: no search for a free corner
    _save(fig, path, tight=False)
    return True


def nothing(path: Path, title: str, why: str) -> Figure:
    """A figure that says why there is nothing to draw (a missing file would say nothing); logged too."""
    log.warning("%s: %s", path.name, why.replace("\n", " "))
    fig = Figure(figsize=(8.5, 2.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    _save(fig, path, tight=False)
    return fig


def _ridge(ax, row: int, first: np.ndarray | None, last: np.ndarray | None, labels: tuple[str, str]) -> None:
    """One layer's histograms (first vs last epoch) in band `row` of a stacked column: x scaled to the layer's
    own min..max (printed at the right, 0 marked), heights sqrt(count) scaled to the band."""
    vals = [v[np.isfinite(v)] for v in (first, last) if v is not None and v.size]
    both = np.concatenate(vals) if vals else np.zeros(0)
    if not both.size:
        return
    lo, hi = float(both.min()), float(both.max())
    hi = hi if hi > lo else lo + 1e-12
    edges = np.linspace(0.0, 1.0, 41)
    base = -row  # rows go down from 0
    for v, label, color in ((first, labels[0], "tab:blue"), (last, labels[1], "tab:orange")):
        if v is not None and v.size:  # one filled step artist per histogram, not 40 bar patches
            counts, _ = np.histogram(v[np.isfinite(v)], bins=40, range=(lo, hi))
            height = np.sqrt(counts / max(counts.max(), 1))  # sqrt: ReLU's spike at 0 leaves the tail visible
            ax.stairs(base + 0.85 * height, edges, baseline=base, fill=True, alpha=0.5,
                      color=color, label=label if row == 0 else None)
    if lo < 0 < hi:
        ax.plot([-lo / (hi - lo)] * 2, [base, base + 0.9], color="black", linewidth=0.6)
    ax.text(1.01, base + 0.3, f"{lo:.2g} .. {hi:.2g}", fontsize=7, transform=ax.get_yaxis_transform())


def histograms(first: Mapping[str, Mapping[str, np.ndarray]], last: Mapping[str, Mapping[str, np.ndarray]],
               first_epoch: int, last_epoch: int, path: Path) -> bool:
    """Activations (left) and weight gradients (right) per layer, first vs last epoch overlaid, one row per layer.

    Each column is one stacked (ridgeline) axes, so the cost does not grow by two subplots per layer (a 20-layer
    net drew for seconds); each row is scaled to its layer's own range, written at its right, with 0 marked.
    """
    acts = list(dict.fromkeys([*first.get("acts", {}), *last.get("acts", {})]))
    grads = [n for n in dict.fromkeys([*first.get("grads", {}), *last.get("grads", {})]) if n.endswith("weight")]
    n = max(len(acts), len(grads))
    if n == 0:
        return False
    fig = Figure(figsize=(10, 0.6 * n + 1.3))
    fig.subplots_adjust(left=0.13, right=0.87, wspace=0.62, bottom=0.5 / fig.get_figheight(),
                        top=1 - 0.8 / fig.get_figheight())
    labels = (f"epoch {first_epoch}", f"epoch {last_epoch}")
    for col, (kind, names, what) in enumerate((("acts", acts, "activations"), ("grads", grads, "weight gradients"))):
        ax = fig.add_subplot(1, 2, col + 1)
        for i, name in enumerate(names):
            _ridge(ax, i, first.get(kind, {}).get(name), last.get(kind, {}).get(name), labels)
        ax.set_yticks([-i + 0.3 for i in range(len(names))], names, fontsize=7)
        ax.set_xticks([])
        ax.set_ylim(-n + 0.9, 1.0)
        ax.set_xlim(0, 1)
        ax.set_title(what, fontsize=9)
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]][:2]
    fig.legend(handles, labels[:len(handles)], loc="upper right", fontsize=7, ncol=2, frameon=False)
    fig.suptitle("histograms per layer, first vs last epoch (each row: its own range, sqrt(count); | marks 0)",
                 fontsize=10, x=0.4)
    _save(fig, path, dpi=80, tight=False)
    return True


def filter_grid(weight: np.ndarray, input_shape: Sequence[int]) -> np.ndarray | None:
    """First-layer weights as one image grid (H, W, 3) in [0, 1], or None when they are not image-shaped.

    conv (F, C, kh, kw): one tile per filter; fc (units, C*H*W) on image input: each unit's weights reshaped
    to the input image (the linear-classifier templates). Each tile is scaled to its own min..max.
    """
    w = np.nan_to_num(np.asarray(weight, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if w.ndim == 4:
        tiles = w
    elif w.ndim == 2 and len(input_shape) == 3 and w.shape[1] == int(np.prod(input_shape)):
        tiles = w.reshape(w.shape[0], *input_shape)
    else:
        return None
    tiles = tiles[:MAX_TILES]
    f, c, h, wd = tiles.shape
    if c not in (1, 3):
        tiles = tiles[:, :1]  # show the first input channel of each filter
        c = 1
    lo = tiles.reshape(f, -1).min(1)[:, None, None, None]
    hi = tiles.reshape(f, -1).max(1)[:, None, None, None]
    tiles = (tiles - lo) / np.maximum(hi - lo, 1e-12)
    cols = math.ceil(math.sqrt(f))
    rows = math.ceil(f / cols)
    grid = np.ones((rows * (h + 1) + 1, cols * (wd + 1) + 1, 3), dtype=np.float32)
    for i in range(f):
        r, q = divmod(i, cols)
        tile = np.transpose(tiles[i], (1, 2, 0))  # (h, w, c)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (wd + 1):1 + q * (wd + 1) + wd] = \
            np.repeat(tile, 3, axis=2) if c == 1 else tile
    return grid


def filters(grid: np.ndarray, title: str, path: Path) -> Figure:
    fig = Figure(figsize=(5, 5 * grid.shape[0] / max(grid.shape[1], 1) + 0.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    _save(fig, path)
    return fig
