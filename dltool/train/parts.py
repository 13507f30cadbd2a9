"""What a run is built from before any optimizer exists: the checks, the seed, the device, the data, the model
(initialized, fine-tuning applied, on the device), the penalty and the loss.

`dltool.train.run.prepare` adds the optimizer, the schedule and the loop's Setup. `dltool gradcheck` needs only
these parts, so it imports neither the optimizer path (Adam's constructor imports torch._dynamo, ~2 s) nor the
run's loggers and figures (TensorBoard, matplotlib). The random numbers drawn are the same as in `prepare`: nothing
after the model's initialization draws any.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dltool import plugins
from dltool.config.schema import TrainConfig
from dltool.data.build import build_data
from dltool.data.splits import DataBundle
from dltool.errors import ConfigError
from dltool.models import finetune
from dltool.models.builder import BuiltModel, build_model
from dltool.models.init import initialize
from dltool.registry import resolve
from dltool.tasks import check_loss, check_mixing, check_monitor
from dltool.train.averaging import check_averaging
from dltool.train.infer import pick_device
from dltool.train.losses import LossContext, Penalty, build_loss, check_head
from dltool.train.steps import Plan, make_plan, parse_max_time


@dataclass
class Parts:
    """The run's pieces that do not depend on the optimizer."""

    data: DataBundle
    built: BuiltModel
    model: nn.Module  # built.model, on the device (channels_last when asked)
    penalty: Penalty
    loss_fn: Callable
    device: torch.device
    plan: Plan
    mix: Callable | None
    lr_mults: dict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def mixer(cfg: TrainConfig, data: DataBundle) -> Callable | None:
    """Setup.mix for augment.mixup_alpha/cutmix_alpha (None when both are 0), checked against the task and loss."""
    a = cfg.augment
    check_mixing(data.task, cfg.loss.name, tuple(data.input_shape), a.mixup_alpha, a.cutmix_alpha)
    if not (a.mixup_alpha or a.cutmix_alpha):
        return None
    return resolve("dltool.data.mixing:attach")(data.num_classes, a.mixup_alpha, a.cutmix_alpha)


def check_trainer(cfg: TrainConfig) -> None:
    """The trainer keys that can be judged before anything is built (trainer.loggers: dltool.train.run.prepare)."""
    t = cfg.trainer
    if t.epochs < 1 or t.batch_size < 1 or t.accumulate < 1:
        bad = next(k for k in ("epochs", "batch_size", "accumulate") if getattr(t, k) < 1)
        raise ConfigError(f"trainer.{bad}={getattr(t, bad)} must be at least 1.")
    parse_max_time(t.max_time)
    check_averaging(t.ema_decay, t.swa_start, t.swa_lr, t.epochs, t.max_steps)
    if t.save_top_k is not None and t.save_top_k < -1:
        raise ConfigError(f"trainer.save_top_k={t.save_top_k} is not valid; use k >= 1 to keep the k best "
                          f"checkpoints, -1 to keep every epoch's, or null (0) for best.pt and last.pt only.")
    if t.min_change_epochs is not None and t.min_change_epochs < 1:
        raise ConfigError(f"trainer.min_change_epochs={t.min_change_epochs} must be at least 1 (or null: off).")
    check_threshold(t.threshold)


# whether this process has built a model with torch on more than one thread: a process forked after that hangs in
# its first parallel kernel (OpenMP's thread team does not survive fork); DDP ranks are then spawned
# (train/distributed.py start_method)
_THREADED: list[bool] = [False]


def threaded_here() -> bool:
    return _THREADED[0]


def build_parts(cfg: TrainConfig) -> Parts:
    """Seed, pick the device, build and check data, model (+ init, fine-tuning), penalty and loss."""
    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(t.threads)
    _THREADED[0] = _THREADED[0] or torch.get_num_threads() > 1
    check_trainer(cfg)
    seed_everything(t.seed)
    device = pick_device(t.device)
    data = build_data(cfg.data, device)
    if plugins.get("losses", cfg.loss.name) is None:  # a plug-in loss declares its tasks (build_loss checks them)
        check_loss(data.task, cfg.loss.name)
    if t.monitor.removeprefix("val_") not in t.metrics:  # a plug-in metric: logged on each validation pass
        check_monitor(data.task, t.monitor, t.mode, data.val is not None)
    mix = mixer(cfg, data)
    check_sizes(cfg, data)
    plan = make_plan(t, data.train.num_batches(t.batch_size))
    check_warmup(cfg, plan)
    built = build_model(cfg.model, data.input_shape, data.num_classes)
    check_head(cfg.loss.name, built.trace[-1].out_shape[-1] if built.trace else data.num_classes, data.num_classes,
               data.task)
    initialize(built.model, cfg.init, built.layer_inits)
    lr_mults = finetune.apply(built, cfg.model)  # pretrained weights, frozen layers, lr multipliers
    model = built.model.to(device, memory_format=torch.channels_last) if t.channels_last else built.model.to(device)
    penalty = Penalty(model, cfg.regularization)
    loss_fn = build_loss(cfg.loss, loss_context(data))
    return Parts(data, built, model, penalty, loss_fn, device, plan, mix, lr_mults)


def loss_context(data: DataBundle) -> LossContext:
    """The task and the training targets, for losses weighted from the training split (class_weights=balanced)."""
    return LossContext(data.task, getattr(data.train, "y", None), data.num_classes)


def check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0.0 < threshold < 1.0):
        raise ConfigError(f"trainer.threshold={threshold} must be a probability strictly between 0 and 1 "
                          f"(e.g. 0.5).")


def check_sizes(cfg: TrainConfig, data: DataBundle) -> None:
    """A training subset smaller than the number of classes leaves some classes without one example."""
    subset = cfg.data.subset
    if subset is not None and subset < data.num_classes:
        raise ConfigError(f"data.subset={subset} keeps fewer training examples than the {data.num_classes} classes, "
                          f"so some classes have none; use data.subset >= {data.num_classes} (at least one each).")


def check_warmup(cfg: TrainConfig, plan: Plan) -> None:
    """A warm-up longer than the run never reaches optimizer.lr."""
    warmup = getattr(cfg.scheduler, "warmup_epochs", 0) or 0
    if warmup > plan.total:
        key = "max_steps" if plan.unit == "step" else "epochs"
        raise ConfigError(f"scheduler.warmup_epochs={warmup} is longer than the whole run (trainer.{key}="
                          f"{plan.total}), so the learning rate never reaches optimizer.lr; use a warm-up shorter "
                          f"than the run, e.g. scheduler.warmup_epochs={max(1, plan.total // 10)}.")
