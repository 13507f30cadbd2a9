"""`dltool preview-augment` and `dltool show-data`: PNG grids of what the network will see.

preview-augment: one row per training example, the original then `variants` augmented versions.
show-data: one row per class, `per_class` raw training examples each (a scatter plot for 2-D features).
Images are shown in pixel space: the stored normalization is undone for display.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

from dltool.commands.rundir import inside
from dltool.console import note

matplotlib.use("Agg")
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dltool.config.schema import TrainConfig  # noqa: E402
from dltool.data.augment import build_batched, build_v2, denormalizer  # noqa: E402
from dltool.data.build import build_data  # noqa: E402
from dltool.data.splits import DataBundle  # noqa: E402
from dltool.errors import ConfigError  # noqa: E402

TILE = 1.3  # inches per grid cell
DPI = 100  # so a grid of R x C cells is exactly (R*130) x (C*130) pixels


@dataclass
class Grid:
    path: Path
    rows: int
    cols: int
    scatter: bool = False


def train_pixels(data: DataBundle, idx: list[int]) -> torch.Tensor:
    """Training examples idx as unnormalized (N, ...) tensors, without augmentation."""
    split = data.train
    if hasattr(split, "dataset"):  # streamed folder data: decode the files again
        keep, split.dataset.transform = split.dataset.transform, None
        try:
            return torch.stack([split.dataset[i][0] for i in idx])
        finally:
            split.dataset.transform = keep
    return denormalizer(data.norm)[0](split.x[idx].cpu())


def train_labels(data: DataBundle) -> torch.Tensor:
    split = data.train
    return torch.as_tensor(split.dataset.labels) if hasattr(split, "dataset") else split.y.cpu()


def augmented(data: DataBundle, cfg: TrainConfig, idx: list[int], variants: int) -> list[torch.Tensor]:
    """`variants` augmented copies of the examples idx, as the training loop would produce them."""
    if not cfg.augment.ops:
        raise ConfigError("augment.ops is empty, so there is nothing to preview; pick one, e.g. augment=standard.")
    pixels = train_pixels(data, idx)
    out = []
    if hasattr(data.train, "dataset"):
        t = build_v2(cfg.augment.ops, data.layout)
        for v in range(variants):
            torch.manual_seed(cfg.trainer.seed + v)
            out.append(torch.stack([t(x) for x in pixels]))
        return out
    aug = build_batched(cfg.augment.ops, data.norm, data.layout)
    to_pixels = denormalizer(data.norm)[0]
    for v in range(variants):
        g = torch.Generator().manual_seed(cfg.trainer.seed + v)
        out.append(to_pixels(aug(data.train.x[idx].cpu(), g)))
    return out


def show(ax, x: torch.Tensor, title: str | None = None) -> None:
    """One tile: a (C, H, W) image in [0, 1] (RGB or gray) or a (T, F) sequence as a heat map."""
    x = x.detach().float()
    if x.dim() == 3 and x.shape[0] == 3:
        ax.imshow(x.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    elif x.dim() == 3:
        ax.imshow(x[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(x.numpy(), cmap="viridis", interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def save(fig: Figure, path: Path) -> None:
    inside(path.parent, path, "--out file")  # not a directory, never through a link
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)


def preview_augment(cfg: TrainConfig, out: Path, rows: int = 8, variants: int = 5) -> Grid:
    data = build_data(cfg.data, "cpu")
    if data.layout != "image":
        raise ConfigError(f"preview-augment shows images, but data.name={cfg.data.name} has layout {data.layout!r}; "
                          f"use `dltool show-data` to look at it.")
    idx = list(range(min(rows, len(data.train))))
    originals, versions = train_pixels(data, idx), augmented(data, cfg, idx, variants)
    labels = train_labels(data)
    cols = 1 + variants
    fig = Figure(figsize=(cols * TILE, len(idx) * TILE))
    for r, i in enumerate(idx):
        name = data.class_names[int(labels[i])]
        show(fig.add_subplot(len(idx), cols, r * cols + 1), originals[r], f"{name} (original)")
        for v in range(variants):
            show(fig.add_subplot(len(idx), cols, r * cols + 2 + v), versions[v][r], f"{name} (augmented {v + 1})")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.95, wspace=0.1, hspace=0.35)
    save(fig, out)
    return Grid(out, len(idx), cols)


def report(grid: Grid, what: str) -> None:
    if grid.scatter:
        note(f"wrote {grid.path} (scatter plot of the training split, one colour per class)")
    else:
        note(f"wrote {grid.path} ({grid.rows} x {grid.cols} tiles: {what})")


def per_class_indices(labels: torch.Tensor, num_classes: int, per_class: int, max_classes: int) -> list[list[int]]:
    return [torch.nonzero(labels == c).flatten()[:per_class].tolist() for c in range(min(num_classes, max_classes))]


def show_data(cfg: TrainConfig, out: Path, per_class: int = 8, max_classes: int = 20) -> Grid:
    data = build_data(cfg.data, "cpu")
    labels = train_labels(data)
    if data.layout == "features":
        return scatter(data, labels, out)
    rows = per_class_indices(labels, data.num_classes, per_class, max_classes)
    fig = Figure(figsize=(per_class * TILE, len(rows) * TILE))
    for r, idx in enumerate(rows):
        pixels = train_pixels(data, idx) if idx else []
        for c, x in enumerate(pixels):
            title = data.class_names[r] if c == 0 else None
            show(fig.add_subplot(len(rows), per_class, r * per_class + c + 1), x, title)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.95, wspace=0.1, hspace=0.35)
    save(fig, out)
    return Grid(out, len(rows), per_class)


def scatter(data: DataBundle, labels: torch.Tensor, out: Path) -> Grid:
    """2-D (or the first two of more) features, one colour per class, in the input units."""
    x = denormalizer(data.norm)[0](data.train.x.cpu()) if data.norm.get("kind") != "pca" else data.train.x.cpu()
    if x.shape[1] < 2:
        raise ConfigError("show-data needs at least 2 features to draw a scatter plot; this data set has 1.")
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot(1, 1, 1)
    for c, name in enumerate(data.class_names):
        pts = x[labels == c]
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=8, label=name)
    ax.legend(fontsize=7)
    ax.set_title(f"training split ({len(x)} points)")
    save(fig, out)
    return Grid(out, 1, 1, scatter=True)
