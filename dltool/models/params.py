"""Parameter helpers used everywhere: the layer names users see, norm layers, and weights vs biases.

One rule says what a parameter is (`role`): a normalization layer's scale/shift is "norm", a tensor
named bias is "bias", everything else (matrices, kernels, recurrent weights) is "weight". Initialization,
the optimizer's weight-decay groups and the L1/L2 penalties all read it. (nanoGPT's `p.dim() >= 2` is not
used: a locally connected layer's bias is (filters, H, W) and must still count as a bias.)
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def short_name(name: str) -> str:
    """A module name as the summary shows it: layers.res1.body.conv3 -> res1.conv3."""
    return name.removeprefix("layers.").replace(".body.", ".")


def layer_of(key: str) -> str:
    """A parameter / state-dict key -> its layer's short name: layers.res1.body.conv3.weight -> res1.conv3."""
    return short_name(key).rsplit(".", 1)[0]


def is_under(name: str, prefix: str) -> bool:
    """name is the layer `prefix` or inside it (res1.conv2 is under res1; res10 is not)."""
    return name == prefix or name.startswith(prefix + ".")


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORMS)


def role(module: nn.Module, param_name: str) -> str:
    """"norm", "bias" or "weight" for a parameter of `module` (param_name as in named_parameters(recurse=False))."""
    if is_norm(module):
        return "norm"
    return "bias" if "bias" in param_name else "weight"


def decayed(module: nn.Module, param_name: str, apply_to_bias: bool, apply_to_norm: bool) -> bool:
    """The one weight-decay / L1 / L2 rule: weights always; biases and norm parameters only when asked."""
    r = role(module, param_name)
    return r == "weight" or (r == "bias" and apply_to_bias) or (r == "norm" and apply_to_norm)


def own_params(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """(module name, module, parameter name, parameter) for every trainable parameter, once each."""
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                yield mname, module, pname, p
