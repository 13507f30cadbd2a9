"""Callbacks: on_fit_start / on_epoch_start / on_batch_end / on_epoch_end(state, logs) / on_fit_end.

A flat logs dict, a stop flag, and an explicit `priority` (lower runs first) instead of list order:
the best checkpoint (which sets `logs["best"]` and the monitor's best epoch) runs before early
stopping, which reads them, and last.pt runs after both so it records their state.
`mode` (min/max) is always explicit. Callbacks that matter for resuming expose state_dict().
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from dltool.console import epoch_columns, epoch_header, epoch_line, progress_bar
from dltool.errors import ConfigError
from dltool.plots import learning_curves
from dltool.tasks import HEADLINE, LABELS, TASKS
from dltool.train.deferred import after_exit

log = logging.getLogger(__name__)


@dataclass
class FitState:
    """What callbacks may read (and the one thing they may set: stop / stop_reason)."""

    model: torch.nn.Module
    run_dir: Path
    epoch: int = 0  # 1-based, the epoch just finished
    epochs: int = 0
    history: list[dict] = field(default_factory=list)
    stop: bool = False
    stop_reason: str = ""
    diverged: bool = False  # a non-finite loss or a metric past trainer.divergence_threshold
    monitor: str = "val_loss"
    make_checkpoint: Callable[[], dict] | None = None
    step: int = 0  # optimizer steps done
    progress: dict = field(default_factory=dict)  # where a resumed run continues (see train/loop.py fit)
    checkpoint_due: bool = True  # this validation point is also a last.pt point (trainer.checkpoint_every)
    task: str = "classification"  # which metrics the logs hold (dltool.tasks)
    rank_rng: list | None = None  # under DDP: every rank's own generators at this point (dropout differs by rank)
    preempted: bool = False  # a signal stopped training after an optimizer step (train/preempt.py)
    interrupted: bool = False  # Ctrl-C: the figures are drawn after the exit (train/deferred.py after_exit)
    eval_model: torch.nn.Module | None = None  # trainer.ema_decay: the averaged weights validation reads (best.pt)

    @property
    def validated(self) -> torch.nn.Module:
        """The weights validation reads: the EMA of the weights, or the model itself."""
        return self.eval_model if self.eval_model is not None else self.model


# Priorities: who must see an epoch's logs before whom (lower first; ties keep list order).
FIRST, BEFORE_STOP, STOP, REPORT, LAST = 0, 10, 20, 50, 90


class Callback:
    priority: int = REPORT

    def on_fit_start(self, state: FitState) -> None: ...
    def on_epoch_start(self, state: FitState, num_batches: int) -> None: ...
    def on_batch_end(self, state: FitState) -> None: ...
    def on_epoch_end(self, state: FitState, logs: dict) -> None: ...
    def on_checkpoint(self, state: FitState) -> None: ...  # a trainer.checkpoint_every point between validations
    def on_fit_end(self, state: FitState) -> None: ...
    def on_summary(self, summary: dict) -> None: ...  # after summary.json is written (the run is complete)
    def state_dict(self) -> dict: return {}
    def load_state_dict(self, d: dict) -> None: ...


class Monitor:
    """Improvement test shared by checkpointing and early stopping (same metric, same mode)."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if mode not in ("min", "max"):
            raise ConfigError(f"trainer.mode={mode!r} is not valid; use min (losses) or max (accuracies).")
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best: float | None = None
        self.best_epoch = 0

    def value(self, logs: dict) -> float:
        if self.monitor not in logs:
            raise ConfigError(f"trainer.monitor={self.monitor!r} is not a logged metric; valid: "
                              f"{', '.join(k for k in logs if k not in ('epoch',))}.")
        return float(logs[self.monitor])

    def improved(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.best is None:
            return True
        return v < self.best - self.min_delta if self.mode == "min" else v > self.best + self.min_delta

    def reached(self, v: float, threshold: float) -> bool:
        return v <= threshold if self.mode == "min" else v >= threshold


class BestCheckpoint(Callback):
    """Rewrite checkpoints/best.pt whenever the monitored metric improves by more than min_delta."""

    priority = BEFORE_STOP  # sets logs["best"] and the monitor's best epoch, which early stopping reads

    def __init__(self, monitor: Monitor, path: Path, save: Callable[[dict, Path], None]) -> None:
        self.m, self.path, self.save = monitor, path, save
        self.best_weights: dict | None = None

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        v = self.m.value(logs)
        if self.m.improved(v):
            self.m.best, self.m.best_epoch = v, state.epoch
            logs["best"] = True
            self.best_weights = {k: v.detach().clone() for k, v in state.validated.state_dict().items()}
            if state.make_checkpoint is not None:
                self.save(state.make_checkpoint(), self.path)

    def state_dict(self) -> dict:
        return {"best": self.m.best, "best_epoch": self.m.best_epoch}

    def load_state_dict(self, d: dict) -> None:
        self.m.best, self.m.best_epoch = d["best"], d["best_epoch"]


class TopK(Callback):
    """trainer.save_top_k: the k best validated epochs by the monitored metric (k=-1: every epoch), each in
    checkpoints/epochNNN-<monitor>=<value>.pt; an epoch pushed out of the k best loses its file.

    Ranked by value in the monitor's mode; a tie keeps the earlier epoch; a non-finite value never enters.
    """

    priority = FIRST  # before best.pt is written: best.pt and its copy last.pt record this epoch's ranking

    def __init__(self, monitor: Monitor, k: int, folder: Path, save: Callable[[dict, Path], None]) -> None:
        self.m, self.k, self.folder, self.save = monitor, k, folder, save
        self.kept: list[dict] = []  # {"epoch", "value", "file"}, best first

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        v = self.m.value(logs)
        if not math.isfinite(v) or state.make_checkpoint is None:
            return
        ranked = sorted([*self.kept, {"epoch": state.epoch, "value": v, "file": ""}],
                        key=lambda e: (e["value"] if self.m.mode == "min" else -e["value"], e["epoch"]))
        keep = ranked if self.k < 0 else ranked[:self.k]
        new = next((e for e in keep if e["epoch"] == state.epoch), None)
        if new is None:
            return
        new["file"] = f"epoch{state.epoch:03d}-{self.m.monitor}={v:.4f}.pt"
        self.save(state.make_checkpoint(), self.folder / new["file"])
        for gone in ranked[len(keep):]:
            (self.folder / gone["file"]).unlink(missing_ok=True)
        self.kept = keep

    def state_dict(self) -> dict:
        return {"kept": [dict(e) for e in self.kept]}

    def load_state_dict(self, d: dict) -> None:
        self.kept = [dict(e) for e in d.get("kept", [])]


class EarlyStopping(Callback):
    """Keras-style early stopping on the shared Monitor, plus divergence and non-finite loss checks."""

    priority = STOP

    def __init__(self, monitor: Monitor, patience: int | None, stopping_threshold: float | None = None,
                 divergence_threshold: float | None = None, start_from_epoch: int = 0, baseline: float | None = None,
                 min_change: float = 0.0, min_change_epochs: int | None = None) -> None:
        self.m = monitor
        self.patience, self.stopping_threshold = patience, stopping_threshold
        self.divergence_threshold, self.start_from_epoch = divergence_threshold, start_from_epoch
        self.baseline, self.min_change, self.min_change_epochs = baseline, min_change, min_change_epochs
        if min_change_epochs is not None and min_change_epochs < 1:
            raise ConfigError(f"trainer.min_change_epochs={min_change_epochs} must be at least 1 (or null: off).")

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        for key in ("train_loss", "val_loss"):
            if key in logs and not math.isfinite(logs[key]):
                state.diverged = True
                return self._stop(state, f"{key} became {logs[key]} at epoch {state.epoch}: training diverged. "
                                         f"A NaN/inf loss usually means the learning rate is too high; try "
                                         f"optimizer.lr 10x smaller, or gradient clipping "
                                         f"(regularization.clip_grad_norm=1.0).")
        v = self.m.value(logs)
        if self.divergence_threshold is not None and not self.m.reached(v, self.divergence_threshold) \
                and self._beyond(v, self.divergence_threshold):
            state.diverged = True
            return self._stop(state, f"{self.m.monitor}={v:.4g} is past the divergence threshold "
                                     f"{self.divergence_threshold} at epoch {state.epoch}; try a lower learning rate.")
        if self.stopping_threshold is not None and self.m.reached(v, self.stopping_threshold):
            return self._stop(state, f"{self.m.monitor}={v:.4g} reached the target {self.stopping_threshold} "
                                     f"at epoch {state.epoch}.")
        if state.epoch <= self.start_from_epoch:
            return
        reason = self._slow_change(state) or self._no_improvement(state, logs)
        if reason:
            self._stop(state, reason)

    def _no_improvement(self, state: FitState, logs: dict) -> str:
        """Keras's rule: never on an improving epoch; patience 0 and 1 both stop at the first epoch without one.

        With a baseline, only an epoch that also beats the baseline restarts the count (Keras's `baseline`).
        """
        if self.patience is None or logs.get("best"):
            return ""
        beat = [h["epoch"] for h in state.history if h.get("best") and h["epoch"] > self.start_from_epoch
                and self._beats_baseline(float(h[self.m.monitor]))]
        waited = state.epoch - max(beat[-1] if beat else 0, self.start_from_epoch)
        if waited < max(self.patience, 1):
            return ""
        if self.baseline is not None and not beat:
            return (f"{self.m.monitor} did not beat the baseline {self.baseline} within {waited} epochs "
                    f"(best {self.m.best:.4g} at epoch {self.m.best_epoch}).")
        return (f"no improvement of {self.m.monitor} by more than {self.m.min_delta} for {waited} "
                f"epoch{'s' if waited > 1 else ''} "
                f"(best {self.m.best:.4g} at epoch {self.m.best_epoch}).")

    def _beats_baseline(self, v: float) -> bool:
        if self.baseline is None:
            return True
        d = self.m.min_delta
        return v < self.baseline - d if self.m.mode == "min" else v > self.baseline + d

    def _slow_change(self, state: FitState) -> str:
        """The average change per epoch of the monitored metric over the last N epochs is below min_change."""
        n = self.min_change_epochs
        if n is None or state.epoch - self.start_from_epoch < n or len(state.history) <= n:
            return ""
        now, then = (float(state.history[i][self.m.monitor]) for i in (-1, -1 - n))
        gain = (then - now if self.m.mode == "min" else now - then) / n  # improvement per epoch (signed)
        if gain >= self.min_change:
            return ""
        return (f"{self.m.monitor} changed by {gain:+.3g} per epoch on average over the last {n} epochs "
                f"({then:.4g} -> {now:.4g}), less than trainer.min_change={self.min_change:g}.")

    def _beyond(self, v: float, threshold: float) -> bool:
        return v > threshold if self.m.mode == "min" else v < threshold

    @staticmethod
    def _stop(state: FitState, reason: str) -> None:
        state.stop, state.stop_reason = True, reason


class LastCheckpoint(Callback):
    """checkpoints/last.pt at every validation point, or every trainer.checkpoint_every (after the callbacks
    whose state it records).

    In an epoch that improved, best.pt was just written with the same content: copy the file instead
    of pickling the checkpoint a second time (the copy is atomic too).
    """

    priority = LAST  # after every callback whose state it records

    def __init__(self, path: Path, save: Callable[[dict, Path], None], best: Path | None = None,
                 copy: Callable[[Path, Path], None] | None = None) -> None:
        self.path, self.save, self.best, self.copy = path, save, best, copy

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        if not state.checkpoint_due:
            return
        if logs.get("best") and self.best is not None and self.copy is not None:
            self.copy(self.best, self.path)
        else:
            self.on_checkpoint(state)

    def on_checkpoint(self, state: FitState) -> None:
        if state.make_checkpoint is not None:
            self.save(state.make_checkpoint(), self.path)


class RestoreBest(Callback):
    """At the end of fit, put the best epoch's weights back into the model (restore_best_weights)."""

    priority = LAST

    def __init__(self, best: BestCheckpoint) -> None:
        self.best = best

    def on_fit_end(self, state: FitState) -> None:
        if self.best.best_weights is not None:
            state.validated.load_state_dict(self.best.best_weights)


class EpochLog(Callback):
    """One INFO line per epoch for the run dir's train.log (the library log; the terminal shows warnings only)."""

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        numbers = "  ".join(f"{k}={v:.4g}" for k, v in logs.items() if k not in ("epoch", "best")
                            and isinstance(v, (int, float)))
        log.info("epoch %d/%d  %s%s", logs["epoch"], state.epochs, numbers, "  * best" if logs.get("best") else "")


class MetricsCSV(Callback):
    """metrics.csv: one row per epoch, rewritten whole each epoch so it always matches the history."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        keys: list[str] = []
        for row in state.history:
            keys += [k for k in row if k not in keys and k != "best"]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(state.history)
        tmp.replace(self.path)


def curve_metric(task: str, monitor: str) -> str:
    """curves.png's second panel: the monitored metric when it is not a loss, else accuracy where the task has
    one, else the task's headline metric (R² for regression)."""
    name = monitor.split("_", 1)[1] if "_" in monitor else monitor
    if name != "loss" and name in LABELS:
        return name
    return "acc" if TASKS[task].train_acc else HEADLINE[task]


class Curves(Callback):
    """curves.png (loss and accuracy, train vs val, best epoch marked).

    Redrawn at most every `interval` seconds while training (drawing costs ~0.1 s, more than a
    small epoch), and at most every 20 times the last drawing's cost (a loaded machine draws slowly
    too: this keeps drawing under ~5% of the run), and always at the end.
    """

    def __init__(self, path: Path, monitor: Monitor, interval: float = 15.0, unit: str = "epoch") -> None:
        self.path, self.m, self.interval, self.unit = path, monitor, interval, unit
        self.last = time.monotonic()
        self.cost = 0.0

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        if time.monotonic() - self.last >= max(self.interval, 20 * self.cost):
            self.draw(state)

    def on_fit_end(self, state: FitState) -> None:
        if state.interrupted:  # Ctrl-C: drawn as the process exits, off the exit path
            after_exit(functools.partial(self.draw, state))
        elif not state.preempted:  # a preempted run exits fast (the resumed run draws them all)
            self.draw(state)

    def draw(self, state: FitState) -> None:
        t0 = time.monotonic()
        if state.history:
            metric = curve_metric(state.task, self.m.monitor)
            learning_curves(state.history, self.path, self.m.best_epoch or None, self.m.monitor, self.unit, metric,
                            LABELS[metric])
        self.last = time.monotonic()
        self.cost = self.last - t0


class EpochReporter(Callback):
    """A progress bar within each epoch (on a terminal) and one aligned line per epoch."""

    def __init__(self, epochs: int, monitor: str, show_progress: bool = True) -> None:
        self.epochs, self.monitor, self.show_progress = epochs, monitor, show_progress
        self.progress = None
        self.task = None
        self.header_done = False

    def on_fit_start(self, state: FitState) -> None:
        self.progress = progress_bar() if self.show_progress else None
        if self.progress is not None:
            self.progress.start()

    def on_epoch_start(self, state: FitState, num_batches: int) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task("train", total=num_batches, epoch=f"{state.epoch + 1}/{self.epochs}")

    def on_batch_end(self, state: FitState) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        if not self.header_done:
            self.columns = epoch_columns(state.task, self.monitor)
            epoch_header(self.columns)
            self.header_done = True
        epoch_line(logs, self.epochs, self.monitor, self.columns)

    def on_fit_end(self, state: FitState) -> None:
        if self.progress is not None:
            self.progress.stop()
