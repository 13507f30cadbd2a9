"""One training run from a typed config: build everything, fit, test the best checkpoint, write the run dir.

This is the flow of DESIGN.md in code; the CLI calls `train`, tests can call it straight from Python.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

from dltool.config.schema import TrainConfig, to_dict
from dltool.data.build import build_data
from dltool.data.splits import DataBundle
from dltool.errors import ConfigError
from dltool.models import finetune
from dltool.models.builder import BuiltModel, build_model
from dltool.models.init import initialize
from dltool.models.summary import as_text
from dltool.registry import resolve
from dltool.train import checkpoint as ckpt_io
from dltool.train.callbacks import (
    BestCheckpoint,
    Callback,
    Curves,
    EarlyStopping,
    EpochLog,
    FitState,
    LastCheckpoint,
    Monitor,
    RestoreBest,
)
from dltool.train.infer import resolve_precision
from dltool.train.loggers import CSVLogger, SignalPlots, TensorBoardLogger, check_loggers
from dltool.train.loop import Setup, evaluate, fit, pick_device
from dltool.train.losses import Penalty, build_loss, check_head
from dltool.train.optim import build_optimizer, build_scheduler
from dltool.train.restore import describe_mismatch
from dltool.train.signals import Signals
from dltool.train.steps import Plan, make_plan

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything built from the config before the first step."""

    data: DataBundle
    built: BuiltModel
    setup: Setup
    device: torch.device
    plan: Plan


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def augmenter(data: DataBundle, ops: list) -> Callable | None:
    """Setup.augment for augment.ops (None without ops); dltool.data.augment and torchvision (~3 s to import)
    load through the registry's resolver only when there is something to augment."""
    return resolve("dltool.data.augment:attach")(data, ops) if ops else None


