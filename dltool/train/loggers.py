"""Loggers (trainer.loggers): csv (metrics.csv + signals.csv), tensorboard (event files in the run dir), mlflow.

Both are callbacks that run after the metrics of an epoch are final (priority REPORT and after). The signal
figures (update_ratios.png, histograms.png, filters.png) are drawn once, at the end of fit.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import torch
import yaml
from torch.utils.tensorboard import SummaryWriter

from dltool.errors import ConfigError
from dltool.plots import read_png
from dltool.plots_signals import MAX_TILES, filter_grid, filters, histograms, update_ratios
from dltool.train.callbacks import LAST, REPORT, Callback, FitState, MetricsCSV, Monitor
from dltool.train.deferred import after_exit, detaching, run_later
from dltool.train.signals import COLUMNS, Signals, sample

log = logging.getLogger(__name__)

LOGGERS = ("csv", "tensorboard", "mlflow")  # mlflow: dltool/train/mlflow_logger.py, imported only when chosen
HISTOGRAM_INTERVAL = 30.0  # seconds between histogram epochs in TensorBoard (plus the first and the last)
HPARAMS = ("model.name", "optimizer.name", "optimizer.lr", "trainer.batch_size")  # always in the HParams table


def check_loggers(names: Sequence[str]) -> list[str]:
    for n in names:
        if n not in LOGGERS:
            raise ConfigError(f"trainer.loggers contains {n!r}; valid loggers: {', '.join(LOGGERS)} "
                              f"(a list, e.g. trainer.loggers=[csv] or trainer.loggers=[]).")
    return list(names)


def read_signals(path: Path) -> list[dict]:
    """signals.csv rows with numbers as floats (empty cells: None)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict = {"epoch": int(r["epoch"]), "name": r["name"], "kind": r["kind"]}
            row.update({k: (float(v) if v not in ("", None) else None) for k, v in r.items() if k not in row})
            rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


class CSVLogger(MetricsCSV):
    """metrics.csv (one row per epoch) and, with diagnostics on, signals.csv (one row per epoch x tensor/layer).

    signals.csv is appended to each epoch (rewriting it whole would grow with the run); a resume first cuts it
    back to the epochs the checkpoint holds.
    """

    def __init__(self, run_dir: Path, signals: Signals | None) -> None:
        super().__init__(run_dir / "metrics.csv")
        self.signals_path, self.signals = run_dir / "signals.csv", signals
        self.written = 0  # rows of signals.rows already in the file

    def on_fit_start(self, state: FitState) -> None:
        if self.signals is None:
            return
        keep = [r for r in read_signals(self.signals_path) if r["epoch"] <= len(state.history)] \
            if state.history and self.signals_path.exists() else []
        write_rows(self.signals_path, keep)

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        super().on_epoch_end(state, logs)
        if self.signals is not None:
            with open(self.signals_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore").writerows(
                    self.signals.rows[self.written:])
            self.written = len(self.signals.rows)


class SignalPlots(Callback):
    """update_ratios.png, histograms.png and filters.png at the end of fit (after Ctrl-C too, as the process exits)."""

    priority = REPORT

    def __init__(self, run_dir: Path, signals: Signals, input_shape: Sequence[int]) -> None:
        self.run_dir, self.signals, self.input_shape = run_dir, signals, tuple(input_shape)

    def on_fit_end(self, state: FitState) -> None:
        if state.preempted:  # exit fast: the resumed run draws them
            return
        s, run_dir, epoch = self.signals, self.run_dir, state.epoch
        rows = list(s.rows)
        weights = {r["name"] for r in rows if r["kind"] == "weight"}  # not biases / norm scales
        pair = None
        if s.first is not None and s.latest is not None:  # copied now: the model and signals move on
            pair = ({"acts": _np(s.first.acts), "grads": _np(s.first.grads, weights)},
                    {"acts": _np(s.latest.acts), "grads": _np(s.latest.grads, weights)},
                    s.first.rows[0]["epoch"] if s.first.rows else 1)
        grid, name, shown = first_layer_grid(state.model, self.input_shape)

        def draw() -> None:
            try:
                update_ratios(rows, run_dir / "update_ratios.png")
                if pair is not None:
                    histograms(pair[0], pair[1], pair[2], epoch, run_dir / "histograms.png")
                if grid is not None:
                    filters(grid, f"first-layer weights ({name}, epoch {epoch}{'; ' + shown if shown else ''})",
                            run_dir / "filters.png")
            except Exception:  # noqa: BLE001 - a figure must never cost the run
                log.warning("could not draw the signal figures", exc_info=True)

        # now; in a sweep while the next job trains; after Ctrl-C as the process exits (dltool/train/deferred.py)
        (after_exit if state.interrupted else run_later)(draw)


def _np(d: dict[str, torch.Tensor], keep: set[str] | None = None) -> dict:
    return {k: v.numpy() for k, v in d.items() if keep is None or k in keep}


