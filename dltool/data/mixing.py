"""MixUp and CutMix as batch augmentations (augment.mixup_alpha, augment.cutmix_alpha), with torchvision's
transforms.v2 implementations: a batch (x, y) with integer labels becomes (mixed x, (N, C) soft targets).

MixUp (Zhang et al. 2018): x = lam * x_i + (1 - lam) * x_j and the same lam on the one-hot targets, lam ~
Beta(alpha, alpha), j the neighbour in the batch (torchvision rolls the batch by one). CutMix (Yun et al. 2019):
a box of x_j pasted into x_i, targets mixed by the box's area. With both on, each batch draws one of the two
(torchvision's RandomChoice, p = 1/2 each). The draws use torch's global generator, which every checkpoint keeps,
so a resume is exact. Imported through the registry's resolver (torchvision costs ~3 s) only when mixing is on.
"""

from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def attach(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> Mixer:
    """Setup.mix: (x (N, ...), y (N,) int) -> (x mixed, y (N, C) float), for any input shape with MixUp (a
    feature vector or sequence is viewed as an (N, 1, 1, F) image for torchvision) and for images with CutMix."""
    ops = []
    if mixup_alpha > 0:
        ops.append(v2.MixUp(alpha=float(mixup_alpha), num_classes=num_classes))
    if cutmix_alpha > 0:
        ops.append(v2.CutMix(alpha=float(cutmix_alpha), num_classes=num_classes))
    op = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    def mix(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x if x.dim() == 4 else x.reshape(shape[0], 1, 1, -1)  # (N, C, H, W) for torchvision
        mixed, soft = op(flat, y.long())
        return mixed.reshape(shape), soft  # (N, ...), (N, C)

    return mix
