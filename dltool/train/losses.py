"""Loss table (data loss on logits) and the regularization penalties added to it."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dltool.config.schema import LossConfig, RegularizationConfig
from dltool.errors import ConfigError
from dltool.registry import lookup, unknown

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _one_hot(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, logits.shape[1]).to(logits.dtype)


def multiclass_hinge(margin: float, power: int) -> LossFn:
    """Multiclass SVM (Weston-Watkins, as in cs231n): mean over examples of sum_j!=y max(0, s_j - s_y + margin)^p."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (N, C), (N,)
        correct = logits.gather(1, y[:, None])  # (N, 1)
        margins = (logits - correct + margin).clamp(min=0)  # (N, C)
        margins = margins.scatter(1, y[:, None], 0.0)
        return margins.pow(power).sum(dim=1).mean()

    return loss


def binary_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Logistic loss: one logit for two classes, else one-vs-all sigmoids on one-hot targets."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    return F.binary_cross_entropy_with_logits(logits, _one_hot(y, logits))


LOSSES: dict[str, Callable[[LossConfig], LossFn]] = {
    "cross_entropy": lambda c: nn.CrossEntropyLoss(label_smoothing=c.label_smoothing),
    "hinge": lambda c: multiclass_hinge(c.margin, 1),
    "squared_hinge": lambda c: multiclass_hinge(c.margin, 2),
    "mse": lambda c: (lambda logits, y: F.mse_loss(logits, _one_hot(y, logits))),
    "bce": lambda c: binary_cross_entropy,
}
LOSS_DOCS = {
    "cross_entropy": "softmax + negative log-likelihood; label_smoothing",
    "hinge": "multiclass SVM, sum of max(0, s_j - s_y + margin); margin (default 1)",
    "squared_hinge": "multiclass SVM with squared margins (L2-SVM); margin",
    "mse": "mean squared error between the scores and one-hot targets",
    "bce": "binary / one-vs-all logistic loss (sigmoid); one output unit for two classes",
}


def expected_initial_loss(name: str, num_classes: int, margin: float = 1.0) -> float | None:
    """The textbook loss at initialization with small random weights (scores ~ 0)."""
    return {
        "cross_entropy": math.log(num_classes),
        "hinge": (num_classes - 1) * margin,
        "squared_hinge": (num_classes - 1) * margin ** 2,
        "mse": 1.0 / num_classes,
        "bce": math.log(2.0),
    }.get(name)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))


def penalized_params(model: nn.Module, cfg: RegularizationConfig) -> list[torch.Tensor]:
    """The tensors L1/L2 apply to: weights, plus biases / norm parameters only when asked."""
    chosen = []
    for module in model.modules():
        norm = is_norm(module)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if norm and not cfg.apply_to_norm:
                continue
            if not norm and "bias" in name and not cfg.apply_to_bias:
                continue
            chosen.append(p)
    return chosen


class Penalty:
    """0.5 * l2 * sum(w^2) + l1 * sum(|w|) over the chosen weights, plus activity penalties.

    The 0.5 makes the L2 gradient exactly l2 * w (cs231n's convention; equal to SGD weight_decay=l2).
    Activity penalties (Keras' activity_regularizer) are the mean over the batch of the summed
    l1*|a| + l2*a^2 of a named layer's output, collected with forward hooks.
    """

    def __init__(self, model: nn.Module, cfg: RegularizationConfig) -> None:
        self.cfg = cfg
        self.params = penalized_params(model, cfg) if (cfg.l1 or cfg.l2) else []
        self.activity: list[torch.Tensor] = []
        self.handles = []
        named = {n.removeprefix("layers.").replace(".body.", "."): m for n, m in model.named_modules()}
        for act in cfg.activity:
            if act.layer not in named:
                raise unknown("regularization.activity.layer", act.layer, [n for n in named if n])
            self.handles.append(named[act.layer].register_forward_hook(self._hook(act.l1, act.l2)))
        self.active = bool(self.params or self.handles)

    def _hook(self, l1: float, l2: float):
        def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            if module.training:
                a = out.flatten(1)
                if a.dtype in (torch.float16, torch.bfloat16):  # sum in float32 under autocast; keep float64 as is
                    a = a.float()
                self.activity.append((l1 * a.abs().sum(1) + l2 * a.pow(2).sum(1)).mean())
        return hook

    def __call__(self) -> torch.Tensor | float:
        total: torch.Tensor | float = 0.0
        if self.cfg.l2:
            total = total + 0.5 * self.cfg.l2 * sum(p.pow(2).sum() for p in self.params)
        if self.cfg.l1:
            total = total + self.cfg.l1 * sum(p.abs().sum() for p in self.params)
        if self.activity:
            total = total + sum(self.activity)
            self.activity.clear()
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def build_loss(cfg: LossConfig) -> LossFn:
    if cfg.label_smoothing and cfg.name != "cross_entropy":
        raise ConfigError(f"loss.label_smoothing={cfg.label_smoothing} only applies to loss.name=cross_entropy.")
    return lookup(LOSSES, cfg.name, "loss.name")(cfg)
