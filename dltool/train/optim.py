"""Optimizer and learning-rate schedule tables.

Schedules step once per epoch (after validation), except onecycle, which steps every optimizer step.
Linear warmup (scheduler.warmup_epochs) is folded into the per-epoch factor.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from dltool.config.schema import OptimizerConfig, SchedulerConfig
from dltool.errors import ConfigError
from dltool.registry import lookup
from dltool.train.losses import is_norm


def param_groups(model: nn.Module, weight_decay: float, decay_bias_and_norm: bool,
                 lr_mults: dict[str, float] | None = None) -> list[dict]:
    """Split trainable parameters into groups: decayed weights vs biases/norm params, and lr multipliers.

    lr_mults maps a module-name prefix to a multiplier of the base lr (fine-tuning's smaller lr).
    """
    groups: dict[tuple[bool, float], list] = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            no_decay = not decay_bias_and_norm and (is_norm(module) or "bias" in pname)
            short = mname.removeprefix("layers.")
            mult = next((m for k, m in (lr_mults or {}).items() if short == k or short.startswith(k + ".")), 1.0)
            groups.setdefault((no_decay, mult), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr_mult": mult}
            for (nd, mult), ps in groups.items()]


OPTIMIZERS: dict[str, Callable[[list, OptimizerConfig], torch.optim.Optimizer]] = {
    "sgd": lambda g, c: torch.optim.SGD(g, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov),
    "adam": lambda g, c: torch.optim.Adam(g, lr=c.lr, betas=tuple(c.betas), eps=c.eps),
    "adamw": lambda g, c: torch.optim.AdamW(g, lr=c.lr, betas=tuple(c.betas), eps=c.eps),
    "adagrad": lambda g, c: torch.optim.Adagrad(g, lr=c.lr, eps=c.eps),
    "rmsprop": lambda g, c: torch.optim.RMSprop(g, lr=c.lr, alpha=c.alpha, eps=c.eps, momentum=c.momentum),
}
OPTIMIZER_DOCS = {
    "sgd": "lr, momentum, nesterov, weight_decay (coupled: added to the gradient)",
    "adam": "lr, betas, eps, weight_decay (coupled L2)",
    "adamw": "lr, betas, eps, weight_decay (decoupled, Loshchilov & Hutter)",
    "adagrad": "lr, eps, weight_decay",
    "rmsprop": "lr, alpha (decay rate), eps, momentum, weight_decay",
}


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


def epoch_factor(cfg: SchedulerConfig, epochs: int, base_lr: float) -> Callable[[int], float]:
    """Multiplier of the base lr for epoch e (0-based), warmup included."""
    w = cfg.warmup_epochs
    floor = cfg.min_lr / base_lr if base_lr else 0.0
    span = max(epochs - w, 1)

    def main(t: int) -> float:  # t = epochs since warmup ended
        name = cfg.name
        if name == "none":
            return 1.0
        if name == "step":
            return cfg.gamma ** (t // cfg.step_size)
        if name == "multistep":
            return cfg.gamma ** sum(t >= m - w for m in cfg.milestones)
        if name == "exponential":
            return cfg.gamma ** t
        if name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
        raise AssertionError(name)

    def factor(e: int) -> float:
        if e < w:
            return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * e / w
        return main(e - w)

    return factor


SCHEDULERS = {
    "none": "constant learning rate",
    "step": "lr * gamma every step_size epochs",
    "multistep": "lr * gamma at each epoch in milestones",
    "exponential": "lr * gamma^epoch",
    "cosine": "cosine annealing from lr down to min_lr over the epochs",
    "plateau": "lr * factor when the monitored metric has not improved for `patience` epochs",
    "onecycle": "one cycle up to max_lr and down, stepped every batch (pct_start of it rising)",
}


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, steps_per_epoch: int,
                    mode: str, base_lr: float) -> Any:
    """Returns (scheduler, interval) where interval is 'epoch', 'step' or 'plateau'."""
    lookup(SCHEDULERS, cfg.name, "scheduler.name")
    if cfg.warmup_epochs and cfg.name in ("plateau", "onecycle"):
        raise ConfigError(f"scheduler.warmup_epochs={cfg.warmup_epochs} does not combine with scheduler.name="
                          f"{cfg.name} ({'onecycle warms up by itself: use pct_start' if cfg.name == 'onecycle' else 'use step or cosine'}).")
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=cfg.factor, patience=cfg.patience,
                                                          min_lr=cfg.min_lr), "plateau"
    if cfg.name == "onecycle":
        max_lr = cfg.max_lr if cfg.max_lr is not None else base_lr * 10
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[max_lr * g["lr_mult"] for g in opt.param_groups],
                                                   total_steps=max(epochs * steps_per_epoch, 1),
                                                   pct_start=cfg.pct_start), "step"
    if cfg.name == "step" and cfg.step_size < 1:
        raise ConfigError(f"scheduler.step_size={cfg.step_size} must be at least 1 epoch.")
    return torch.optim.lr_scheduler.LambdaLR(opt, epoch_factor(cfg, epochs, base_lr)), "epoch"
