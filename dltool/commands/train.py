"""`dltool train`: the Hydra task (one run or one sweep job), its summary table and the sweep job line."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from dltool.commands.diagnose import diagnose_run, print_findings
from dltool.config.schema import to_dict, validate
from dltool.console import config_tree, console, error, note, table
from dltool.errors import ConfigError
from dltool.train.callbacks import EpochReporter
from dltool.train.run import prepare, train

log = logging.getLogger(__name__)


WORST = 1e9  # finite on purpose: the Optuna sweeper aborts on NaN and ranks +inf as best when maximizing


def worst_value(mode: str) -> float:
    """What a failed or diverged sweep job reports, so the sweeper ranks it last and goes on."""
    return WORST if mode == "min" else -WORST


def train_task(cfg: Any, multirun: bool) -> float:
    """Hydra task for `dltool train`: returns the best monitored value (the sweeper's objective)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    mode = str(cfg.get("trainer", {}).get("mode", "max"))
    try:
        tc = validate(cfg)
        mode = tc.trainer.mode
        prepared = prepare(tc)  # every config mistake surfaces here, before anything is printed or written
        if not multirun:
            config_tree(to_dict(tc), f"config ({run_dir})")
        reporter = None if multirun else EpochReporter(tc.trainer.epochs, tc.trainer.monitor, tc.trainer.progress)
        summary = train(tc, run_dir, reporter=reporter, prepared=prepared)
    except KeyboardInterrupt:
        if multirun:
            raise
        last = run_dir / "checkpoints" / "last.pt"
        hint = f"; continue with: dltool train resume={run_dir}" if last.exists() else ""
        error(f"interrupted (Ctrl-C); the checkpoints of finished epochs are in {run_dir / 'checkpoints'}{hint}")
        sys.exit(130)
    except Exception as ex:  # noqa: BLE001 - a sweep must survive one bad job
        if not multirun and not isinstance(ex, ConfigError):
            raise
        message = str(ex) if isinstance(ex, ConfigError) else f"{type(ex).__name__}: {ex}"
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
    report(run_dir, summary, multirun)
    if summary["diverged"] or summary["best_value"] is None:
        return worst_value(summary["mode"])
    return float(summary["best_value"])


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
    run_dir = Path(s["run_dir"])
    files = [f for f in FILES if (run_dir / f).exists()]
    tb = "  (tensorboard --logdir " + str(run_dir) + ")" if any(run_dir.glob("events.out.tfevents.*")) else ""
    console.print(f"run dir: {run_dir}\n  {'  '.join(files)}{tb}", soft_wrap=True)


FILES = ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "metrics.csv", "signals.csv", "curves.png",
         "update_ratios.png", "histograms.png", "filters.png", "summary.json")
