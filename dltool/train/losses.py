"""Loss table (data loss on logits) and the regularization penalties added to it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dltool import plugins
from dltool.catalog import LOSSES
from dltool.config.schema import LossConfig, RegularizationConfig
from dltool.errors import ConfigError
from dltool.models.params import decayed, own_params, short_name
from dltool.registry import lookup, unknown
from dltool.tasks import check_loss, gaussian_huber

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


def binary_cross_entropy(pos_weight: torch.Tensor | None = None) -> LossFn:
    """Logistic loss: (N, K) float targets (binary/multilabel: one logit per label); for class numbers (N,),
    one logit for two classes, else one-vs-all sigmoids on one-hot targets."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = None if pos_weight is None else pos_weight.to(logits)
        if y.dim() == 2:  # (N, K) 0/1 targets
            return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=w)
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
        return F.binary_cross_entropy_with_logits(logits, _one_hot(y, logits))

    return loss


@dataclass
class LossContext:
    """What a loss builder may read besides its keys: the task and the training targets (for balanced weights)."""

    task: str = "classification"
    train_y: torch.Tensor | None = None  # (N,) class numbers or (N, K) float targets of the training split
    num_outputs: int = 0


# Builders named in dltool.catalog.LOSSES: (LossConfig, LossContext) -> loss function of (logits, y).
def cross_entropy(c: LossConfig, ctx: LossContext) -> LossFn:
    weight = class_weights(c.class_weights, ctx)
    if weight is None:
        return nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
    return lambda logits, y: F.cross_entropy(logits, y, weight=weight.to(logits), label_smoothing=c.label_smoothing)


def hinge(c: LossConfig, ctx: LossContext) -> LossFn:
    return multiclass_hinge(c.margin, 1)


def squared_hinge(c: LossConfig, ctx: LossContext) -> LossFn:
    return multiclass_hinge(c.margin, 2)


def mse(c: LossConfig, ctx: LossContext) -> LossFn:
    if ctx.task == "regression":
        return lambda out, y: F.mse_loss(out, y.to(out.dtype))
    return lambda logits, y: F.mse_loss(logits, _one_hot(y, logits))


def l1(c: LossConfig, ctx: LossContext) -> LossFn:
    return lambda out, y: F.l1_loss(out, y.to(out.dtype))


def huber(c: LossConfig, ctx: LossContext) -> LossFn:
    positive("loss.delta", c.delta)
    return lambda out, y: F.huber_loss(out, y.to(out.dtype), delta=c.delta)


def smooth_l1(c: LossConfig, ctx: LossContext) -> LossFn:
    positive("loss.beta", c.beta)
    return lambda out, y: F.smooth_l1_loss(out, y.to(out.dtype), beta=c.beta)


def bce(c: LossConfig, ctx: LossContext) -> LossFn:
    return binary_cross_entropy(pos_weights(c.pos_weight, ctx))


def positive(key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{key}={value} must be a positive number (e.g. 1.0).")


def given_weights(key: str, value: object, n: int, what: str) -> torch.Tensor:
    """A list of n positive finite weights, or one sentence."""
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value):
        raise ConfigError(f"{key}={value} must be null, balanced, or a list of {n} positive numbers (one per {what}).")
    return torch.tensor([float(v) for v in value])


def class_weights(value: object, ctx: LossContext) -> torch.Tensor | None:
    """loss.class_weights: balanced = scikit-learn's n_samples / (n_classes * count) from the training split."""
    if value is None:
        return None
    if ctx.task != "classification":
        raise ConfigError(f"loss.class_weights weighs classes of a classification task; for the task {ctx.task} "
                          f"use loss=bce with loss.pos_weight (binary, multilabel) or leave it null.")
    if value == "balanced":
        counts = torch.bincount(ctx.train_y.cpu(), minlength=ctx.num_outputs).double()
        if (counts == 0).any():
            missing = [int(i) for i in torch.nonzero(counts == 0)[:, 0]]
            raise ConfigError(f"loss.class_weights=balanced: classes {missing} have no training examples, so they "
                              f"have no weight; give the weights as a list, or more data.")
        return (counts.sum() / (len(counts) * counts)).float()
    return given_weights("loss.class_weights", value, ctx.num_outputs, "class")


