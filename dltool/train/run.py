"""One training run from a typed config: build everything, fit, test the best checkpoint, write the run dir.

This is the flow of DESIGN.md in code; the CLI calls `train`, tests can call it straight from Python.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from dltool.config.schema import TrainConfig, to_dict
from dltool.data.augment import attach
from dltool.data.build import build_data
from dltool.data.splits import DataBundle
from dltool.errors import ConfigError
from dltool.models import finetune
from dltool.models.builder import BuiltModel, build_model
from dltool.models.init import initialize
from dltool.models.summary import as_text
from dltool.train import checkpoint as ckpt_io
from dltool.train.callbacks import (
    BestCheckpoint,
    Callback,
    Curves,
    EarlyStopping,
    FitState,
    LastCheckpoint,
    MetricsCSV,
    Monitor,
    RestoreBest,
)
from dltool.train.loop import Setup, evaluate, fit, pick_device
from dltool.train.losses import Penalty, build_loss
from dltool.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

PRECISIONS = ("32", "bf16", "16")


@dataclass
class Prepared:
    """Everything built from the config before the first step."""

    data: DataBundle
    built: BuiltModel
    setup: Setup
    device: torch.device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_precision(precision: str, device: torch.device) -> str:
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not valid; use 32, bf16 or 16 (mixed precision).")
    if precision == "16" and device.type != "cuda":
        log.warning("trainer.precision=16 needs a CUDA device; using bf16 autocast on %s instead", device.type)
        return "bf16"
    return precision


def prepare(cfg: TrainConfig) -> Prepared:
    """Seed, pick the device, build data, model (+ init), loss, penalty, optimizer and schedule."""
    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.epochs < 1 or t.batch_size < 1 or t.accumulate < 1:
        bad = next(k for k in ("epochs", "batch_size", "accumulate") if getattr(t, k) < 1)
        raise ConfigError(f"trainer.{bad}={getattr(t, bad)} must be at least 1.")
    seed_everything(t.seed)
    device = pick_device(t.device)
    data = build_data(cfg.data, device)
    built = build_model(cfg.model, data.input_shape, data.num_classes)
    initialize(built.model, cfg.init, built.layer_inits)
    lr_mults = finetune.apply(built, cfg.model)  # pretrained weights, frozen layers, lr multipliers
    model = built.model.to(device)
    penalty = Penalty(model, cfg.regularization)
    opt = build_optimizer(model, cfg.optimizer, cfg.regularization.apply_to_bias, lr_mults)
    sched, interval = build_scheduler(opt, cfg.scheduler, t.epochs, data.train.num_batches(t.batch_size), t.mode,
                                      cfg.optimizer.lr)
    setup = Setup(model, build_loss(cfg.loss), opt, sched, interval, penalty if penalty.active else None, device,
                  resolve_precision(t.precision, device), t.accumulate, cfg.regularization.clip_grad_norm,
                  cfg.regularization.clip_grad_value, augment=attach(data, cfg.augment.ops))
    return Prepared(data, built, setup, device)


def train(cfg: TrainConfig, run_dir: Path, extra_callbacks: list[Callback] | None = None,
          reporter: Callback | None = None, prepared: Prepared | None = None, writer: bool = True) -> dict:
    """Train per cfg, writing config.yaml, checkpoints/, metrics.csv, curves.png, summary.json to run_dir.

    writer=False (ranks > 0 of a distributed run): the same training and decisions, nothing written."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    p = prepared or prepare(cfg)
    s, data, t = p.setup, p.data, cfg.trainer
    cfg_dict = to_dict(cfg)  # once: converting the dataclasses costs milliseconds, too much per epoch
    if writer:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
        (run_dir / "model_summary.txt").write_text(as_text(p.built))

    monitor = Monitor(t.monitor, t.mode, t.min_delta)
    best, callbacks = standard_callbacks(cfg, monitor, run_dir)
    if not writer:  # keep the callbacks that decide (best epoch, early stopping, restore), drop the writers
        callbacks = [cb for cb in callbacks if isinstance(cb, (BestCheckpoint, EarlyStopping, RestoreBest))]
    callbacks += ([reporter] if reporter is not None else []) + list(extra_callbacks or [])

    generator = torch.Generator().manual_seed(t.seed)
    state = FitState(s.model, run_dir, epochs=t.epochs, monitor=t.monitor)
    stateful = {"best": best}  # early stopping derives its count from the monitor's best epoch

    def make_checkpoint() -> dict:
        return {
            "model": s.model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None,
            "epoch": state.epoch,
            "history": list(state.history),
            "callbacks": {k: cb.state_dict() for k, cb in stateful.items()},
            "config": cfg_dict,
            "norm": data.norm,
            "class_names": list(data.class_names),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "layout": data.layout,
            "monitor": {"name": t.monitor, "mode": t.mode, "best": monitor.best, "best_epoch": monitor.best_epoch},
            "rng": ckpt_io.rng_state(generator),
        }

    state.make_checkpoint = make_checkpoint if writer else None
    start_epoch = resume_from(cfg.resume, s, state, stateful, generator) if cfg.resume else 0
    if start_epoch >= t.epochs:
        raise ConfigError(f"resume: the run already trained {start_epoch} epochs and trainer.epochs={t.epochs}; "
                          f"raise trainer.epochs to train further.")
    fit(s, data, state, callbacks, t.batch_size, generator, start_epoch)
    return finish(cfg, p, state, monitor, run_dir, time.perf_counter() - t0) if writer else {}


