"""The training loop: train_one_epoch / evaluate / fit, readable top to bottom.

Step order lives in `train_one_epoch` alone:
zero_grad -> forward -> loss (+ penalties) -> backward -> clip -> step -> scheduler (onecycle only).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from dltool.data.splits import DataBundle, Split
from dltool.errors import ConfigError
from dltool.train.callbacks import Callback, FitState


@dataclass
class Setup:
    """Everything one optimization step needs, built once from the config."""

    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: object | None = None
    interval: str = "epoch"  # when the scheduler steps: epoch | step | plateau
    penalty: Callable[[], torch.Tensor | float] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "32"
    accumulate: int = 1
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper of `model` that training steps go through


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} but no CUDA device is available here; use trainer.device=auto.")
    return dev


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision context: bf16 or fp16 autocast, or nothing for full 32-bit."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def count_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:  # one logistic output for two classes
        return ((logits[:, 0] > 0).long() == y).sum()
    return (logits.argmax(dim=1) == y).sum()


def train_one_epoch(s: Setup, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], num_batches: int,
                    generator: torch.Generator, scaler: torch.amp.GradScaler,
                    on_batch: Callable[[], None] | None = None) -> dict:
    """One pass over the shuffled training split; returns mean train loss and accuracy."""
    net = s.model if s.ddp is None else s.ddp  # DDP syncs gradients; checkpoints and evaluation use the bare model
    net.train()
    total_loss = torch.zeros((), device=s.device)
    correct = torch.zeros((), dtype=torch.long, device=s.device)
    seen = 0
    s.optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(batches):  # x: (N, ...), y: (N,)
        if s.augment is not None:
            x = s.augment(x, generator)
        with autocast(s.device, s.precision):
            logits = net(x)  # (N, C)
            data_loss = s.loss_fn(logits, y)
            loss = data_loss + s.penalty() if s.penalty is not None else data_loss
        scaled = loss / s.accumulate if s.accumulate > 1 else loss
        scaler.scale(scaled).backward()  # a disabled scaler returns the loss as is
        if (i + 1) % s.accumulate == 0 or i + 1 == num_batches:
            step(s, scaler)
        total_loss += data_loss.detach() * len(y)
        correct += count_correct(logits.detach(), y)
        seen += len(y)
        if on_batch is not None:
            on_batch()
    return {"train_loss": total_loss.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1)}


def make_scaler(s: Setup) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA; a disabled scaler (a no-op pass-through) for every other precision."""
    return torch.amp.GradScaler(s.device.type, enabled=s.precision == "16" and s.device.type == "cuda")


def step(s: Setup, scaler: torch.amp.GradScaler) -> None:
    """(unscale) -> clip -> optimizer step -> per-step scheduler -> zero_grad."""
    scaler.unscale_(s.optimizer)  # no-op when disabled; clipping must see the true gradients
    if s.clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(s.model.parameters(), s.clip_grad_norm)
    if s.clip_grad_value is not None:
        nn.utils.clip_grad_value_(s.model.parameters(), s.clip_grad_value)
    scaler.step(s.optimizer)  # plain optimizer.step() when disabled
    scaler.update()
    if s.interval == "step":
        s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: Callable, split: Split, batch_size: int, device: torch.device,
             precision: str = "32") -> dict:
    """Mean loss and accuracy over a split, in eval mode (dropout off, batch-norm running stats)."""
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in split.batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x)
            total_loss += loss_fn(logits, y).float() * len(y)
        correct += count_correct(logits, y)
        seen += len(y)
    return {"loss": total_loss.item() / max(seen, 1), "acc": correct.item() / max(seen, 1)}


def overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


def fit(s: Setup, data: DataBundle, state: FitState, callbacks: list[Callback], batch_size: int,
        generator: torch.Generator, start_epoch: int = 0) -> FitState:
    """Train from start_epoch to state.epochs; callbacks see one flat logs dict per epoch, by priority."""
    scaler = make_scaler(s)
    callbacks = sorted(callbacks, key=lambda cb: cb.priority)  # stable: ties keep their list order
    per_batch = [cb for cb in callbacks if overrides(cb, "on_batch_end")]  # no per-batch call for the others

    def on_batch() -> None:
        for cb in per_batch:
            cb.on_batch_end(state)

    for cb in callbacks:
        cb.on_fit_start(state)
    n_batches = data.train.num_batches(batch_size)
    for epoch in range(start_epoch, state.epochs):
        for cb in callbacks:
            cb.on_epoch_start(state, n_batches)
        t0 = time.perf_counter()
        lr = s.optimizer.param_groups[0]["lr"]
        logs = {"epoch": epoch + 1}
        batches = ((x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True))
                   for x, y in data.train.batches(batch_size, generator))
        logs.update(train_one_epoch(s, batches, n_batches, generator, scaler, on_batch if per_batch else None))
        val = evaluate(s.model, s.loss_fn, data.val, batch_size, s.device, s.precision)
        logs.update(val_loss=val["loss"], val_acc=val["acc"], lr=lr, time=time.perf_counter() - t0)
        if s.interval == "epoch":  # before the callbacks, so last.pt holds the scheduler of the next epoch
            s.scheduler.step()
        elif s.interval == "plateau":
            s.scheduler.step(logs.get(state.monitor, logs["val_loss"]))
        state.epoch = epoch + 1
        state.history.append(logs)
        for cb in callbacks:
            cb.on_epoch_end(state, logs)
        if state.stop:
            break
    for cb in callbacks:
        cb.on_fit_end(state)
    return state
