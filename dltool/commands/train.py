"""`dltool train`: the Hydra task (one run or one sweep job), its summary table and the sweep job line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from dltool.config.schema import TrainConfig, to_dict, validate
from dltool.console import config_tree, console, error, note, table
from dltool.errors import ConfigError
from dltool.train.callbacks import Callback, EpochReporter
from dltool.train.distributed import RankFailed, external, launch, run_rank
from dltool.train.run import prepare, train

log = logging.getLogger(__name__)


WORST = 1e9  # finite on purpose: the Optuna sweeper aborts on NaN and ranks +inf as best when maximizing
JOB_THREADS = "DLTOOL_JOB_THREADS"  # set by the sweep plan when jobs run side by side: their share of the cores
TrialHook = Callable[[dict, int, str], "Callback | None"]  # (sweeper config, trial number, monitor) -> reporter


def worst_value(mode: str) -> float:
    """What a failed or diverged sweep job reports, so the sweeper ranks it last and goes on."""
    return WORST if mode == "min" else -WORST


def job_threads(threads: int | None) -> None:
    """A sweep job running beside others uses its share of the cores (trainer.threads, when set, wins)."""
    share = os.environ.get(JOB_THREADS)
    if threads is None and share:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), int(share))))
    log.info("torch threads: %d", torch.get_num_threads())


def train_task(cfg: Any, multirun: bool, trial_hook: TrialHook | None = None) -> float:
    """Hydra task for `dltool train`: returns the best monitored value (the sweeper's objective).

    trial_hook: in an Optuna search, builds the callback that reports each epoch to this job's trial.
    """
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    mode = str(cfg.get("trainer", {}).get("mode", "max"))
    try:
        tc = validate(cfg)
        mode = tc.trainer.mode
        job_threads(tc.trainer.threads)
        hook = (trial_hook, OmegaConf.to_container(hc.sweeper, resolve=True), int(hc.job.num), tc.trainer.monitor) \
            if multirun and trial_hook is not None else None
        summary = run_job(tc, run_dir, multirun, hook)
        if summary is None:
            return 0.0  # a rank > 0 of an external torchrun: rank 0 reports
    except KeyboardInterrupt:
        if multirun:
            raise
        last = run_dir / "checkpoints" / "last.pt"
        hint = f"; continue with: dltool train resume={run_dir}" if last.exists() else ""
        error(f"interrupted (Ctrl-C); the checkpoints of finished epochs are in {run_dir / 'checkpoints'}{hint}")
        sys.exit(130)
    except Exception as ex:  # noqa: BLE001 - a sweep must survive one bad job
        if not multirun and not isinstance(ex, (ConfigError, RankFailed)):
            raise
        message = str(ex) if isinstance(ex, (ConfigError, RankFailed)) else f"{type(ex).__name__}: {ex}"
        if isinstance(ex, ConfigError):
            log.info("failed: %s", message)  # the run dir's train.log; the terminal gets one sentence below
        else:
            log.info("job failed", exc_info=True)  # the traceback goes to the run dir's train.log, not the terminal
        if not multirun:
            error(message)
            discard_empty_run_dir(run_dir)
            sys.exit(2)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps({"failed": True, "error": message, "run_dir": str(run_dir)},
                                                         indent=2))
        where = "" if isinstance(ex, ConfigError) else f" (traceback in {run_dir / 'train.log'})"
        note(f"[red]job {run_dir.name} failed:[/] {message}{where}")  # the dir name: 3, or r1_3 in a continued sweep
        return worst_value(mode)
    if multirun:
        note(job_line(run_dir.name, summary))
    else:
        print_summary(summary)
    if summary["diverged"] or summary["best_value"] is None:
        return worst_value(summary["mode"])
    return float(summary["best_value"])


def run_job(tc: TrainConfig, run_dir: Path, multirun: bool, hook: tuple | None) -> dict | None:
    """One process, N data-parallel ranks started here (trainer.devices), or one rank of an external torchrun."""
    if external():
        return run_rank(tc, run_dir, hook, show=not multirun)
    if tc.trainer.devices > 1:
        if not multirun:
            config_tree(to_dict(tc), f"config ({run_dir}, {tc.trainer.devices} data-parallel ranks)")
        return launch(tc, run_dir, hook, show=not multirun)
    prepared = prepare(tc)  # every config mistake surfaces here, before anything is printed or written
    if not multirun:
        config_tree(to_dict(tc), f"config ({run_dir})")
    reporter = None if multirun else EpochReporter(tc.trainer.epochs, tc.trainer.monitor, tc.trainer.progress)
    hooked = hook[0](*hook[1:]) if hook is not None else None
    return train(tc, run_dir, extra_callbacks=[hooked] if hooked else None, reporter=reporter, prepared=prepared)


def discard_empty_run_dir(run_dir: Path) -> None:
    """A run refused before it started leaves nothing behind: Hydra's .hydra/ and log are all it holds."""
    if {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.parent.rmdir()  # outputs/ itself, if this was its only run


def job_line(num: int | str, s: dict) -> str:
    test = f" test_acc={s['test_acc']:.4f}" if "test_acc" in s else ""
    best = "none" if s["best_value"] is None else f"{s['best_value']:.4f}"
    status = "[red]diverged[/]" if s["diverged"] else "done"
    return (f"job {num} {status}: best {s['monitor']}={best} at epoch {s['best_epoch']}{test} "
            f"({s['seconds']:.1f}s) -> {s['run_dir']}")


def print_summary(s: dict) -> None:
    rows = [("stopped because", s["stop_reason"]),
            ("best epoch", s["best_epoch"]),
            (f"best {s['monitor']}", "none (no finite value)" if s["best_value"] is None else f"{s['best_value']:.4f}")]
    if "test_acc" in s:
        rows += [("test accuracy (best.pt)", f"{s['test_acc']:.4f}"), ("test loss", f"{s['test_loss']:.4f}")]
    rows += [("time", f"{s['seconds']:.1f}s")]
    color = "red" if s["diverged"] else "green"
    console.print(table(f"[{color}]summary[/]", ["", ""], rows, False))
    console.print(f"run dir: {s['run_dir']}\n  config.yaml  checkpoints/best.pt  checkpoints/last.pt  metrics.csv  "
                  f"curves.png  summary.json", soft_wrap=True)
