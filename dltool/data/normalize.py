"""Normalization statistics from the training split only, applied to every split, stored as plain data."""

from __future__ import annotations

import torch

from dltool.config.schema import DataConfig
from dltool.data import whitening
from dltool.errors import ConfigError


def channel_axes(layout: str, ndim: int) -> tuple[int, ...]:
    """Axes to average over for per-channel statistics of a (N, ...) tensor."""
    if layout == "sequence":  # (N, T, F): per feature
        return tuple(range(ndim - 1))
    return (0, *range(2, ndim))  # (N, C, ...) or (N, F): per channel / feature


def fit_norm(x: torch.Tensor, kind: str, layout: str, cfg: DataConfig | None = None) -> dict:
    """Statistics of the training split only, as plain data."""
    if kind == "none":
        return {"kind": "none"}
    axes = channel_axes(layout, x.dim())
    if kind in ("mean", "standardize"):
        mean = x.mean(dim=axes)
        std = x.std(dim=axes).clamp_min(1e-6) if kind == "standardize" else torch.ones_like(mean)
        return {"kind": kind, "layout": layout, "mean": mean, "std": std}
    if kind in whitening.KINDS:
        return whitening.fit(x, kind, cfg)
    raise ConfigError(f"data.normalize={kind!r} is not known; valid: none, mean, standardize, "
                      f"{', '.join(whitening.KINDS)}.")


def apply_norm(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """Apply stored statistics to a (N, ...) batch (training, evaluation and prediction alike)."""
    kind = norm.get("kind", "none")
    if kind == "none":
        return x
    if kind in ("mean", "standardize"):
        shape = [1] * x.dim()
        ch = x.dim() - 1 if norm["layout"] == "sequence" else 1
        shape[ch] = -1
        mean, std = norm["mean"].to(x.device).view(shape), norm["std"].to(x.device).view(shape)
        return (x - mean) / std
    return whitening.apply(x, norm)