def first_layer_grid(model: torch.nn.Module, input_shape: Sequence[int]):
    """(image grid of the first weight tensor, its name, how many of its filters the grid shows: "" when all,
    "64 of 96 filters shown" for a subset), or (None, '', '') when it is not image-shaped."""
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            total = p.shape[0]
            shown = f"{MAX_TILES} of {total} filters shown" if total > MAX_TILES else ""
            return filter_grid(p.detach().float().cpu().numpy(), input_shape), name.removeprefix("layers."), shown
    return None, "", ""


def hparams(run_dir: Path, cfg: dict) -> dict:
    """The swept/overridden keys of this job (Hydra's overrides.yaml) plus a few core ones, as scalars."""
    keys = list(HPARAMS)
    over = run_dir / ".hydra" / "overrides.yaml"
    if over.exists():
        for item in yaml.safe_load(over.read_text()) or []:
            key = str(item).split("=", 1)[0].lstrip("+~")
            if not key.startswith("hydra") and key not in keys:
                keys.append(key)
    out = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node = node.get("name")  # a group choice such as optimizer=sgd
        if isinstance(node, (int, float, str, bool)):
            out[key] = node
    return out


class TensorBoardLogger(Callback):
    """Event files in the run dir: metrics and lr as scalars, histograms, the filter grid and curves as images,
    hparams with the final metrics (HParams dashboard: `tensorboard --logdir outputs/multirun/SWEEP`)."""

    priority = LAST + 5  # after curves.png is drawn at the end of fit

    def __init__(self, run_dir: Path, signals: Signals | None, monitor: Monitor, cfg: dict,
                 input_shape: Sequence[int], interval: float = HISTOGRAM_INTERVAL) -> None:
        self.run_dir, self.signals, self.m, self.cfg = run_dir, signals, monitor, cfg
        self.input_shape, self.interval = tuple(input_shape), interval
        self.writer: SummaryWriter | None = None
        self.hist_epoch, self.hist_time = 0, -math.inf

    def on_fit_start(self, state: FitState) -> None:
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=len(state.history) + 1)

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        w, ep = self.writer, state.epoch
        for k, v in logs.items():
            if k not in ("epoch", "best") and isinstance(v, (int, float)):
                w.add_scalar(k, v, ep)
        if time.monotonic() - self.hist_time >= self.interval:
            self.histograms(state)

    def histograms(self, state: FitState) -> None:
        """Weights, gradients and activations of this epoch (the first, then at most every `interval` s, the last).

        Histograms cost ~1 ms each; every epoch they would cost more than the signals themselves.
        """
        w, ep = self.writer, state.epoch
        if self.signals is None or self.signals.latest is None or self.hist_epoch == ep:
            return
        weights = {n.removeprefix("layers."): p for n, p in state.model.named_parameters()
                   if p.requires_grad and p.dim() >= 2}  # weight matrices and filters, not biases / norm scales
        for name, p in weights.items():
            _histogram(w, f"weights/{name}", sample(p), ep)  # 4096 values: a histogram costs ~6 ms, not ~14
        for name, v in self.signals.latest.grads.items():
            if name in weights:
                _histogram(w, f"gradients/{name}", v, ep)
        for name, v in self.signals.latest.acts.items():
            _histogram(w, f"activations/{name}", v, ep)
        self.hist_epoch, self.hist_time = ep, time.monotonic()

    def on_fit_end(self, state: FitState) -> None:
        if self.writer is None:
            return
        w = self.writer
        if state.preempted:  # exit fast: the event files keep what was logged; the resumed run adds the rest
            w.close()
            self.writer = None
            return
        self.histograms(state)
        grid, name, _ = first_layer_grid(state.model, self.input_shape)
        if grid is not None:
            w.add_image(f"filters/{name}", grid, state.epoch, dataformats="HWC")
        if state.interrupted and detaching():  # curves.png is drawn as the process exits: its image then too
            after_exit(functools.partial(self.curves_image, None, state.epoch))
        else:
            self.curves_image(w, state.epoch)
        best = next((h for h in state.history if h["epoch"] == self.m.best_epoch), None)
        metrics = {f"hparam/best_{self.m.monitor}": self.m.best if self.m.best is not None else math.nan}
        if best is not None:
            keys = ("val_loss", "train_loss", *[k for k in best if k.startswith("val_")])  # every task's val metrics
            metrics.update({f"hparam/{k}": float(best[k]) for k in dict.fromkeys(keys) if k in best})
        w.add_hparams(hparams(self.run_dir, self.cfg), metrics, run_name=".", global_step=state.epoch)
        w.close()
        self.writer = None

    def curves_image(self, w: SummaryWriter | None, step: int) -> None:
        """curves.png as the "curves" image; w None: a writer of its own (one more event file in the run dir)."""
        curves = self.run_dir / "curves.png"
        if not curves.exists():
            return
        own = w is None
        w = w or SummaryWriter(log_dir=str(self.run_dir))
        w.add_image("curves", read_png(curves), step, dataformats="HWC")
        if own:
            w.close()


def _histogram(w: SummaryWriter, tag: str, values: torch.Tensor, step: int) -> None:
    v = values[torch.isfinite(values)]
    if v.numel():
        w.add_histogram(tag, v, step)
