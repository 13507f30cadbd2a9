"""One training run from a typed config: build everything, fit, test the best checkpoint, write the run dir.

This is the flow of DESIGN.md in code; the CLI calls `train`, tests can call it straight from Python.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import yaml

from dltool import plugins
from dltool.config.schema import TrainConfig, to_dict
from dltool.data.splits import DataBundle
from dltool.errors import ConfigError
from dltool.models.builder import BuiltModel
from dltool.models.summary import as_text
from dltool.registry import resolve
from dltool.train import checkpoint as ckpt_io
from dltool.train import preempt
from dltool.train.averaging import build_averaging, checkpoint_weights, eval_model, load_weights
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
    TopK,
)
from dltool.train.infer import resolve_precision
from dltool.train.loggers import CSVLogger, SignalPlots, TensorBoardLogger, check_loggers
from dltool.train.loop import Setup, fit
from dltool.train.optim import build_optimizer, build_scheduler
from dltool.train.parts import build_parts
from dltool.train.plugged import plugin_callbacks, plugin_metrics
from dltool.train.preempt import Preempted, Preemption
from dltool.train.provenance import now
from dltool.train.report import finish
from dltool.train.restore import describe_mismatch
from dltool.train.signals import Signals
from dltool.train.steps import Plan, parse_max_time

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything built from the config before the first step."""

    data: DataBundle
    built: BuiltModel
    setup: Setup
    device: torch.device
    plan: Plan
    callbacks: list[Callback] = field(default_factory=list)  # trainer.callbacks (plug-ins)


def augmenter(data: DataBundle, ops: list) -> Callable | None:
    """Setup.augment for augment.ops (None without ops); dltool.data.augment and torchvision (~3 s to import)
    load through the registry's resolver only when there is something to augment."""
    return resolve("dltool.data.augment:attach")(data, ops) if ops else None


