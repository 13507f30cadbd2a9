"""PCA and ZCA whitening (opt-in preprocessing), fitted on the training split only.

pca: project centred inputs onto the top principal components and divide by sqrt(eigenvalue + eps);
     the inputs become vectors of `data.pca_components` features (all of them by default).
zca: the same rotated back (U diag(1/sqrt(S + eps)) U^T): inputs keep their shape, as in CIFAR papers.
"""

from __future__ import annotations

import torch

from dltool.config.schema import DataConfig
from dltool.errors import ConfigError

KINDS = ("pca", "zca")


def fit(x: torch.Tensor, kind: str, cfg: DataConfig | None) -> dict:
    flat = x.flatten(1).double()  # (N, D)
    n, d = flat.shape
    if d > 4096:
        raise ConfigError(f"data.normalize={kind}: inputs have {d} values each; whitening needs a {d}x{d} "
                          f"covariance matrix, which is impractical past 4096 (use standardize).")
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / n  # (D, D)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    eps = cfg.whiten_eps if cfg is not None else 1e-2
    k = (cfg.pca_components if cfg is not None and cfg.pca_components else d) if kind == "pca" else d
    if not 1 <= k <= d:
        raise ConfigError(f"data.pca_components={k} must be between 1 and the input size {d}.")
    w = evecs[:, :k] / torch.sqrt(evals[:k].clamp_min(0) + eps)  # (D, k)
    if kind == "zca":
        w = w @ evecs.T  # (D, D)
    return {"kind": kind, "mean": mean.float(), "matrix": w.float(), "shape": list(x.shape[1:])}


def apply(x: torch.Tensor, norm: dict) -> torch.Tensor:
    flat = x.flatten(1) - norm["mean"].to(x.device)
    out = flat @ norm["matrix"].to(x.device)
    if norm["kind"] == "zca":
        return out.view(x.shape)
    return out
