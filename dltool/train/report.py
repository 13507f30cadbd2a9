"""The end of a run: test the best checkpoint on the test split, write summary.json with the task's test metrics,
the stop reason and the run's provenance; the one-line headline of a summary; JSON without NaN."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from dltool.config.schema import TrainConfig
from dltool.tasks import HEADLINE
from dltool.train import checkpoint as ckpt_io
from dltool.train import preempt
from dltool.train.averaging import eval_model, finish_swa
from dltool.train.callbacks import FitState, Monitor
from dltool.train.loop import evaluate
from dltool.train.provenance import provenance

log = logging.getLogger("dltool.train.run")  # the run's own log lines, as before the split


def finish(cfg: TrainConfig, p: Any, state: FitState, monitor: Monitor, run_dir: Path, seconds: float,
           started: str = "") -> dict:
    """Evaluate the best checkpoint on the test split and write summary.json (with the run's provenance)."""
    best_path = run_dir / "checkpoints" / "best.pt"
    summary = {
        "name": cfg.name,
        "task": p.data.task,
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
    swa = swa_summary(cfg, p, state, run_dir)
    swa_tested = swa.pop("tested", "")
    summary.update(swa)
    if cfg.trainer.eval_test and p.data.test is not None and (best_path.exists() or not restore or swa_tested):
        tested = eval_model(p.setup.model, p.setup.average)
        if swa_tested:  # SWA: the mean of the weights, batch-norm statistics recomputed
            tested = p.setup.average.module
        elif cfg.trainer.restore_best_weights:  # the run ends with the best epoch's weights: test those
            p.setup.model.load_state_dict(ckpt_io.load(best_path, p.device)["model"])
            tested = p.setup.model
        test = evaluate(tested, p.setup.loss_fn, p.data.test, cfg.trainer.batch_size, p.device,
                        p.setup.precision, p.setup.task, p.setup.threshold, p.setup.target_norm)
        summary.update({f"test_{k}": v for k, v in test.items()})
        summary["tested"] = (swa_tested if swa_tested else f"best.pt (epoch {monitor.best_epoch})"
                             if cfg.trainer.restore_best_weights else f"last epoch's weights (epoch {state.epoch})")
        if p.setup.average is not None and p.setup.average.kind == "ema":
            summary["tested"] += f" (EMA of the weights, decay {cfg.trainer.ema_decay:g})"
    best_value = "none" if monitor.best is None else f"{monitor.best:.4f}"
    log.info("stopped: %s; best %s=%s at epoch %s%s", summary["stop_reason"], summary["monitor"], best_value,
             summary["best_epoch"],
             f"; {headline(summary)} ({summary['tested']})" if "tested" in summary else "")
    summary["provenance"] = provenance(p.data, p.device, started)
    preemptions = preempt.read_records(run_dir)  # a resumed preempted run: its interruptions, on record
    if preemptions:
        summary["preemptions"] = preemptions
    (run_dir / "summary.json").write_text(json.dumps(finite_or_null(summary), indent=2, allow_nan=False))
    (run_dir / preempt.RECORD).unlink(missing_ok=True)
    return summary


def swa_summary(cfg: TrainConfig, p: Any, state: FitState, run_dir: Path) -> dict:
    """SWA's end: batch-norm statistics recomputed over the training split (update_bn), checkpoints/swa.pt written
    (a normal checkpoint whose "model" is the mean) and validated; {} without SWA or when no epoch was averaged."""
    avg, t = p.setup.average, cfg.trainer
    if avg is None or avg.kind != "swa":
        return {}
    n = int(avg.model.n_averaged)
    if n == 0:
        return {"swa_epochs": [], "swa_note": f"no epoch averaged: the run stopped at epoch "
                                                             f"{state.epoch}, before trainer.swa_start={t.swa_start}"}
    finish_swa(avg, (x for x, _ in p.data.train.batches(t.batch_size)), p.device)
    out = {"swa_epochs": [t.swa_start, t.swa_start + n - 1], "swa_n_averaged": n}
    if p.data.val is not None:
        val = evaluate(avg.module, p.setup.loss_fn, p.data.val, t.batch_size, p.device, p.setup.precision,
                       p.setup.task, p.setup.threshold, p.setup.target_norm)
        out.update({f"swa_val_{k}": v for k, v in val.items()})
    if state.make_checkpoint is not None:
        ckpt_io.save({**state.make_checkpoint(), "model": avg.module.state_dict()}, run_dir / "checkpoints" / "swa.pt")
    out["tested"] = (f"swa.pt (mean of the weights at the end of epochs {t.swa_start}-{t.swa_start + n - 1}, "
                     f"batch-norm statistics recomputed)")
    return out


def headline(summary: dict) -> str:
    """The task's one test metric for one-line reports, e.g. test_acc=0.9806 or test_r2=0.4512."""
    key = f"test_{HEADLINE[summary.get('task', 'classification')]}"
    value = summary.get(key)
    return f"{key}={value:.4f}" if isinstance(value, float) else f"{key}=nan"


def finite_or_null(obj):
    """NaN/inf become null, so the JSON files stay valid JSON (json.dumps writes a bare NaN otherwise)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj
