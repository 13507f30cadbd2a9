"""The training loop: train_one_epoch / evaluate / fit, readable top to bottom.

Step order lives in `train_one_epoch` alone:
zero_grad -> forward -> loss (+ penalties) -> backward -> clip -> step -> scheduler (onecycle only).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from dltool.data.splits import DataBundle, Split
from dltool.tasks import TASKS
from dltool.train.averaging import Averaging, eval_model
from dltool.train.callbacks import Callback, FitState
from dltool.train.infer import autocast, infer
from dltool.train.metrics import correct as count_correct
from dltool.train.metrics import logit, split_metrics
from dltool.train.steps import BatchStream, Interval, Plan


@dataclass
class Setup:
    """Everything one optimization step needs, built once from the config."""

    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: object | None = None
    interval: str = "epoch"  # when the scheduler steps: epoch | step | plateau | constant (never: no schedule)
    penalty: Callable[[], torch.Tensor | float] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "32"
    accumulate: int = 1
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper of `model` that training steps go through
    compile: bool = False  # trainer.compile: training steps go through torch.compile(model or its DDP wrapper)
    channels_last: bool = False  # trainer.channels_last: 4-D training batches in channels_last memory format
    net: nn.Module | None = None  # what training steps call (see training_net), made once
    task: str = "classification"  # which metrics validation records (dltool.tasks)
    threshold: float = 0.5  # binary/multilabel decision threshold on the predicted probability
    target_norm: dict | None = None  # regression: the training targets' mean/std (metrics in original units)
    gather_outputs: Callable[[torch.Tensor], torch.Tensor] | None = None  # DDP: concatenate over every rank
    stop_check: Callable[[], bool] | None = None  # after each optimizer step: stop here (a preemption signal)?
    agree: Callable[[list[bool]], list[bool]] | None = None  # DDP: this rank's stop flags -> every rank's (any)
    gather: Callable[[dict], dict] | None = None  # DDP: a cut epoch's sums of every rank, for last.pt (collective)
    rank: int = 0  # DDP: which of those sums this process continues
    metrics: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = field(default_factory=dict)  # plug-ins
    average: Averaging | None = None  # trainer.ema_decay / swa_start: the averaged weights (train/averaging.py)
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # MixUp/CutMix


def train_one_epoch(s: Setup, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], num_batches: int,
                    generator: torch.Generator, scaler: torch.amp.GradScaler,
                    on_batch: Callable[[], None] | None = None, carry: dict | None = None) -> dict:
    """One pass over the shuffled training split; returns mean train loss and accuracy.

    carry: the sums of a chunk a preemption cut short (`partial`), continued from its next batch. When
    s.stop_check says so after an optimizer step, the pass ends early and returns `partial` instead.
    """
    net = training_net(s)
    net.train()
    carry = carry or {}
    total_loss = carry.get("loss", torch.zeros(())).to(s.device, copy=True)
    kind = count_dtype(s)
    correct = carry.get("correct", torch.zeros((), dtype=kind)).to(s.device, kind, copy=True)
    seen = int(carry.get("seen", 0))
    cut = logit(s.threshold)
    s.optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(batches, start=int(carry.get("batches", 0))):  # x: (N, ...), y: (N,)
        if s.augment is not None:
            x = s.augment(x, generator)
        if s.mix is not None:  # MixUp/CutMix: y becomes (N, C) soft targets
            x, y = s.mix(x, y)
        with autocast(s.device, s.precision):
            logits = net(x)  # (N, C)
            data_loss = s.loss_fn(logits, y)
            loss = data_loss + s.penalty() if s.penalty is not None else data_loss
        scaled = loss / s.accumulate if s.accumulate > 1 else loss
        scaler.scale(scaled).backward()  # a disabled scaler returns the loss as is
        stepped = (i + 1) % s.accumulate == 0 or i + 1 == num_batches
        if stepped:
            step(s, scaler)
        total_loss += data_loss.detach() * len(y)
        correct += count_correct(s.task, logits.detach(), y, cut)
        seen += len(y)
        if on_batch is not None:
            on_batch()
        if stepped and i + 1 < num_batches and s.stop_check is not None and s.stop_check():
            return {"partial": {"batches": i + 1, "loss": total_loss, "correct": correct, "seen": seen}}
    out = {"train_loss": total_loss.item() / max(seen, 1), "examples": seen}
    if TASKS[s.task].train_acc:
        out["train_acc"] = correct.item() / max(seen, 1)
    return out


def count_dtype(s: Setup) -> torch.dtype:
    """Whole examples are counted as integers; MixUp/CutMix's share of the mixed target as float (float64, except
    on mps, which has none)."""
    if s.mix is None:
        return torch.long
    return torch.float32 if s.device.type == "mps" else torch.float64


def training_net(s: Setup) -> nn.Module:
    """DDP's wrapper (it syncs gradients) or the bare model, compiled once under trainer.compile. Checkpoints and
    evaluation use the bare model (its state_dict keys stay plain; eval mode would recompile)."""
    if s.net is None:
        net = s.model if s.ddp is None else s.ddp
        s.net = torch.compile(net) if s.compile else net
    return s.net


def make_scaler(s: Setup) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA; a disabled scaler (a no-op pass-through) for every other precision."""
    return torch.amp.GradScaler(s.device.type, enabled=s.precision == "16" and s.device.type == "cuda")