def prepare(cfg: TrainConfig) -> Prepared:
    """Seed, pick the device, build data, model (+ init), loss, penalty (`build_parts`), optimizer and schedule."""
    t = cfg.trainer
    check_loggers(t.loggers)
    parts = build_parts(cfg)
    data, plan, model = parts.data, parts.plan, parts.model
    opt = build_optimizer(model, cfg.optimizer, cfg.regularization.apply_to_bias, parts.lr_mults)
    if plan.unit == "step":  # the schedule's epochs keys count optimizer steps
        sched, interval = build_scheduler(opt, cfg.scheduler, plan.total, 1, t.mode, cfg.optimizer.lr)
        interval = ("constant" if cfg.scheduler.name == "none" else "step") if interval == "epoch" else interval
    else:
        steps_per_epoch = -(-data.train.num_batches(t.batch_size) // t.accumulate)  # optimizer steps, not batches
        sched, interval = build_scheduler(opt, cfg.scheduler, t.epochs, steps_per_epoch, t.mode, cfg.optimizer.lr)
    penalty = parts.penalty
    setup = Setup(model, parts.loss_fn, opt, sched, interval, penalty if penalty.active else None, parts.device,
                  resolve_precision(t.precision, parts.device), t.accumulate, cfg.regularization.clip_grad_norm,
                  cfg.regularization.clip_grad_value, augment=augmenter(data, cfg.augment.ops), compile=t.compile,
                  channels_last=t.channels_last, task=data.task, threshold=t.threshold,
                  target_norm=data.target_norm, metrics=plugin_metrics(t.metrics),
                  average=build_averaging(model, opt, t.ema_decay, t.swa_start, t.swa_lr), mix=parts.mix)
    return Prepared(data, parts.built, setup, parts.device, plan, plugin_callbacks(t.callbacks))


def train(cfg: TrainConfig, run_dir: Path, extra_callbacks: list[Callback] | None = None,
          reporter: Callback | None = None, prepared: Prepared | None = None,
          on_start: Callable[[], None] | None = None, writer: bool = True) -> dict:
    """Train per cfg, writing config.yaml, checkpoints/, metrics.csv, curves.png, summary.json to run_dir.
    A resume is checked in full before anything is written (a refused one changes nothing); on_start runs right
    before the first write. writer=False (ranks > 0 of a distributed run): same training and decisions, no files."""
    run_dir = Path(run_dir)
    t0, started = time.perf_counter(), now()
    p = prepared or prepare(cfg)
    s, t = p.setup, cfg.trainer
    cfg_dict = to_dict(cfg)  # once: converting the dataclasses costs milliseconds, too much per epoch

    monitor = Monitor(t.monitor, t.mode, t.min_delta)
    best, callbacks = standard_callbacks(cfg, monitor, run_dir)
    stateful: dict[str, Callback] = {"best": best}  # early stopping derives its count from the monitor's best epoch
    if t.save_top_k:
        stateful["topk"] = TopK(monitor, t.save_top_k, run_dir / "checkpoints", ckpt_io.save)
        callbacks.append(stateful["topk"])
    if writer:
        callbacks += observers(cfg, p, monitor, run_dir, cfg_dict)
    else:  # keep the callbacks that decide (best epoch, early stopping, restore), drop the writers
        callbacks = [cb for cb in callbacks if isinstance(cb, (BestCheckpoint, EarlyStopping, RestoreBest, TopK))]
    callbacks += ([reporter] if reporter is not None else []) + list(extra_callbacks or [])
    callbacks += p.callbacks if writer else []  # plug-in callbacks see every hook on rank 0

    generator = torch.Generator().manual_seed(t.seed)
    state = FitState(s.model, run_dir, epochs=t.epochs, monitor=t.monitor, task=p.data.task,
                     eval_model=eval_model(s.model, s.average) if s.average is not None else None)
    state.make_checkpoint = checkpoint_maker(p, state, stateful, cfg_dict, monitor, generator) if writer else None
    if cfg.resume:
        resume_from(cfg.resume, s, state, stateful, generator)
        check_resume_length(state, p.plan, cfg.resume)
    if writer:
        if on_start is not None:
            on_start()
        write_run_files(run_dir, cfg_dict, p)
        log_start(cfg, p, run_dir, state)
    fit_preemptible(p, state, callbacks, t.batch_size, generator, writer, parse_max_time(t.max_time), t0)
    if not writer:
        return {}
    summary = finish(cfg, p, state, monitor, run_dir, time.perf_counter() - t0, started)
    for cb in callbacks:
        cb.on_summary(summary)
    return summary


def fit_preemptible(p: Prepared, state: FitState, callbacks: list[Callback], batch_size: int,
                    generator: torch.Generator, writer: bool, budget: float | None, t0: float) -> None:
    """fit() with SIGTERM/SIGUSR1 recorded and trainer.max_time counted from t0: after the step under way,
    last.pt is written; a signal raises Preempted, the budget ends the run normally (stop_reason says so).
    Under DDP, Setup.agree makes every rank stop at the same step (any rank's signal or clock stops them all)."""
    s = p.setup
    with Preemption() as pre:
        def check() -> bool:
            flags = [pre.requested(), budget is not None and time.perf_counter() - t0 >= budget]
            signalled, over = flags if s.agree is None else s.agree(flags)
            if signalled:
                state.preempted = True
            elif over:
                state.stop_reason = (f"the time budget trainer.max_time ({budget:g} s) ran out after {state.epoch} "
                                     f"finished epochs (+ the steps after the last one, kept in last.pt)")
            return signalled or over

        s.stop_check = check
        try:
            fit(s, p.data, state, callbacks, batch_size, generator, p.plan)
        finally:
            s.stop_check = None
    if state.preempted:
        signum = pre.signum or signal.SIGTERM  # a DDP rank stopped by another rank's signal
        if writer:
            preempt.record(state.run_dir, signum, state.epoch, int((state.progress.get("partial") or {})
                                                                    .get("batches", 0)))
        raise Preempted(signum, state.run_dir, pre.requeue_handler() if writer else None)


def checkpoint_maker(p: Prepared, state: FitState, stateful: dict, cfg_dict: dict, monitor: Monitor,
                     generator: torch.Generator) -> Callable[[], dict]:
    """A self-contained checkpoint as plain data: weights, optimizer, schedule, history, config, data stats, RNG."""
    s, data = p.setup, p.data

    def make_checkpoint() -> dict:
        return {
            **checkpoint_weights(s.model, s.average),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None,
            "epoch": state.epoch,
            "history": list(state.history),
            "callbacks": {k: cb.state_dict() for k, cb in stateful.items()},
            "config": cfg_dict,
            "norm": data.norm,
            "class_names": list(data.class_names),
            "task": data.task,
            "target_norm": data.target_norm,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "layout": data.layout,
            "feature_names": data.feature_names,
            "monitor": {"name": monitor.monitor, "mode": monitor.mode, "best": monitor.best,
                        "best_epoch": monitor.best_epoch},
            "rng": ckpt_io.rng_state(generator),
            "rank_rng": state.rank_rng,  # DDP: each rank's generators (rank 0's are "rng", taken right now)
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
    plugins.write_record(run_dir, cfg_dict)  # plugins.json: the plug-ins this run needs to be rebuilt


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


def check_resume_length(state: FitState, plan: Plan, resume: str) -> None:
    """A finished run cannot be resumed without more epochs; one killed after its last step but before the final
    test (no summary.json yet) resumes to its end: no training, the test of best.pt and summary.json."""
    done = int(state.progress.get("done", state.epoch))
    if done >= plan.total and not (Path(resume) / "summary.json").is_file() and Path(resume).is_dir():
        log.info("resume: all %d %ss were trained before the run was stopped; finishing it", done, plan.unit)
        return
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
    if "mlflow" in loggers:  # mlflow takes ~1 s to import: only when chosen, through the resolver
        out.append(resolve("dltool.train.mlflow_logger:MLflowLogger")(run_dir, cfg_dict, t.mlflow_uri,
                                                                      Path("outputs")))
    return out


def resume_from(path: str, s: Setup, state: FitState, stateful: dict, generator: torch.Generator) -> int:
    """Load last.pt (of a run dir, or a checkpoint file) into the freshly built objects; return its epoch."""
    src = Path(path)
    file = src / "checkpoints" / "last.pt" if src.is_dir() else src
    ck = ckpt_io.load(file, s.device)
    swa = s.average is not None and s.average.in_swa(int((ck.get("progress") or {}).get("done", ck["epoch"])))
    try:
        load_weights(ck, s.model, s.average, file)
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
        if isinstance(s.scheduler, torch.optim.lr_scheduler.LambdaLR) and not swa:  # lr from the (longer) schedule
            for g, base, f in zip(s.optimizer.param_groups, s.scheduler.base_lrs, s.scheduler.lr_lambdas):
                g["lr"] = base * f(s.scheduler.last_epoch)
    s.interval = "swa" if swa else s.interval  # SWA's phase: SWALR (or nothing) sets the lr, not the schedule
    state.history, state.epoch = list(ck["history"]), int(ck["epoch"])
    state.progress = dict(ck.get("progress") or {"done": int(ck["epoch"])})
    for k, cb in stateful.items():
        cb.load_state_dict(ck["callbacks"].get(k, {}))
    ckpt_io.set_rng_state(ck["rng"], generator)
    ranks = ck.get("rank_rng")
    if ranks and dist.is_available() and dist.is_initialized() and dist.get_world_size() == len(ranks) \
            and dist.get_rank() > 0:  # with the same number of ranks each continues its own dropout stream
        ckpt_io.set_local_rng_state(ranks[dist.get_rank()])
    return int(ck["epoch"])
