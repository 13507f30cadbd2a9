"""`dltool cross-validate`: K runs on stratified folds of train+val, one parent dir, mean +- std.

Fold k is an ordinary run (config.yaml says data.folds=K data.fold=k) in PARENT/fold_k, so evaluate,
predict and export work on it. The test split is never part of a fold; each fold's best checkpoint is
tested on it. PARENT holds cv.json, cv.csv and a summary.json whose best_value is the mean over folds,
which is what a sweep job (`dltool train -m ... data.folds=K`) reports as its objective.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Iterator

from dltool.commands.rundir import reserve
from dltool.config.schema import TrainConfig, validate
from dltool.console import console, note, table
from dltool.errors import ConfigError
from dltool.tasks import HEADLINE, config_task
from dltool.train.run import train

FoldHook = Callable[[int, int, dict], None]


def wants_cv(cfg: TrainConfig) -> bool:
    """data.folds set and no single data.fold chosen: train every fold."""
    return cfg.data.folds is not None and cfg.data.fold is None


def check_cv(cfg: TrainConfig) -> None:
    """One sentence before anything is written when the config cannot be cross-validated."""
    k_total = cfg.data.folds
    if k_total is None or k_total < 2:
        raise ConfigError(f"data.folds={k_total}: cross-validation needs data.folds=K with K >= 2, e.g. data.folds=5.")
    if cfg.data.fold is not None:
        raise ConfigError(f"data.fold={cfg.data.fold} picks one fold; cross-validation trains all of them "
                          f"(leave data.fold unset).")
    if cfg.resume:
        raise ConfigError("resume= continues one run; a cross-validation starts its folds fresh (remove resume).")


def fold_config(cfg: TrainConfig, k: int) -> TrainConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=k))


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); None when a fold has no value."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def test_key(task: str) -> str:
    """The test metric a cross-validation reports per fold: test_acc, test_auroc, test_macro_f1 or test_r2."""
    return f"test_{HEADLINE[task]}"


def fold_row(k: int, s: dict) -> dict:
    tk = test_key(s.get("task", "classification"))
    return {"fold": k, "run_dir": s["run_dir"], "best_value": s["best_value"], "best_epoch": s["best_epoch"],
            tk: s.get(tk), "epochs_run": s["epochs_run"], "diverged": s["diverged"], "seconds": s["seconds"]}


def cross_validate(cfg: TrainConfig, parent: Path, on_fold: FoldHook | None = None) -> dict:
    """Train fold 1..K into parent/fold_k; write cv.json, cv.csv, summary.json; return the cv record."""
    check_cv(cfg)
    k_total, parent = cfg.data.folds, Path(parent)
    rows = []
    for k in range(1, k_total + 1):
        with fold_log(parent / f"fold_{k}"):
            s = train(fold_config(cfg, k), parent / f"fold_{k}")
        rows.append(fold_row(k, s))
        if on_fold is not None:
            on_fold(k, k_total, s)
    return write_results(cfg, parent, rows)


@contextlib.contextmanager
def fold_log(fold_dir: Path) -> Iterator[None]:
    """The fold's own train.log (what dltool logs while it trains), like every run dir has; the parent's train.log
    keeps getting everything too."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(fold_dir / "train.log")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    logger = logging.getLogger("dltool")
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


def write_results(cfg: TrainConfig, parent: Path, rows: list[dict]) -> dict:
    t, task = cfg.trainer, config_task(dataclasses.asdict(cfg.data))
    tk = test_key(task)
    mean, std = mean_std([r["best_value"] for r in rows])
    test_mean, test_std = mean_std([r[tk] for r in rows])
    record = {"monitor": t.monitor, "mode": t.mode, "task": task, "test_metric": tk, "folds": len(rows),
              "mean": mean, "std": std, f"{tk}_mean": test_mean, f"{tk}_std": test_std, "per_fold": rows,
              "split_seed": cfg.data.split_seed, "std_kind": "sample (n - 1)"}
    parent.mkdir(parents=True, exist_ok=True)
    (parent / "cv.json").write_text(json.dumps(record, indent=2))
    with open(parent / "cv.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fold", f"best_{t.monitor}", "best_epoch", tk, "epochs_run", "run_dir"])
        w.writerows([r["fold"], r["best_value"], r["best_epoch"], r[tk], r["epochs_run"], r["run_dir"]]
                    for r in rows)
        w.writerow(["mean", mean, "", test_mean, "", ""])
        w.writerow(["std", std, "", test_std, "", ""])
    diverged = any(r["diverged"] for r in rows)
    summary = {"name": cfg.name, "run_dir": str(parent), "monitor": t.monitor, "mode": t.mode, "best_value": mean,
               "best_value_std": std, "best_epoch": None, "task": task, tk: test_mean, f"{tk}_std": test_std,
               "stop_reason": f"mean over {len(rows)} folds", "diverged": diverged, "stopped_early": False,
               "epochs_run": sum(r["epochs_run"] for r in rows), "folds": len(rows),
               "seconds": round(sum(r["seconds"] for r in rows), 2)}
    (parent / "summary.json").write_text(json.dumps(summary, indent=2))  # what sweep-report reads
    return {**record, "summary": summary}


def fold_line(k: int, total: int, s: dict) -> str:
    best = "none" if s["best_value"] is None else f"{s['best_value']:.4f}"
    tk = test_key(s.get("task", "classification"))
    test = f"  {tk}={s[tk]:.4f}" if isinstance(s.get(tk), float) else ""
    return (f"fold {k}/{total}: best {s['monitor']}={best} at epoch {s['best_epoch']}{test} "
            f"({s['seconds']:.1f}s) -> {s['run_dir']}")


def print_cv(res: dict, parent: Path) -> None:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    tk = res.get("test_metric", "test_acc")
    rows = [(r["fold"], fmt(r["best_value"]), r["best_epoch"], fmt(r[tk])) for r in res["per_fold"]]
    rows.append(("mean +- std", f"{fmt(res['mean'])} +- {fmt(res['std'])}", "",
                 f"{fmt(res[f'{tk}_mean'])} +- {fmt(res[f'{tk}_std'])}"))
    console.print(table(f"[bold]{res['folds']}-fold cross-validation[/]",
                        ["fold", f"best {res['monitor']}", "best epoch", f"{tk} (best.pt)"], rows))
    note(f"parent dir: {parent}\n  fold_1 ... fold_{res['folds']}  cv.json  cv.csv  summary.json")


def cv_dir(overrides: list[str], compose: Callable[[list[str]], Any]) -> list[str]:
    """The overrides with hydra.run.dir set to a directory reserved (atomically) for this cross-validation.

    compose(overrides): the config with its hydra node, checked here before anything is created; a named
    hydra.run.dir must be new or empty (another run's is refused), a generated one takes `_2` when taken.
    """
    explicit = any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides)
    if not explicit:
        overrides = [*overrides, "hydra.run.dir=outputs/${now:%Y-%m-%d_%H-%M-%S}_${name}_cv"]
    cfg = compose(overrides)
    check_cv(validate(cfg))
    run_dir = reserve(str(cfg.hydra.run.dir), explicit)
    return [o for o in overrides if not o.lstrip("+").startswith("hydra.run.dir=")] + [f"hydra.run.dir='{run_dir}'"]
