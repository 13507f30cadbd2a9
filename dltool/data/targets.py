"""Targets beyond class numbers: regression standardization (training split only) and the balanced sampler."""

from __future__ import annotations

import torch

from dltool.data.splits import strata
from dltool.errors import ConfigError


def fit_target_norm(y: torch.Tensor) -> dict:
    """Regression targets (N, K): mean and standard deviation per target over the training split only."""
    mean = y.double().mean(dim=0)
    std = y.double().std(dim=0, unbiased=False) if len(y) > 1 else torch.ones_like(mean)
    return {"mean": mean.float(), "std": torch.where(std > 1e-12, std, torch.ones_like(std)).float()}


def standardize_targets(y: torch.Tensor, target_norm: dict | None) -> torch.Tensor:
    return y if target_norm is None else (y - target_norm["mean"]) / target_norm["std"]


def sampler_weights(sampler: str | None, task: str, y: torch.Tensor) -> torch.Tensor | None:
    """data.sampler=balanced: each training example drawn with probability 1 / (its class's count), so every
    class is drawn equally often on average (with replacement, one epoch = as many draws as examples)."""
    if sampler in (None, "none"):
        return None
    if sampler != "balanced":
        raise ConfigError(f"data.sampler={sampler!r} is not a sampler; valid: null (shuffle every example once "
                          f"per epoch) or balanced (draw every class equally often).")
    labels = strata(y) if task in ("classification", "binary") else None
    if labels is None:
        raise ConfigError(f"data.sampler=balanced draws by class, which a {task} task does not have; use it for "
                          f"classification or binary targets (or weigh the loss instead).")
    counts = torch.bincount(labels).double()
    return (1.0 / counts[labels]).float()  # (N,)