def step(s: Setup, scaler: torch.amp.GradScaler) -> None:
    """(unscale) -> clip -> optimizer step -> weight average -> per-step scheduler -> zero_grad."""
    scaler.unscale_(s.optimizer)  # no-op when disabled; clipping must see the true gradients
    if s.clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(s.model.parameters(), s.clip_grad_norm)
    if s.clip_grad_value is not None:
        nn.utils.clip_grad_value_(s.model.parameters(), s.clip_grad_value)
    scaler.step(s.optimizer)  # plain optimizer.step() when disabled
    scaler.update()
    if s.average is not None:  # EMA: the average follows every step (SWA: at epoch ends, in run_plan)
        s.average.after_step(s.model)
    if s.interval == "step":
        s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)


def evaluate(model: nn.Module, loss_fn: Callable, split: Split, batch_size: int, device: torch.device,
             precision: str = "32", task: str = "classification", threshold: float = 0.5,
             target_norm: dict | None = None, gather: Callable | None = None,
             metrics: dict[str, Callable] | None = None) -> dict:
    """The task's metrics over a whole split (loss, acc, ... per dltool.tasks), in eval mode (dropout off,
    batch-norm running stats); under DDP each rank's outputs are gathered first, so every rank gets the same
    numbers as one process over the whole split."""
    out = infer(model, split.batches(batch_size), device, precision, keep_logits=True, keep_targets=True, task=task)
    if out.logits is None:  # an empty split
        return {"loss": math.nan}
    logits, y = out.logits, out.targets
    if gather is not None:
        logits, y = gather(logits), gather(y)
    with torch.no_grad():
        loss = float(loss_fn(logits.to(device), y.to(device)))
        extra = {name: float(fn(logits, y)) for name, fn in (metrics or {}).items()}  # trainer.metrics (plug-ins)
    return {"loss": loss, **split_metrics(task, logits, y, threshold, target_norm), **extra}


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """lr: optimizer.lr as the schedule has it now (the groups at multiple 1; fine-tuning's 0.1x groups do not
    stand for it), plus lr_groupN for each group N trained at another multiple of it."""
    groups = optimizer.param_groups
    base = next((g for g in groups if g.get("lr_mult", 1.0) == 1.0), None)
    lr = base["lr"] if base is not None else groups[0]["lr"] / groups[0].get("lr_mult", 1.0)
    out, mults = {"lr": lr}, {1.0}
    for i, g in enumerate(groups):
        if g.get("lr_mult", 1.0) not in mults:
            mults.add(g.get("lr_mult", 1.0))
            out[f"lr_group{i}"] = g["lr"]
    return out


def overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


def fit(s: Setup, data: DataBundle, state: FitState, callbacks: list[Callback], batch_size: int,
        generator: torch.Generator, plan: Plan | None = None) -> FitState:
    """Train per plan (epochs or steps); at each validation point callbacks see one flat logs dict, by priority.
    state.progress (plain data in every checkpoint: units done, steps, stream position, interval sums) is
    where a resumed run continues."""
    scaler = make_scaler(s)
    callbacks = sorted(callbacks, key=lambda cb: cb.priority)  # stable: ties keep their list order
    per_batch = [cb for cb in callbacks if overrides(cb, "on_batch_end")]  # no per-batch call for the others

    def on_batch() -> None:
        for cb in per_batch:
            cb.on_batch_end(state)

    plan = plan or make_plan_for_epochs(state.epochs, data.train.num_batches(batch_size))
    for cb in callbacks:
        cb.on_fit_start(state)
    try:
        run_plan(s, data, state, callbacks, batch_size, generator, plan, scaler, on_batch if per_batch else None)
    except KeyboardInterrupt:
        state.interrupted = True
        raise
    finally:  # also after Ctrl-C or an error: curves.png, figures and event files of the epochs run
        for cb in callbacks:
            cb.on_fit_end(state)
    return state


def run_plan(s: Setup, data: DataBundle, state: FitState, callbacks: list[Callback], batch_size: int,
             generator: torch.Generator, plan: Plan, scaler: torch.amp.GradScaler,
             on_batch: Callable[[], None] | None) -> None:
    """Train to each pause of the plan; at a validation point, validate and hand the logs to the callbacks.
    s.stop_check (a preemption, the time budget) ends it after an optimizer step, last.pt holding the position."""
    stream = BatchStream(data.train, batch_size, generator, s.device, s.channels_last)
    done, interval, carry = resume_progress(state, stream)
    if carry is not None and "ranks" in carry:  # DDP: this rank's own sums of the cut epoch
        carry = {**carry["ranks"][s.rank], "batches": carry["batches"]}
    while done < plan.total and not state.stop:
        if carry is None and s.stop_check is not None and s.stop_check():  # between chunks
            return cut(state, callbacks, progress(done, state.step, stream, interval))
        n = (plan.next_stop(done) - done) * plan.batches_per_unit
        for cb in callbacks:
            cb.on_epoch_start(state, n)
        t0, lrs = time.perf_counter(), group_lrs(s.optimizer)
        out = train_one_epoch(s, stream.take(n - (carry or {}).get("batches", 0)), n, generator, scaler, on_batch,
                              carry)
        carry = None
        if "partial" in out:
            interval.seconds += time.perf_counter() - t0
            partial = s.gather(out["partial"]) if s.gather is not None else out["partial"]
            return cut(state, callbacks, progress(done, state.step, stream, interval, partial))
        done = plan.next_stop(done)
        state.step += n // s.accumulate if plan.unit == "step" else -(-n // s.accumulate)
        if s.average is not None and s.average.after_epoch(s.model, done):  # SWA: SWALR rules the lr from here
            s.interval = "swa"
            if s.average.scheduler is not None:
                s.average.scheduler.step()
        elif plan.unit == "epoch" and s.interval == "epoch":  # before the callbacks: last.pt holds the next lr
            s.scheduler.step()
        t1 = time.perf_counter()
        interval.add(out, t1 - t0)
        if not plan.is_validation(done):
            state.progress = progress(done, state.step, stream, interval)
            for cb in callbacks if plan.is_checkpoint(done) else []:
                cb.on_checkpoint(state)
            continue
        state.epoch = done if plan.unit == "epoch" else len(state.history) + 1
        logs = {"epoch": state.epoch, **interval.means(), **validate(s, data, batch_size)}
        logs.update(**lrs, time=interval.seconds + time.perf_counter() - t1, step=state.step)  # time: train + val
        if s.interval == "plateau":
            s.scheduler.step(logs.get(state.monitor, logs.get("val_loss", logs["train_loss"])))
        state.history.append(logs)
        interval = Interval()
        state.progress = progress(done, state.step, stream, interval)
        state.checkpoint_due = plan.is_checkpoint(done)
        for cb in callbacks:
            cb.on_epoch_end(state, logs)


def cut(state: FitState, callbacks: list[Callback], where: dict) -> None:
    """Stop between two steps (a preemption signal, trainer.max_time): last.pt (the checkpoint writers'
    on_checkpoint) records exactly where training is, so a resume continues bitwise."""
    state.progress, state.stop = where, True
    for cb in callbacks:
        cb.on_checkpoint(state)


def validate(s: Setup, data: DataBundle, batch_size: int) -> dict:
    """val_loss and the task's validation metrics (nothing when the data set has no validation split)."""
    if data.val is None:
        return {}
    val = evaluate(eval_model(s.model, s.average), s.loss_fn, data.val, batch_size, s.device, s.precision, s.task,
                   s.threshold, s.target_norm, s.gather_outputs, s.metrics)
    return {f"val_{k}": v for k, v in val.items()}


def make_plan_for_epochs(epochs: int, batches_per_epoch: int) -> Plan:
    return Plan("epoch", epochs, 1, None, batches_per_epoch)


def progress(done: int, steps: int, stream: BatchStream, interval: Interval, partial: dict | None = None) -> dict:
    out = {"done": done, "step": steps, "stream": stream.state_dict(), "interval": dataclasses.asdict(interval)}
    return {**out, "partial": partial} if partial is not None else out


def resume_progress(state: FitState, stream: BatchStream) -> tuple[int, Interval, dict | None]:
    """(units done, the interval's sums, a cut chunk's sums) from a resumed checkpoint's progress; (0, empty, None)
    for a new run."""
    p = state.progress or {}
    stream.load_state_dict(p.get("stream") or {})
    state.step = int(p.get("step", 0))
    return int(p.get("done", state.epoch)), Interval(**(p.get("interval") or {})), p.get("partial")
