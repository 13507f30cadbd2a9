"""`dltool train`: the Hydra task (one run or one sweep job), its summary table and the sweep job line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from dltool.commands.cross_validate import cross_validate, fold_line, print_cv, wants_cv
from dltool.commands.diagnose import diagnose_run, print_findings
from dltool.commands.rundir import os_reason
from dltool.config.compose import resume_config
from dltool.config.safety import check_hydra, gate
from dltool.config.schema import TrainConfig, to_dict, validate
from dltool.console import TerminalLog, config_tree, console, error, note, table, warning
from dltool.errors import ConfigError
from dltool.tasks import HEADLINE, LABELS, TASKS
from dltool.train.callbacks import Callback, EpochReporter
from dltool.train.distributed import RankFailed, external, launch, run_rank
from dltool.train.preempt import PREEMPTED, Preempted, requeued
from dltool.train.report import headline
from dltool.train.run import prepare, train

log = logging.getLogger(__name__)


WORST = 1e9  # finite on purpose: the Optuna sweeper aborts on NaN and ranks +inf as best when maximizing
JOB_THREADS = "DLTOOL_JOB_THREADS"  # set by the sweep plan when jobs run side by side: their share of the cores
TrialHook = Callable[[dict, int, str], "Callback | None"]  # (sweeper config, trial number, monitor) -> reporter


def worst_value(mode: str) -> float:
    """What a failed or diverged sweep job reports, so the sweeper ranks it last and goes on."""
    return WORST if mode == "min" else -WORST


def job_threads(threads: int | None) -> None:
    """A sweep job running beside others uses its share of the cores (trainer.threads, when set, wins); applied
    here, before train.log says how many threads the run uses."""
    share = os.environ.get(JOB_THREADS)
    if threads:
        torch.set_num_threads(threads)
    elif share:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), int(share))))
    log.info("torch threads: %d", torch.get_num_threads())


def train_task(cfg: Any, multirun: bool, trial_hook: TrialHook | None = None) -> float:
    """Hydra task for `dltool train`: returns the best monitored value (the sweeper's objective).

    trial_hook: in an Optuna search, builds the callback that reports each epoch to this job's trial.
    """
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    mode = str(cfg.get("trainer", {}).get("mode", "min"))

    def hook_of(tc: TrainConfig) -> tuple | None:
        if not multirun or trial_hook is None:
            return None
        return trial_hook, OmegaConf.to_container(hc.sweeper, resolve=True), int(hc.job.num), tc.trainer.monitor

    def make_config() -> TrainConfig:
        if multirun and not external():  # the gate once more on the job a sweeper or launcher built
            gate(list(hc.overrides.task), f"job {hc.job.num}", job=True)
            check_hydra(hc)
        return continue_if_requeued(validate(cfg), run_dir)

    return run_task(make_config, run_dir, multirun, mode, hook_of=hook_of)


def continue_if_requeued(tc: TrainConfig, run_dir: Path) -> TrainConfig:
    """A submitit job requeued after a preemption runs again in the same job dir: it continues from its last.pt."""
    if tc.resume is None and requeued(run_dir):
        log.info("requeued after a preemption: continuing from %s", run_dir / "checkpoints" / "last.pt")
        return replace(tc, resume=str(run_dir))
    return tc


def resume_run(target: str, overrides: list[str]) -> int:
    """`dltool train resume=RUN_DIR [key=value ...]` without Hydra: the stored config is read as data, and a
    refused resume (other model, fewer epochs, unreadable last.pt) changes nothing in RUN_DIR."""
    tc = resume_config(target, overrides)
    run_dir = Path(target)
    console_logging()
    handlers: list[logging.Handler] = []
    try:
        run_task(lambda: tc, run_dir, False, tc.trainer.mode,
                 on_start=lambda: handlers.append(file_logging(run_dir / "train.log")))
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
    return 0


def console_logging() -> None:
    """What configs/hydra/job_logging/dltool.yaml sets up for a Hydra run: warnings to the terminal."""
    root = logging.getLogger()
    logging.getLogger("dltool").setLevel(logging.INFO)
    if not any(isinstance(h, TerminalLog) for h in root.handlers):
        handler = TerminalLog()  # `warning: ...`, the style of every dltool warning
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)


def file_logging(path: Path) -> logging.Handler:
    """... and everything (INFO) appended to the run dir's train.log, once the resume has been accepted."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def run_task(make_config: Callable[[], Any], run_dir: Path, multirun: bool, mode: str,
             on_start: Callable[[], None] | None = None,
             hook_of: Callable[[TrainConfig], tuple | None] | None = None) -> float:
    """Validate, build, train; a mistake is one sentence (a sweep job records it and the sweep goes on)."""
    try:
        tc = make_config()
        mode = tc.trainer.mode
        job_threads(tc.trainer.threads)
        hook = hook_of(tc) if hook_of is not None else None
        summary = (cv_task(tc, run_dir, multirun) if wants_cv(tc)
                   else run_job(tc, run_dir, multirun, hook, on_start))
        if summary is None:
            return 0.0  # a rank > 0 of an external torchrun: rank 0 reports
    except Preempted as ex:
        stop_preempted(ex)
    except KeyboardInterrupt:
        if multirun:
            raise
        last = run_dir / "checkpoints" / "last.pt"
        hint = f"; continue with: dltool train resume={run_dir}" if last.exists() else ""
        error(f"interrupted (Ctrl-C); the checkpoints of finished epochs are in {run_dir / 'checkpoints'}{hint}")
        sys.exit(130)
    except Exception as ex:  # noqa: BLE001 - a sweep must survive one bad job
        return failed(ex, run_dir, multirun, mode)
    if "folds" not in summary:
        report(run_dir, summary, multirun)
    elif multirun:  # a cross-validation printed its own table when run alone
        note(job_line(run_dir.name, summary))
    if summary["diverged"] or summary["best_value"] is None:
        return worst_value(summary["mode"])
    return float(summary["best_value"])