def standard_callbacks(cfg: TrainConfig, monitor: Monitor, run_dir: Path) -> tuple[BestCheckpoint, list[Callback]]:
    """best.pt, early stopping, metrics.csv, last.pt, curves.png (and restore_best_weights); they run by priority."""
    t = cfg.trainer
    best = BestCheckpoint(monitor, run_dir / "checkpoints" / "best.pt", ckpt_io.save)
    stopper = EarlyStopping(monitor, t.patience, t.stopping_threshold, t.divergence_threshold, t.start_from_epoch)
    last = LastCheckpoint(run_dir / "checkpoints" / "last.pt", ckpt_io.save, best.path, ckpt_io.copy_file)
    callbacks: list[Callback] = [best, stopper, MetricsCSV(run_dir / "metrics.csv"), last,
                                 Curves(run_dir / "curves.png", monitor)]
    return best, callbacks + ([RestoreBest(best)] if t.restore_best_weights else [])


def resume_from(path: str, s: Setup, state: FitState, stateful: dict, generator: torch.Generator) -> int:
    """Load last.pt (of a run dir, or a checkpoint file) into the freshly built objects; return its epoch."""
    src = Path(path)
    ck = ckpt_io.load(src / "checkpoints" / "last.pt" if src.is_dir() else src, s.device)
    s.model.load_state_dict(ck["model"])
    s.optimizer.load_state_dict(ck["optimizer"])
    if s.scheduler is not None and ck.get("scheduler") is not None:
        if s.interval == "step" and ck["scheduler"].get("total_steps") != s.scheduler.total_steps:
            raise ConfigError("resume: scheduler.name=onecycle plans its whole cycle from trainer.epochs, so "
                              "trainer.epochs cannot change on resume; keep the original value.")
        s.scheduler.load_state_dict(ck["scheduler"])
        if s.interval == "epoch":  # recompute from the (possibly longer) schedule instead of the stored lr
            for g, base, f in zip(s.optimizer.param_groups, s.scheduler.base_lrs, s.scheduler.lr_lambdas):
                g["lr"] = base * f(s.scheduler.last_epoch)
    state.history = list(ck["history"])
    for k, cb in stateful.items():
        cb.load_state_dict(ck["callbacks"][k])
    ckpt_io.set_rng_state(ck["rng"], generator)
    log.info("resumed from %s at epoch %d", src, ck["epoch"])
    return int(ck["epoch"])


def finish(cfg: TrainConfig, p: Prepared, state: FitState, monitor: Monitor, run_dir: Path, seconds: float) -> dict:
    """Evaluate the best checkpoint on the test split and write summary.json."""
    best_path = run_dir / "checkpoints" / "best.pt"
    summary = {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "epochs_run": state.epoch,
        "monitor": cfg.trainer.monitor,
        "mode": cfg.trainer.mode,
        "best_value": monitor.best,
        "best_epoch": monitor.best_epoch,
        "stop_reason": state.stop_reason or f"finished all {cfg.trainer.epochs} epochs",
        "stopped_early": state.stop,
        "diverged": state.diverged,
        "seconds": round(seconds, 2),
        "params": sum(q.numel() for q in p.setup.model.parameters()),
    }
    if best_path.exists() and cfg.trainer.eval_test and p.data.test is not None:
        best = ckpt_io.load(best_path, p.device)
        p.setup.model.load_state_dict(best["model"])
        test = evaluate(p.setup.model, p.setup.loss_fn, p.data.test, cfg.trainer.batch_size, p.device,
                        p.setup.precision)
        summary.update(test_loss=test["loss"], test_acc=test["acc"])
    summary["seconds"] = round(seconds, 2)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