def pos_weights(value: object, ctx: LossContext) -> torch.Tensor | None:
    """loss.pos_weight: balanced = negatives / positives per label in the training split (scikit-learn's
    balanced class weights, as the ratio BCE's pos_weight takes)."""
    if value is None:
        return None
    if ctx.task not in ("binary", "multilabel"):
        raise ConfigError(f"loss.pos_weight weighs the positive label of a binary or multilabel task, not of a "
                          f"{ctx.task} task; leave it null (classification: loss.class_weights).")
    if value == "balanced":
        pos = ctx.train_y.cpu().double().sum(dim=0)
        neg = len(ctx.train_y) - pos
        if (pos == 0).any():
            raise ConfigError("loss.pos_weight=balanced: a label has no positive training example; give the "
                              "weights as a list.")
        return (neg / pos).float()
    return given_weights("loss.pos_weight", value, ctx.num_outputs, "label")


# How far the loss at init may be from expected_initial_loss before dltool warns (sanity check) or reports it
# (diagnose): 50% of it. Scores with std s add about s^2/2 to cross-entropy's ln C (s < 1.5 passes at C = 10: a
# failure means scores in the several units, i.e. weights far too large), s^2 to MSE's 1/C (s < 0.22 at C = 10)
# and 2 s^2 per wrong class to the squared hinge's (C-1) m^2; the default init's output layer keeps s <= 0.15
# on every shipped model (dltool.models.init.OUTPUT_GAIN), inside all of these with room for the batch's noise.
INIT_TOLERANCE = 0.5


def expected_initial_loss(name: str, num_classes: int, margin: float = 1.0, task: str = "classification",
                          delta: float = 1.0) -> float | None:
    """The textbook loss at initialization with small random weights (scores ~ 0); for regression, outputs ~ 0
    against standardized targets, taken as standard normal: mse 1, l1 sqrt(2/pi), huber/smooth_l1 integrated."""
    if task == "regression":
        if name == "mse":
            return 1.0
        if name in ("huber", "smooth_l1"):
            return gaussian_huber(delta) / (delta if name == "smooth_l1" else 1.0)
    if task in ("binary", "multilabel"):
        return math.log(2.0)
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


def check_head(loss: str, units: int, num_classes: int, task: str = "classification") -> None:
    """The model's output units against the loss and the targets: one unit is a logistic output, which only bce
    reads; binary, multilabel and regression heads have one output per label / target."""
    if task != "classification":
        if units != num_classes:
            what = {"binary": "1 logit (binary)", "multilabel": f"{num_classes} logits, one per label",
                    "regression": f"{num_classes} output{'s' if num_classes > 1 else ''}, one per target"}[task]
            raise ConfigError(f"the model ends in {units} output units but the {task} targets need {what}; end "
                              f"with fc: {{units: num_classes}} (num_classes is {num_classes} here).")
        return
    if units == num_classes and not (units == 1 and loss == "bce"):
        return
    if units == 1 and num_classes == 2 and loss == "bce":
        return
    if units == 1 and num_classes == 2:
        raise ConfigError(f"the model ends in 1 output unit, which only loss.name=bce reads (one logistic output "
                          f"for two classes), but loss.name={loss}; use loss=bce or end with fc: {{units: 2}}.")
    raise ConfigError(f"the model ends in {units} output units but the data has {num_classes} classes; end with "
                      f"fc: {{units: num_classes}}{' (or 1 unit with loss=bce)' if num_classes == 2 else ''}.")


def build_loss(cfg: LossConfig, ctx: LossContext | None = None) -> LossFn:
    """The loss of loss.name for the task (one sentence when it does not fit the task)."""
    ctx = ctx or LossContext()
    if cfg.label_smoothing and cfg.name != "cross_entropy":
        raise ConfigError(f"loss.label_smoothing={cfg.label_smoothing} only applies to loss.name=cross_entropy.")
    own = plugins.get("losses", cfg.name)
    if own is not None:  # a plug-in loss: its options (checked and filled when the config was validated)
        if ctx.task not in own.tasks:
            raise ConfigError(f"loss.name={cfg.name} (plug-in from {own.where}) does not fit the task {ctx.task}; "
                              f"it declares tasks {', '.join(own.tasks)}.")
        return own.obj(dict(cfg.options or {}), ctx)
    builder = lookup(LOSSES, cfg.name, "loss.name")
    check_loss(ctx.task, cfg.name)
    return builder(cfg, ctx)