def run_job(tc: TrainConfig, run_dir: Path, multirun: bool, hook: tuple | None,
            on_start: Callable[[], None] | None = None) -> dict | None:
    """One process, N data-parallel ranks started here (trainer.devices), or one rank of an external torchrun."""
    if external():
        return run_rank(tc, run_dir, hook, show=not multirun)
    if tc.trainer.devices > 1:
        if not multirun:
            config_tree(to_dict(tc), f"config ({run_dir}, {tc.trainer.devices} data-parallel ranks)")
        return launch(tc, run_dir, hook, show=not multirun)
    return train_one(tc, run_dir, multirun, on_start, hook)


def train_one(tc: TrainConfig, run_dir: Path, multirun: bool, on_start: Callable[[], None] | None = None,
              hook: tuple | None = None) -> dict:
    prepared = prepare(tc)  # every config mistake surfaces here, before anything is printed or written
    points = prepared.plan.points if prepared.plan.unit == "step" else prepared.plan.total
    reporter = None if multirun else EpochReporter(points, tc.trainer.monitor, tc.trainer.progress)

    def start() -> None:  # after the last check (a resume's checkpoint), before the first write
        if not multirun:
            config_tree(to_dict(tc), f"config ({run_dir})")
        if on_start is not None:
            on_start()

    hooked = hook[0](*hook[1:]) if hook is not None else None  # the Optuna trial reporter (pruning)
    return train(tc, run_dir, extra_callbacks=[hooked] if hooked else None, reporter=reporter, prepared=prepared,
                 on_start=start)


def cv_task(tc: TrainConfig, run_dir: Path, multirun: bool) -> dict:
    """data.folds=K without data.fold: K fold runs under run_dir; the summary's best_value is their mean."""
    if not multirun:
        config_tree(to_dict(tc), f"config ({run_dir})")
    res = cross_validate(tc, run_dir, None if multirun else lambda k, n, s: note(fold_line(k, n, s)))
    if not multirun:
        print_cv(res, run_dir)
    return res["summary"]


def stop_preempted(ex: Preempted) -> None:
    """One line with the resume command, then submitit's requeue (inside a submitit job) or exit PREEMPTED."""
    saved = (ex.run_dir / "checkpoints" / "last.pt").is_file()
    where = (f"last.pt holds the state after the last finished step; continue with: dltool train "
             f"resume={ex.run_dir}" if saved else "no step had finished, so there is nothing to resume")
    requeue = " (submitit requeues the job; it continues from last.pt)" if ex.requeue is not None and saved else ""
    warning(f"preempted by {ex.name}: {where}{requeue}")
    log.info("preempted by %s", ex.name)
    if ex.requeue is not None and saved:
        ex.requeue(ex.signum, None)  # submitit: checkpoint() the job, requeue it, exit
    sys.exit(PREEMPTED)


