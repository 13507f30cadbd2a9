"""Figures of the per-layer training signals: update ratios, histograms, first-layer filters (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dltool.plots import _save

GUIDE = 1e-3  # the textbook update/weight ratio


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
        return False
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, "-o", markersize=3, label=name)
    ax.axhline(GUIDE, color="green", linestyle="--", linewidth=1, label="1e-3 (rule of thumb)")
    ax.axhspan(1e-2, max(1e-1, max(max(ys) for _, ys in series.values()) * 2), color="red", alpha=0.06)
    ax.axhspan(min(1e-6, min(min(ys) for _, ys in series.values()) / 2), 1e-5, color="orange", alpha=0.08)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("||dw|| / ||w|| per step")
    ax.set_title("update / weight ratio per layer (red: too high, orange: too low)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
    return True


def _hist(ax, first: np.ndarray | None, last: np.ndarray | None, first_label: str, last_label: str) -> None:
    vals = [v for v in (first, last) if v is not None and v.size]
    if not vals:
        ax.set_axis_off()
        return
    both = np.concatenate(vals)
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-12, 41)
    for v, label, color in ((first, first_label, "tab:blue"), (last, last_label, "tab:orange")):
        if v is not None and v.size:  # one filled step artist per series: ax.hist's 40 bar patches cost ~10x more
            counts, _ = np.histogram(v[np.isfinite(v)], bins=bins)
            ax.stairs(counts, bins, fill=True, alpha=0.5, color=color, label=label)
    ax.tick_params(labelsize=6)


def histograms(first: Mapping[str, Mapping[str, np.ndarray]], last: Mapping[str, Mapping[str, np.ndarray]],
               first_epoch: int, last_epoch: int, path: Path) -> bool:
    """One row per layer: activations (left) and gradients (right), first vs last epoch overlaid."""
    acts = list(dict.fromkeys([*first.get("acts", {}), *last.get("acts", {})]))
    grads = [n for n in dict.fromkeys([*first.get("grads", {}), *last.get("grads", {})]) if n.endswith("weight")]
    n = max(len(acts), len(grads))
    if n == 0:
        return False
    fig = Figure(figsize=(9, 1.6 * n + 0.8))
    labels = (f"epoch {first_epoch}", f"epoch {last_epoch}")
    for col, (kind, names, what) in enumerate((("acts", acts, "activations"), ("grads", grads, "gradients"))):
        for i in range(n):
            ax = fig.add_subplot(n, 2, 2 * i + col + 1)
            if i >= len(names):
                ax.set_axis_off()
                continue
            name = names[i]
            _hist(ax, first.get(kind, {}).get(name), last.get(kind, {}).get(name), *labels)
            ax.set_title(f"{what}: {name}", fontsize=8)
            if i == 0:
                ax.legend(fontsize=6)
    fig.suptitle("activation and gradient histograms per layer (first vs last epoch)", fontsize=10)
    fig.subplots_adjust(hspace=0.6, wspace=0.15, top=1 - 0.9 / fig.get_figheight())  # tight_layout costs seconds
    _save(fig, path, dpi=80, tight=False)  # laid out by subplots_adjust above
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
    tiles = tiles[:64]
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


def filters(grid: np.ndarray, title: str, path: Path) -> None:
    fig = Figure(figsize=(5, 5 * grid.shape[0] / max(grid.shape[1], 1) + 0.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    _save(fig, path)
