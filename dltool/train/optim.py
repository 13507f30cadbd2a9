"""Optimizer and learning-rate schedule tables.

Schedules step once per epoch (after validation), except onecycle, which steps every optimizer step.
Linear warmup (scheduler.warmup_epochs) is folded into the per-epoch factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from dltool.catalog import OPTIMIZERS, SCHEDULERS
from dltool.config.schema import OptimizerConfig, SchedulerConfig
from dltool.errors import ConfigError
from dltool.models.params import decayed, is_under, own_params, short_name
from dltool.registry import lookup


def param_groups(model: nn.Module, weight_decay: float, decay_bias_and_norm: bool,
                 lr_mults: dict[str, float] | None = None) -> list[dict]:
    """Split trainable parameters into groups: decayed weights vs biases/norm params, and lr multipliers.

    lr_mults maps a layer name (as the summary shows it) to a multiplier of the base lr (fine-tuning).
    """
    groups: dict[tuple[bool, float], list] = {}
    for mname, module, pname, p in own_params(model):
        # without weight decay both kinds share one group: every group costs a pass of the optimizer
        no_decay = bool(weight_decay) and not decayed(module, pname, decay_bias_and_norm, decay_bias_and_norm)
        mult = next((m for k, m in (lr_mults or {}).items() if is_under(short_name(mname), k)), 1.0)
        groups.setdefault((no_decay, mult), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr_mult": mult}
            for (nd, mult), ps in groups.items()]


# Optimizers named in dltool.catalog.OPTIMIZERS: (param groups, OptimizerConfig) -> optimizer.
def sgd(g: list, c: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(g, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov)


def adam(g: list, c: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(g, lr=c.lr, betas=tuple(c.betas), eps=c.eps)


def adamw(g: list, c: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(g, lr=c.lr, betas=tuple(c.betas), eps=c.eps)


def adagrad(g: list, c: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(g, lr=c.lr, eps=c.eps)


def rmsprop(g: list, c: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(g, lr=c.lr, alpha=c.alpha, eps=c.eps, momentum=c.momentum)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, apply_to_bias: bool = False,
                    lr_mults: dict[str, float] | None = None) -> torch.optim.Optimizer:
    factory = lookup(OPTIMIZERS, cfg.name, "optimizer.name")
    if cfg.lr <= 0 and cfg.lr != 0:
        raise ConfigError(f"optimizer.lr={cfg.lr} must be positive (e.g. 1e-3).")
    if cfg.name == "sgd" and cfg.nesterov and cfg.momentum <= 0:
        raise ConfigError(f"optimizer.momentum={cfg.momentum} with optimizer.nesterov=true (the sgd default): "
                          f"Nesterov's look-ahead needs momentum > 0; add optimizer.nesterov=false for plain SGD.")
    groups = param_groups(model, cfg.weight_decay, apply_to_bias, lr_mults)
    if not groups:
        raise ConfigError("the model has no trainable parameters (every layer is frozen).")
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    return factory(groups, cfg)


# --------------------------------------------------------------------------- schedules
@dataclass
class ScheduleContext:
    """What a schedule needs besides its own keys."""

    epochs: int
    steps_per_epoch: int
    mode: str  # min | max, for plateau
    base_lr: float


Curve = Callable[[int], float]  # epochs since warmup ended -> multiplier of the base lr


def per_epoch(opt: torch.optim.Optimizer, cfg: SchedulerConfig, curve: Curve) -> Any:
    """A LambdaLR stepped once per epoch: linear warmup over warmup_epochs, then curve."""
    w = cfg.warmup_epochs

    def factor(e: int) -> float:
        if e < w:
            return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * e / w
        return curve(e - w)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# Schedules named in dltool.catalog.SCHEDULERS: (optimizer, SchedulerConfig, ScheduleContext) -> torch scheduler.
def constant(opt: torch.optim.Optimizer, cfg: SchedulerConfig, ctx: ScheduleContext) -> Any:
    return per_epoch(opt, cfg, lambda t: 1.0)


def step(opt: torch.optim.Optimizer, cfg: SchedulerConfig, ctx: ScheduleContext) -> Any:
    if cfg.step_size < 1:
        raise ConfigError(f"scheduler.step_size={cfg.step_size} must be at least 1 epoch.")
    return per_epoch(opt, cfg, lambda t: cfg.gamma ** (t // cfg.step_size))


def multistep(opt: torch.optim.Optimizer, cfg: SchedulerConfig, ctx: ScheduleContext) -> Any:
    return per_epoch(opt, cfg, lambda t: cfg.gamma ** sum(t >= m - cfg.warmup_epochs for m in cfg.milestones))


def exponential(opt: torch.optim.Optimizer, cfg: SchedulerConfig, ctx: ScheduleContext) -> Any:
    return per_epoch(opt, cfg, lambda t: cfg.gamma ** t)


def cosine(opt: torch.optim.Optimizer, cfg: SchedulerConfig, ctx: ScheduleContext) -> Any:
    floor = cfg.min_lr / ctx.base_lr if ctx.base_lr else 0.0
    span = max(ctx.epochs - cfg.warmup_epochs, 1)
    return per_epoch(opt, cfg, lambda t: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span)))


def plateau(opt: torch.optim.Optimizer, cfg: SchedulerConfig, ctx: ScheduleContext) -> Any:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=ctx.mode, factor=cfg.factor, patience=cfg.patience,
                                                      min_lr=cfg.min_lr)


def onecycle(opt: torch.optim.Optimizer, cfg: SchedulerConfig, ctx: ScheduleContext) -> Any:
    max_lr = cfg.max_lr if cfg.max_lr is not None else ctx.base_lr * 10
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[max_lr * g["lr_mult"] for g in opt.param_groups],
                                               total_steps=max(ctx.epochs * ctx.steps_per_epoch, 1),
                                               pct_start=cfg.pct_start)


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, steps_per_epoch: int,
                    mode: str, base_lr: float) -> tuple[Any, str]:
    """Returns (scheduler, interval) where interval is 'epoch', 'step' or 'plateau'."""
    entry = lookup(SCHEDULERS, cfg.name, "scheduler.name")
    if cfg.warmup_epochs and "warmup_epochs" not in entry.keys:
        hint = "onecycle warms up by itself: use pct_start" if cfg.name == "onecycle" else "use step or cosine"
        raise ConfigError(f"scheduler.warmup_epochs={cfg.warmup_epochs} does not combine with scheduler.name="
                          f"{cfg.name} ({hint}).")
    return entry(opt, cfg, ScheduleContext(epochs, steps_per_epoch, mode, base_lr)), entry.interval