def prepare(cfg: TrainConfig) -> Prepared:
    """Seed, pick the device, build data, model (+ init), loss, penalty, optimizer and schedule."""
    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.epochs < 1 or t.batch_size < 1 or t.accumulate < 1:
        bad = next(k for k in ("epochs", "batch_size", "accumulate") if getattr(t, k) < 1)
        raise ConfigError(f"trainer.{bad}={getattr(t, bad)} must be at least 1.")
    check_loggers(t.loggers)
    if t.min_change_epochs is not None and t.min_change_epochs < 1:
        raise ConfigError(f"trainer.min_change_epochs={t.min_change_epochs} must be at least 1 (or null: off).")
    seed_everything(t.seed)
    device = pick_device(t.device)
    data = build_data(cfg.data, device)
    check_monitor(t.monitor, data)
    check_sizes(cfg, data)
    plan = make_plan(t, data.train.num_batches(t.batch_size))
    check_warmup(cfg, plan)
    built = build_model(cfg.model, data.input_shape, data.num_classes)
    check_head(cfg.loss.name, built.trace[-1].out_shape[-1] if built.trace else data.num_classes, data.num_classes)
    initialize(built.model, cfg.init, built.layer_inits)
    lr_mults = finetune.apply(built, cfg.model)  # pretrained weights, frozen layers, lr multipliers
    model = built.model.to(device, memory_format=torch.channels_last) if t.channels_last else built.model.to(device)
    penalty = Penalty(model, cfg.regularization)
    opt = build_optimizer(model, cfg.optimizer, cfg.regularization.apply_to_bias, lr_mults)
    if plan.unit == "step":  # the schedule's epochs keys count optimizer steps
        sched, interval = build_scheduler(opt, cfg.scheduler, plan.total, 1, t.mode, cfg.optimizer.lr)
        interval = ("constant" if cfg.scheduler.name == "none" else "step") if interval == "epoch" else interval
    else:
        steps_per_epoch = -(-data.train.num_batches(t.batch_size) // t.accumulate)  # optimizer steps, not batches
        sched, interval = build_scheduler(opt, cfg.scheduler, t.epochs, steps_per_epoch, t.mode, cfg.optimizer.lr)
    setup = Setup(model, build_loss(cfg.loss), opt, sched, interval, penalty if penalty.active else None, device,
                  resolve_precision(t.precision, device), t.accumulate, cfg.regularization.clip_grad_norm,
                  cfg.regularization.clip_grad_value, augment=augmenter(data, cfg.augment.ops), compile=t.compile,
                  channels_last=t.channels_last)
    return Prepared(data, built, setup, device, plan)


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


def check_monitor(monitor: str, data: DataBundle) -> None:
    """Without a validation split only training metrics can be monitored."""
    if data.val is None and not monitor.startswith("train_"):
        raise ConfigError(f"trainer.monitor={monitor!r} needs a validation split, but data.val_fraction=0 leaves "
                          f"none; monitor train_loss (trainer.mode=min) or train_acc (trainer.mode=max) instead.")


def train(cfg: TrainConfig, run_dir: Path, extra_callbacks: list[Callback] | None = None,
          reporter: Callback | None = None, prepared: Prepared | None = None,
          on_start: Callable[[], None] | None = None, writer: bool = True) -> dict:
    """Train per cfg, writing config.yaml, checkpoints/, metrics.csv, curves.png, summary.json to run_dir.
    A resume is checked in full before anything is written (a refused one changes nothing); on_start runs right
    before the first write. writer=False (ranks > 0 of a distributed run): same training and decisions, no files."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    p = prepared or prepare(cfg)
    s, data, t = p.setup, p.data, cfg.trainer
    cfg_dict = to_dict(cfg)  # once: converting the dataclasses costs milliseconds, too much per epoch

    monitor = Monitor(t.monitor, t.mode, t.min_delta)
    best, callbacks = standard_callbacks(cfg, monitor, run_dir)
    if writer:
        callbacks += observers(cfg, p, monitor, run_dir, cfg_dict)
    else:  # keep the callbacks that decide (best epoch, early stopping, restore), drop the writers
        callbacks = [cb for cb in callbacks if isinstance(cb, (BestCheckpoint, EarlyStopping, RestoreBest))]
    callbacks += ([reporter] if reporter is not None else []) + list(extra_callbacks or [])

    generator = torch.Generator().manual_seed(t.seed)
    state = FitState(s.model, run_dir, epochs=t.epochs, monitor=t.monitor)
    stateful = {"best": best}  # early stopping derives its count from the monitor's best epoch
    state.make_checkpoint = checkpoint_maker(p, state, stateful, cfg_dict, monitor, generator) if writer else None
    if cfg.resume:
        resume_from(cfg.resume, s, state, stateful, generator)
        check_resume_length(state, p.plan)
    if writer:
        if on_start is not None:
            on_start()
        write_run_files(run_dir, cfg_dict, p)
        log_start(cfg, p, run_dir, state)
    fit(s, data, state, callbacks, t.batch_size, generator, p.plan)
    return finish(cfg, p, state, monitor, run_dir, time.perf_counter() - t0) if writer else {}


def checkpoint_maker(p: Prepared, state: FitState, stateful: dict, cfg_dict: dict, monitor: Monitor,
                     generator: torch.Generator) -> Callable[[], dict]:
    """A self-contained checkpoint as plain data: weights, optimizer, schedule, history, config, data stats, RNG."""
    s, data = p.setup, p.data

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
            "feature_names": data.feature_names,
            "monitor": {"name": monitor.monitor, "mode": monitor.mode, "best": monitor.best,
                        "best_epoch": monitor.best_epoch},
            "rng": ckpt_io.rng_state(generator),
            "progress": state.progress,
        }

    return make_checkpoint


def log_start(cfg: TrainConfig, p: Prepared, run_dir: Path, state: FitState) -> None:
    """train.log: what this run is (and where a resume continues)."""
    data = p.data
    log.info("run %s in %s: %s examples (train/val/test), %d parameters, device %s, precision %s", cfg.name, run_dir,
             "/".join(str(len(x)) if x is not None else "-" for x in (data.train, data.val, data.test)),
             sum(q.numel() for q in p.setup.model.parameters()), p.device, p.setup.precision)
    if cfg.resume:
        log.info("resumed from %s at epoch %d", cfg.resume, state.epoch)


def write_run_files(run_dir: Path, cfg_dict: dict, p: Prepared) -> None:
    """config.yaml and model_summary.txt (stale temp files of a killed checkpoint write are removed first)."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for tmp in (run_dir / "checkpoints").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    (run_dir / "model_summary.txt").write_text(as_text(p.built))


def standard_callbacks(cfg: TrainConfig, monitor: Monitor, run_dir: Path) -> tuple[BestCheckpoint, list[Callback]]:
    """best.pt, early stopping, metrics.csv, last.pt, curves.png (and restore_best_weights); they run by priority."""
    t = cfg.trainer
    best = BestCheckpoint(monitor, run_dir / "checkpoints" / "best.pt", ckpt_io.save)
    stopper = EarlyStopping(monitor, t.patience, t.stopping_threshold, t.divergence_threshold, t.start_from_epoch,
                            t.baseline, t.min_change, t.min_change_epochs)
    last = LastCheckpoint(run_dir / "checkpoints" / "last.pt", ckpt_io.save, best.path, ckpt_io.copy_file)
    callbacks: list[Callback] = [best, stopper, last,
                                 Curves(run_dir / "curves.png", monitor,
                                        unit="step" if t.max_steps is not None else "epoch"), EpochLog()]
    return best, callbacks + ([RestoreBest(best)] if t.restore_best_weights else [])


def check_resume_length(state: FitState, plan: Plan) -> None:
    done = int(state.progress.get("done", state.epoch))
    if done >= plan.total:
        key = "max_steps" if plan.unit == "step" else "epochs"
        raise ConfigError(f"resume: the run already trained {done} {plan.unit}s and trainer.{key}={plan.total}; "
                          f"raise trainer.{key} to train further.")


def observers(cfg: TrainConfig, p: Prepared, monitor: Monitor, run_dir: Path, cfg_dict: dict) -> list[Callback]:
    """Per-layer signals (trainer.diagnostics) and the loggers (trainer.loggers: csv, tensorboard)."""
    t, s = cfg.trainer, p.setup
    loggers = check_loggers(t.loggers)
    signals = None
    out: list[Callback] = []
    if t.diagnostics:
        probe = p.data.val if p.data.val is not None else p.data.train  # no validation split: a training batch
        x, y = next(iter(probe.batches(t.batch_size)))  # the probe: the first validation batch, fixed
        steps = -(-p.plan.next_stop(0) * p.plan.batches_per_unit // t.accumulate)  # optimizer steps per pause
        signals = Signals(s.optimizer, steps, s.loss_fn, (x.to(p.device), y.to(p.device)))
        out += [signals, SignalPlots(run_dir, signals, p.data.input_shape)]
    if "csv" in loggers:
        out.append(CSVLogger(run_dir, signals))
    if "tensorboard" in loggers:
        out.append(TensorBoardLogger(run_dir, signals, monitor, cfg_dict, p.data.input_shape))
    return out


def resume_from(path: str, s: Setup, state: FitState, stateful: dict, generator: torch.Generator) -> int:
    """Load last.pt (of a run dir, or a checkpoint file) into the freshly built objects; return its epoch."""
    src = Path(path)
    file = src / "checkpoints" / "last.pt" if src.is_dir() else src
    ck = ckpt_io.load(file, s.device)
    try:
        s.model.load_state_dict(ck["model"])
        s.optimizer.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError) as ex:
        raise ConfigError(f"resume: {file} does not match this config's model or optimizer "
                          f"({describe_mismatch(ex)}); resume with the run's own config.yaml.") from None
    if s.scheduler is not None and ck.get("scheduler") is not None:
        total = ck["scheduler"].get("total_steps")
        if total is not None and total != s.scheduler.total_steps:
            raise ConfigError("resume: scheduler.name=onecycle plans its whole cycle from trainer.epochs, so "
                              "trainer.epochs cannot change on resume; keep the original value.")
        s.scheduler.load_state_dict(ck["scheduler"])
        if isinstance(s.scheduler, torch.optim.lr_scheduler.LambdaLR):  # lr from the (maybe longer) schedule
            for g, base, f in zip(s.optimizer.param_groups, s.scheduler.base_lrs, s.scheduler.lr_lambdas):
                g["lr"] = base * f(s.scheduler.last_epoch)
    state.history, state.epoch = list(ck["history"]), int(ck["epoch"])
    state.progress = dict(ck.get("progress") or {"done": int(ck["epoch"])})
    for k, cb in stateful.items():
        cb.load_state_dict(ck["callbacks"][k])
    ckpt_io.set_rng_state(ck["rng"], generator)
    return int(ck["epoch"])


def finish(cfg: TrainConfig, p: Prepared, state: FitState, monitor: Monitor, run_dir: Path, seconds: float) -> dict:
    """Evaluate the best checkpoint on the test split and write summary.json."""
    best_path = run_dir / "checkpoints" / "best.pt"
    summary = {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "epochs_run": state.epoch,
        "steps_run": state.step,
        "monitor": cfg.trainer.monitor,
        "mode": cfg.trainer.mode,
        "best_value": monitor.best,
        "best_epoch": monitor.best_epoch,
        "stop_reason": state.stop_reason or f"finished all {p.plan.total} {p.plan.unit}s",
        "stopped_early": state.stop,
        "diverged": state.diverged,
        "seconds": round(seconds, 2),
        "params": sum(q.numel() for q in p.setup.model.parameters()),
    }
    restore = cfg.trainer.restore_best_weights
    if cfg.trainer.eval_test and p.data.test is not None and (best_path.exists() or not restore):
        if cfg.trainer.restore_best_weights:  # the run ends with the best epoch's weights: test those
            p.setup.model.load_state_dict(ckpt_io.load(best_path, p.device)["model"])
        test = evaluate(p.setup.model, p.setup.loss_fn, p.data.test, cfg.trainer.batch_size, p.device,
                        p.setup.precision)
        summary.update(test_loss=test["loss"], test_acc=test["acc"],
                       tested=f"best.pt (epoch {monitor.best_epoch})" if cfg.trainer.restore_best_weights
                       else f"last epoch's weights (epoch {state.epoch})")
    best_value = "none" if monitor.best is None else f"{monitor.best:.4f}"
    log.info("stopped: %s; best %s=%s at epoch %s%s", summary["stop_reason"], summary["monitor"], best_value,
             summary["best_epoch"],
             f"; test_acc={summary['test_acc']:.4f} ({summary['tested']})" if "test_acc" in summary else "")
    (run_dir / "summary.json").write_text(json.dumps(finite_or_null(summary), indent=2, allow_nan=False))
    return summary


def finite_or_null(obj):
    """NaN/inf become null, so the JSON files stay valid JSON (json.dumps writes a bare NaN otherwise)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj
