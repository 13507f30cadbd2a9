"""Weight averaging on top of torch.optim.swa_utils: an exponential moving average of the weights after every
optimizer step (trainer.ema_decay) or stochastic weight averaging from an epoch on (trainer.swa_start/swa_lr).

EMA: AveragedModel(get_ema_multi_avg_fn(decay), use_buffers=True), so batch-norm running statistics are averaged
too; validation, best.pt and the final test use the averaged weights (a checkpoint's "model"), the raw weights go
on training (a checkpoint's "raw_model"). SWA: AveragedModel's running mean of the weights at the end of each epoch
from swa_start on, the learning rate from then on set by SWALR (or held), batch-norm statistics recomputed at the
end (update_bn) and the result written as checkpoints/swa.pt, which the final test uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from dltool.errors import ConfigError


@dataclass
class Averaging:
    """One of EMA (kind="ema", updated per optimizer step) or SWA (kind="swa", updated per epoch from `start`)."""

    kind: str
    model: AveragedModel
    start: int = 0  # SWA: the first epoch whose end weights enter the mean (1-based)
    scheduler: object | None = None  # SWA: SWALR (None: hold the learning rate the schedule reached)

    @property
    def module(self) -> nn.Module:
        return self.model.module

    def after_step(self, model: nn.Module) -> None:
        if self.kind == "ema":
            self.model.update_parameters(model)

    def in_swa(self, epochs_done: int) -> bool:
        return self.kind == "swa" and epochs_done >= self.start

    def after_epoch(self, model: nn.Module, epochs_done: int) -> bool:
        """SWA: add this epoch's weights to the mean; True when the SWA learning rate now rules the schedule."""
        if not self.in_swa(epochs_done):
            return False
        self.model.update_parameters(model)
        return True


def check_averaging(ema_decay: object, swa_start: object, swa_lr: object, epochs: int, max_steps: object) -> None:
    """One sentence for a bad trainer.ema_decay / swa_start / swa_lr, before anything is built or written."""
    if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0.0 <= ema_decay < 1.0:
        raise ConfigError(f"trainer.ema_decay={ema_decay!r} is not valid; use a number in [0, 1) (0 = off; e.g. "
                          f"0.999 averages over ~1000 optimizer steps).")
    if swa_start is not None:
        if isinstance(swa_start, bool) or not isinstance(swa_start, int) or not 1 <= swa_start <= epochs:
            raise ConfigError(f"trainer.swa_start={swa_start!r} is not valid; use an epoch from 1 to trainer.epochs="
                              f"{epochs} (the first epoch averaged), or null (off).")
        if max_steps is not None:
            raise ConfigError(f"trainer.swa_start={swa_start} counts epochs, but trainer.max_steps={max_steps} counts "
                              f"steps; use trainer.max_steps=null with SWA.")
        if ema_decay:
            raise ConfigError(f"trainer.ema_decay={ema_decay} and trainer.swa_start={swa_start} both average the "
                              f"weights; use one of them (trainer.ema_decay=0 or trainer.swa_start=null).")
    if swa_lr is not None and (isinstance(swa_lr, bool) or not isinstance(swa_lr, (int, float))
                               or not (swa_lr > 0 and math.isfinite(swa_lr))):
        raise ConfigError(f"trainer.swa_lr={swa_lr!r} is not valid; use a learning rate > 0 (e.g. 0.01), or null to "
                          f"hold the learning rate the schedule reached at trainer.swa_start.")
    if swa_lr is not None and swa_start is None:
        raise ConfigError(f"trainer.swa_lr={swa_lr} is only read with stochastic weight averaging; set "
                          f"trainer.swa_start (the first epoch averaged) or trainer.swa_lr=null.")


def build_averaging(model: nn.Module, optimizer: torch.optim.Optimizer, ema_decay: float, swa_start: int | None,
                    swa_lr: float | None) -> Averaging | None:
    """The Averaging the trainer keys ask for (None: off)."""
    if ema_decay:
        return Averaging("ema", AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True))
    if swa_start is None:
        return None
    sched = SWALR(optimizer, swa_lr=swa_lr, anneal_epochs=1) if swa_lr is not None else None
    return Averaging("swa", AveragedModel(model), swa_start, sched)


def eval_model(model: nn.Module, average: Averaging | None) -> nn.Module:
    """What validation, best.pt and the test read: the EMA of the weights under EMA, else the model itself (SWA's
    mean is read once, at the end, after its batch-norm statistics are recomputed)."""
    return average.module if average is not None and average.kind == "ema" else model


def finish_swa(average: Averaging, batches, device: torch.device) -> None:
    """Recompute the SWA model's batch-norm running statistics with one pass over the training batches."""
    update_bn(batches, average.model, device)


def checkpoint_weights(model: nn.Module, average: Averaging | None) -> dict:
    """A checkpoint's weights: "model" is what evaluate/predict/export read (the EMA under EMA); "raw_model" the
    weights training continues from; "average" the AveragedModel's state (its count), so a resume is exact."""
    if average is None:
        return {"model": model.state_dict()}
    out = {"model": eval_model(model, average).state_dict(), "average": average.model.state_dict()}
    if average.kind == "ema":
        out["raw_model"] = model.state_dict()
    if average.scheduler is not None:
        out["swa_scheduler"] = average.scheduler.state_dict()
    return out


def load_weights(ck: dict, model: nn.Module, average: Averaging | None, file: object) -> None:
    """The inverse of checkpoint_weights for a resume (torch's RuntimeError on a mismatch is the caller's)."""
    model.load_state_dict(ck.get("raw_model", ck["model"]))
    if average is None:
        return
    if "average" not in ck:
        raise ConfigError(f"resume: {file} was trained without trainer.ema_decay/swa_start, so it holds no averaged "
                          f"weights; resume with the run's own config.yaml.")
    average.model.load_state_dict(ck["average"])
    if average.scheduler is not None and ck.get("swa_scheduler") is not None:
        average.scheduler.load_state_dict(ck["swa_scheduler"])
