"""Shared image helpers: resize and grayscale conversion of (N, C, H, W) float tensors in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dltool.config.schema import DataConfig
from dltool.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def image_size(cfg: DataConfig) -> tuple[int, int] | None:
    """data.image_size as (H, W): one number for square images, or [H, W]; None keeps the size."""
    size = cfg.image_size
    if size is None:
        return None
    size = list(size) if isinstance(size, (list, tuple)) else [size, size]
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"data.image_size={cfg.image_size} must be [height, width] in pixels, e.g. [32, 32].")
    return int(size[0]), int(size[1])


def fit_images(x: torch.Tensor, cfg: DataConfig, chunk: int = 4096) -> torch.Tensor:
    """(N, C, H, W) -> grayscale (1 channel) if data.grayscale, resized to data.image_size if set."""
    if cfg.grayscale and x.shape[1] == 3:
        x = torch.einsum("nchw,c->nhw", x, torch.tensor(LUMA)).unsqueeze(1)  # (N, 1, H, W)
    size = image_size(cfg)
    if size is None or tuple(x.shape[2:]) == size:
        return x
    parts = [F.interpolate(x[i:i + chunk], size=size, mode="bilinear", antialias=True, align_corners=False)
             for i in range(0, len(x), chunk)]  # chunked: bounded peak memory for 60,000 images
    return torch.cat(parts).clamp_(0.0, 1.0)
