"""Loss table (data loss on logits) and the regularization penalties added to it."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dltool.catalog import LOSSES
from dltool.config.schema import LossConfig, RegularizationConfig
from dltool.errors import ConfigError
from dltool.models.params import decayed, own_params, short_name
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


# Builders named in dltool.catalog.LOSSES: (LossConfig) -> loss function of (logits, y).
def cross_entropy(c: LossConfig) -> LossFn:
    return nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)


def hinge(c: LossConfig) -> LossFn:
    return multiclass_hinge(c.margin, 1)


def squared_hinge(c: LossConfig) -> LossFn:
    return multiclass_hinge(c.margin, 2)


def mse(c: LossConfig) -> LossFn:
    return lambda logits, y: F.mse_loss(logits, _one_hot(y, logits))


def bce(c: LossConfig) -> LossFn:
    return binary_cross_entropy


# How far the loss at init may be from expected_initial_loss before dltool warns (sanity check) or reports it
# (diagnose): 50% of it. Scores with std s add about s^2/2 to cross-entropy's ln C (s < 1.5 passes at C = 10: a
# failure means scores in the several units, i.e. weights far too large), s^2 to MSE's 1/C (s < 0.22 at C = 10)
# and 2 s^2 per wrong class to the squared hinge's (C-1) m^2; the default init's output layer keeps s <= 0.15
# on every shipped model (dltool.models.init.OUTPUT_GAIN), inside all of these with room for the batch's noise.
INIT_TOLERANCE = 0.5


def expected_initial_loss(name: str, num_classes: int, margin: float = 1.0) -> float | None:
    """The textbook loss at initialization with small random weights (scores ~ 0)."""
    entry = LOSSES.get(name)
    return entry.expected(num_classes, margin) if entry is not None and entry.expected else None


def penalized_params(model: nn.Module, cfg: RegularizationConfig) -> list[torch.Tensor]:
    """The tensors L1/L2 apply to: weights, plus biases / norm parameters only when asked."""
    return [p for _, module, pname, p in own_params(model)
            if decayed(module, pname, cfg.apply_to_bias, cfg.apply_to_norm)]


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
        named = {short_name(n): m for n, m in model.named_modules()}
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


def check_head(loss: str, units: int, num_classes: int) -> None:
    """The model's output units against the loss: one unit is a logistic output, which only bce reads."""
    if units == num_classes and not (units == 1 and loss == "bce"):
        return
    if units == 1 and num_classes == 2 and loss == "bce":
        return
    if units == 1 and num_classes == 2:
        raise ConfigError(f"the model ends in 1 output unit, which only loss.name=bce reads (one logistic output "
                          f"for two classes), but loss.name={loss}; use loss=bce or end with fc: {{units: 2}}.")
    raise ConfigError(f"the model ends in {units} output units but the data has {num_classes} classes; end with "
                      f"fc: {{units: num_classes}}{' (or 1 unit with loss=bce)' if num_classes == 2 else ''}.")


def build_loss(cfg: LossConfig) -> LossFn:
    if cfg.label_smoothing and cfg.name != "cross_entropy":
        raise ConfigError(f"loss.label_smoothing={cfg.label_smoothing} only applies to loss.name=cross_entropy.")
    return lookup(LOSSES, cfg.name, "loss.name")(cfg)
