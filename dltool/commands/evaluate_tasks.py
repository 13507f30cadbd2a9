"""`dltool evaluate` for binary, multi-label and regression runs: metrics per label/target and averaged,
the decision threshold (the run's, one given, or tuned for F1 on the validation split), the saved predictions
and the figures a person looks at (ROC + precision-recall; predicted vs actual + residuals)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from dltool.console import console, table
from dltool.errors import ConfigError
from dltool.plots_tasks import predicted_vs_actual, residuals, roc_pr
from dltool.tasks import LABELS, TASKS
from dltool.train.metrics import original_units, per_label, probabilities, split_metrics


def pick_threshold(value: Any, run_threshold: float, task: str, tune: Any) -> tuple[float, str]:
    """threshold=null: the run's trainer.threshold; a number in (0, 1); tune: best F1 on the validation split
    (tune is a callable giving (threshold, F1) so the validation split is only loaded when asked for)."""
    if value in (None, "null", "run"):
        return run_threshold, "trainer.threshold of the run"
    if value == "tune":
        if task not in ("binary", "multilabel"):
            raise ConfigError(f"threshold=tune picks a decision threshold for binary or multilabel runs; this run's "
                              f"task is {task}.")
        t, f1 = tune()
        return t, f"tuned on the validation split (F1 {f1:.4f} there)"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value), "given"
    raise ConfigError(f"threshold={value!r} is not valid; use a probability between 0 and 1 (e.g. 0.3), tune "
                      f"(best F1 on the validation split) or leave it out (the run's trainer.threshold).")


def task_report(task: str, logits: torch.Tensor, y: torch.Tensor, names: list[str], threshold: float,
                target_norm: dict | None) -> dict[str, Any]:
    """Averaged metrics (scikit-learn) and one row per label / target."""
    return {"metrics": split_metrics(task, logits, y, threshold, target_norm),
            "per_label": per_label(task, logits, y, names, threshold, target_norm)}


def output_files(task: str, suffix: str) -> list[str]:
    """The files `evaluate` writes for a binary / multilabel / regression run (besides eval*.json)."""
    figures = ["pred_vs_actual", "residuals"] if task == "regression" else ["roc_pr"]
    return [f"predictions{suffix}.csv", *[f"{f}{suffix}.png" for f in figures]]


def write_outputs(task: str, logits: torch.Tensor, y: torch.Tensor, names: list[str], target_norm: dict | None,
                  out_dir: Path, suffix: str, title: str) -> list[str]:
    """predictions{suffix}.csv (targets and predictions / probabilities per row) and the task's figures."""
    if task == "regression":
        pred = original_units(logits.float(), target_norm).numpy()
        true = original_units(y.float(), target_norm).numpy()
        cols = [f"{kind}_{n}" for n in names for kind in ("actual", "predicted")]
        rows = [[v for k in range(len(names)) for v in (true[i, k], pred[i, k])] for i in range(len(true))]
        files = output_files(task, suffix)[1:]
        predicted_vs_actual(pred, true, names, out_dir / files[0], title)
        residuals(pred, true, names, out_dir / files[1], title)
    else:
        p, t = probabilities(task, logits.float()).numpy(), y.numpy().astype(int)
        cols = [f"{kind}_{n}" for n in names for kind in ("true", "prob")]
        rows = [[v for k in range(len(names)) for v in (t[i, k], p[i, k])] for i in range(len(t))]
        files = output_files(task, suffix)[1:]
        roc_pr(p, t, names, out_dir / files[0], title)
    with open(out_dir / f"predictions{suffix}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)
    return [f"predictions{suffix}.csv", *files]


def print_task_report(res: dict[str, Any]) -> None:
    task = res["task"]
    head = [("checkpoint", f"{res['checkpoint']} (epoch {res['epoch']})"), ("split", res["split"]),
            ("examples", res["examples"]), ("task", task), ("loss", f"{res['loss']:.4f}")]
    if task != "regression":
        head.append(("threshold", f"{res['threshold']:.4f} ({res['threshold_source']})"))
    head += [(LABELS[m], f"{res['metrics'][m]:.4f}") for m in TASKS[task].metrics if m in res["metrics"]]
    console.print(table("[bold]evaluation[/]", ["", ""], head, False))
    rows = res["per_label"]
    if rows:
        keys = [k for k in rows[0] if k not in ("label", "target")]
        first = "target" if task == "regression" else "label"
        console.print(table(f"per {first}", [first, *keys],
                            [(r[first], *[fmt(r[k]) for k in keys]) for r in rows]))


def fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
