"""Training length and intervals (epochs or max_steps; validation and checkpoint points) and a batch stream.

`Plan` says where training pauses: at every epoch end (epoch mode), every validation point
(trainer.val_every), every checkpoint point (trainer.checkpoint_every) and at the end. Between two
pauses the loop runs one `train_one_epoch` call over `BatchStream.take(n)`, an endless stream of
shuffled batches whose position (the pass's starting generator state and the batches already taken)
is plain data, so a run resumes bitwise exactly even between validation points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from dltool.config.schema import TrainerConfig
from dltool.data.splits import Batch, Split
from dltool.errors import ConfigError


@dataclass
class Plan:
    """Where training pauses, counted in units: epochs, or optimizer steps when trainer.max_steps is set."""

    unit: str  # "epoch" | "step"
    total: int  # epochs, or optimizer steps
    val_every: int  # units between validation points
    checkpoint_every: int | None  # units between last.pt writes (None: at every validation point)
    batches_per_unit: int  # batches per epoch, or `accumulate` batches per optimizer step

    @property
    def points(self) -> int:
        """How many validation points the whole run has."""
        return -(-self.total // self.val_every)

    def next_stop(self, done: int) -> int:
        """The next pause after `done` units: an epoch end, a validation or checkpoint point, or the end."""
        stops = [self.total, (done // self.val_every + 1) * self.val_every]
        if self.checkpoint_every:
            stops.append((done // self.checkpoint_every + 1) * self.checkpoint_every)
        if self.unit == "epoch":
            stops.append(done + 1)
        return min(stops)

    def is_validation(self, done: int) -> bool:
        return done % self.val_every == 0 or done >= self.total

    def is_checkpoint(self, done: int) -> bool:
        if done >= self.total or self.checkpoint_every is None:
            return self.is_validation(done)
        return done % self.checkpoint_every == 0


def make_plan(t: TrainerConfig, batches_per_epoch: int) -> Plan:
    """The Plan for trainer.epochs / max_steps / val_every / checkpoint_every (one sentence on a bad value)."""
    unit = "step" if t.max_steps is not None else "epoch"
    total = t.max_steps if t.max_steps is not None else t.epochs
    for key, value in (("max_steps" if unit == "step" else "epochs", total), ("val_every", t.val_every),
                       ("checkpoint_every", t.checkpoint_every)):
        if value is not None and value < 1:
            raise ConfigError(f"trainer.{key}={value} must be at least 1 ({unit}s).")
    val_every = t.val_every or (1 if unit == "epoch" else max(1, batches_per_epoch // t.accumulate))
    return Plan(unit, total, min(val_every, total), t.checkpoint_every,
                batches_per_epoch if unit == "epoch" else t.accumulate)


def parse_max_time(value: object) -> float | None:
    """trainer.max_time as seconds: "DD:HH:MM:SS" (Lightning's format) or a number of seconds; None: no budget."""
    if value is None:
        return None
    text = str(value).strip()
    parts = text.split(":")
    try:
        if len(parts) == 1:
            seconds = float(text)
        elif len(parts) == 4:
            days, hours, minutes, secs = (int(x) for x in parts)
            seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
        else:
            raise ValueError
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"trainer.max_time={value!r} is not a time budget; use DD:HH:MM:SS (e.g. 00:02:30:00 for "
                          f"two and a half hours), a number of seconds > 0 (e.g. 9000), or null for none.")
    return seconds


class BatchStream:
    """Shuffled batches pass after pass; `take(n)` yields the next n, moved to the device."""

    def __init__(self, split: Split, batch_size: int, generator: torch.Generator, device: torch.device,
                 channels_last: bool = False) -> None:
        self.split, self.batch_size, self.generator, self.device = split, batch_size, generator, device
        self.channels_last = channels_last  # 4-D batches (N, C, H, W) stored as NHWC (trainer.channels_last)
        self.it: Iterator[Batch] | None = None
        self.start: torch.Tensor | None = None  # generator state when the current pass began
        self.index = 0  # batches taken from the current pass

    def next(self) -> Batch:
        while True:
            if self.it is None:
                self.start, self.index = self.generator.get_state(), 0
                self.it = iter(self.split.batches(self.batch_size, self.generator))
            try:
                x, y = next(self.it)
            except StopIteration:
                self.it = None
                continue
            self.index += 1
            x = x.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            return x, y.to(self.device, non_blocking=True)

    def take(self, n: int) -> Iterator[Batch]:
        for _ in range(n):
            yield self.next()

    def state_dict(self) -> dict:
        return {"start": self.start, "index": self.index}

    def load_state_dict(self, d: dict) -> None:
        """Re-draw the pass's order from its starting generator state and skip the batches already taken."""
        if d.get("start") is None or not d.get("index"):
            return
        now = self.generator.get_state()
        self.generator.set_state(d["start"])
        self.start, self.it = d["start"], iter(self.split.batches(self.batch_size, self.generator))
        for _ in range(d["index"]):
            next(self.it)
        self.index = d["index"]
        self.generator.set_state(now)  # the shuffle draws after the pass began (augmentation) continue from here


@dataclass
class Interval:
    """Training sums since the last validation point (they survive a checkpoint mid-interval)."""

    chunks: int = 0
    loss: float = 0.0  # sum of per-chunk mean loss x examples
    acc: float = 0.0
    seen: int = 0
    seconds: float = 0.0
    first: dict | None = None  # the only chunk's means, used as they are (a one-chunk interval is not re-averaged)

    has_acc: bool = True  # false for regression (no training accuracy)

    def add(self, out: dict, seconds: float) -> None:
        n = out.pop("examples")
        self.chunks, self.seen, self.seconds = self.chunks + 1, self.seen + n, self.seconds + seconds
        self.has_acc = "train_acc" in out
        self.loss, self.acc = self.loss + out["train_loss"] * n, self.acc + out.get("train_acc", 0.0) * n
        self.first = dict(out) if self.chunks == 1 else None

    def means(self) -> dict:
        if self.first is not None:
            return dict(self.first)
        out = {"train_loss": self.loss / max(self.seen, 1)}
        return {**out, "train_acc": self.acc / max(self.seen, 1)} if self.has_acc else out
