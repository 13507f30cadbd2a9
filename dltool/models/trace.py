"""What a built model knows about itself: per-layer records (shape, parameters, mult-adds) and MAC rules.

Shared by the layer-list builder and the torchvision backbones (so neither imports the other's internals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dltool.models.layers import Shape
from dltool.models.macs import measure


@dataclass
class LayerRecord:
    """One row of the summary: a named layer, its output shape and its cost per example."""

    name: str
    kind: str
    in_shape: Shape
    out_shape: Shape
    params: int
    trainable: int
    macs: int
    depth: int = 0
    activations: int | None = None  # values per example of every module output inside (None: the out_shape's)


@dataclass
class BuiltModel:
    model: nn.Module
    input_shape: Shape
    trace: list[LayerRecord]
    layer_inits: dict[str, dict] = field(default_factory=dict)  # module name -> per-layer init override
    pretrained: dict[str, torch.Tensor] = field(default_factory=dict)  # state-dict entries from backbone weights
    lr_mults: dict[str, float] = field(default_factory=dict)  # module name -> lr factor (fine-tuning)


def count_macs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run module on x -> (output, multiply-adds per example of every op it runs; see dltool.models.macs)."""
    y, m = measure(module, x)
    return y, m.macs // max(x.shape[0], 1)
