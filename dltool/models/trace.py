"""What a built model knows about itself: per-layer records (shape, parameters, mult-adds) and MAC rules.

Shared by the layer-list builder and the torchvision backbones (so neither imports the other's internals).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dltool.models.blocks import LocallyConnected2d
from dltool.models.layers import Shape


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


@dataclass
class BuiltModel:
    model: nn.Module
    input_shape: Shape
    trace: list[LayerRecord]
    layer_inits: dict[str, dict] = field(default_factory=dict)  # module name -> per-layer init override
    pretrained: dict[str, torch.Tensor] = field(default_factory=dict)  # state-dict entries from backbone weights
    lr_mults: dict[str, float] = field(default_factory=dict)  # module name -> lr factor (fine-tuning)


def count_macs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run module on x and count multiply-adds per example of its conv/linear/recurrent parts."""
    total = [0]

    def hook(m: nn.Module, inp: tuple, out: Any) -> None:
        out_t = out[0] if isinstance(out, tuple) else out
        n = inp[0].shape[0]
        total[0] += mac_rule(m)(m, inp[0], out_t) // max(n, 1)

    handles = [m.register_forward_hook(hook) for m in module.modules() if mac_rule(m) is not None]
    try:
        with torch.no_grad():
            y = module(x)
    finally:
        for h in handles:
            h.remove()
    return y, total[0]


def _conv_macs(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    k = 1
    for s in m.kernel_size:
        k *= s
    return y.numel() * (m.in_channels // m.groups) * k


def _rnn_macs(m: nn.RNNBase, x: torch.Tensor, y: torch.Tensor) -> int:
    """Per time step, layer and direction: gates * hidden * (inputs + hidden) for the gate pre-activations."""
    n, t, f = x.shape  # batch first: (N, T, F)
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    dirs, h = (2 if m.bidirectional else 1), m.hidden_size
    return sum(n * t * dirs * gates * h * ((f if layer == 0 else h * dirs) + h) for layer in range(m.num_layers))


MAC_RULES: dict[type, Any] = {
    nn.Conv1d: _conv_macs, nn.Conv2d: _conv_macs, nn.Conv3d: _conv_macs,
    nn.Linear: lambda m, x, y: y.numel() * m.in_features,
    nn.RNNBase: _rnn_macs,
    LocallyConnected2d: lambda m, x, y: y.numel() * m.in_ch * m.kernel[0] * m.kernel[1],
}


def mac_rule(m: nn.Module) -> Any:
    """The MAC formula for a module's class or its nearest registered base class (None: free)."""
    for cls in type(m).__mro__:
        if cls in MAC_RULES:
            return MAC_RULES[cls]
    return None