def failed(ex: Exception, run_dir: Path, multirun: bool, mode: str) -> float:
    """One sentence for a refused or failed run; exit (single run) or a failed job record (sweep)."""
    if isinstance(ex, OSError):  # disk full, read-only, a path part that is a file: not a config mistake
        ckpts = run_dir / "checkpoints"
        kept = f"; the checkpoints written before it ({ckpts}) are intact" if any(ckpts.glob("*.pt")) else ""
        message = f"cannot write {ex.filename or run_dir}: {os_reason(ex)}{kept}."
    elif isinstance(ex, (ConfigError, RankFailed)):
        message = str(ex)
    elif not multirun:
        raise ex
    else:
        message = f"{type(ex).__name__}: {ex}"
    log.info("failed: %s", message, exc_info=not isinstance(ex, (ConfigError, OSError)))  # the traceback: train.log
    if not multirun:
        error(message)
        discard_empty_run_dir(run_dir)
        sys.exit(1 if isinstance(ex, OSError) else 2)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps({"failed": True, "error": message, "run_dir": str(run_dir)},
                                                         indent=2))
    except OSError:
        pass  # the job line below still says it failed
    where = "" if isinstance(ex, (ConfigError, OSError)) else f" (traceback in {run_dir / 'train.log'})"
    note(f"[red]job {run_dir.name} failed:[/] {message}{where}")  # the dir name: 3, or r1_3 in a continued sweep
    return worst_value(mode)


def report(run_dir: Path, summary: dict, multirun: bool) -> None:
    """The job line (sweep) or the summary table and the diagnosis; exit 1 when there is no best.pt at all."""
    findings, cannot = diagnose_run(run_dir)  # writes diagnosis.json
    if multirun:
        note(job_line(run_dir.name, summary))
        return
    print_summary(summary)
    print_findings(findings, cannot, run_dir, short=True)
    if not (run_dir / "checkpoints" / "best.pt").exists():
        error(f"no epoch reached a finite {summary['monitor']}, so there is no best.pt to evaluate "
              f"({summary['stop_reason']})")
        sys.exit(1)


def discard_empty_run_dir(run_dir: Path) -> None:
    """A run refused before it started leaves nothing behind: Hydra's .hydra/ and log are all it holds."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.parent.rmdir()  # outputs/ itself, if this was its only run


def job_line(num: int | str, s: dict) -> str:
    test = f" {headline(s)}" if "tested" in s else ""
    best = "none" if s["best_value"] is None else f"{s['best_value']:.4f}"
    status = "[red]diverged[/]" if s["diverged"] else "done"
    return (f"job {num} {status}: best {s['monitor']}={best} at epoch {s['best_epoch']}{test} "
            f"({s['seconds']:.1f}s) -> {s['run_dir']}")


def print_summary(s: dict) -> None:
    rows = [("stopped because", s["stop_reason"]),
            ("best epoch", s["best_epoch"]),
            (f"best {s['monitor']}", "none (no finite value)" if s["best_value"] is None else f"{s['best_value']:.4f}")]
    if "tested" in s:
        task = s.get("task", "classification")
        rows += [(f"test {LABELS[m]} ({s['tested'].split(' ')[0]})" if i == 0 else f"test {LABELS[m]}",
                  fmt_metric(s.get(f"test_{m}"))) for i, m in enumerate(test_order(task))]
    rows += [("time", f"{s['seconds']:.1f}s")]
    color = "red" if s["diverged"] else "green"
    console.print(table(f"[{color}]summary[/]", ["", ""], rows, False))
    run_dir = Path(s["run_dir"])
    files = [f for f in FILES if (run_dir / f).exists()]
    tb = "  (tensorboard --logdir " + str(run_dir) + ")" if any(run_dir.glob("events.out.tfevents.*")) else ""
    console.print(f"run dir: {run_dir}\n  {'  '.join(files)}{tb}", soft_wrap=True)


def test_order(task: str) -> list[str]:
    """The task's test metrics, headline first, loss last (as the summary table lists them)."""
    rest = [m for m in TASKS[task].metrics if m not in ("loss", HEADLINE[task])]
    return [HEADLINE[task], *rest, "loss"]


def fmt_metric(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and v == v else "n/a (undefined on this split)"


FILES = ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "metrics.csv", "signals.csv", "curves.png",
         "update_ratios.png", "histograms.png", "filters.png", "model_summary.txt", "summary.json", "train.log")
