"""Measure scaling out (issue 12): DDP with 2 CPU ranks vs 1 process, and a 12-trial search with and without pruning.

    python scripts/bench_scaling.py [--epochs 10] [--trials 12] [--out /tmp/bench_scaling]

Prints one line per measurement: time per epoch and test accuracy for 1 process (batch 64) and 2 gloo ranks
(2 x 32), the largest weight difference after one epoch between the two, and total time / best val_loss of
a random search with pruner none vs median. Figures on a shared 2-core machine are for the record only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch

ENV = {**os.environ, "DLTOOL_NO_PROGRESS": "1"}


def dltool(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dltool", *args], check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def epoch_time(run: Path) -> float:
    with open(run / "metrics.csv") as f:
        times = [float(r["time"]) for r in csv.DictReader(f)]
    return sum(times[1:]) / max(1, len(times) - 1)  # the first epoch pays for warm-up


def ddp(out: Path, epochs: int, only_allclose: bool = False) -> None:
    for name, extra in (("one", ["trainer.devices=1", "trainer.batch_size=64"]),
                        ("two", ["trainer.devices=2", "trainer.device=cpu", "trainer.batch_size=32"])):
        run = out / f"ddp_{name}"
        if only_allclose:
            continue
        wall = dltool("train", *extra, f"trainer.epochs={epochs}", "trainer.patience=null", f"hydra.run.dir={run}")
        s = json.loads((run / "summary.json").read_text())
        print(f"{name} process(es): {epoch_time(run) * 1000:.0f} ms/epoch, test_acc {s['test_acc']:.4f}, "
              f"best val_loss {s['best_value']:.4f}, wall {wall:.1f}s")
    for name, extra in (("one1", ["trainer.devices=1", "trainer.batch_size=64"]),
                        ("two1", ["trainer.devices=2", "trainer.device=cpu", "trainer.batch_size=32"])):
        dltool("train", *extra, "model=mlp", "trainer.epochs=1", "scheduler=none", "trainer.eval_test=false",
               f"hydra.run.dir={out / name}")  # no dropout, no batch norm: the two runs must agree
    a, b = (torch.load(out / n / "checkpoints" / "last.pt", weights_only=True)["model"] for n in ("one1", "two1"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    rel = max(((a[k] - b[k]).abs() / a[k].abs().clamp_min(1e-3)).max().item() for k in a)
    print(f"one epoch of model=mlp, 2 x 32 vs 1 x 64: max |diff| {diff:.2e}, max relative diff {rel:.2e}")


def search(out: Path, trials: int, epochs: int) -> None:
    for pruner in ("none", "median"):
        sweep = out / f"search_{pruner}"
        wall = dltool("train", "-m", "hparams_search=lr_random", f"hydra.sweeper.n_trials={trials}",
                      f"trainer.epochs={epochs}", f"hydra/sweeper/pruner={pruner}", f"hydra.sweep.dir={sweep}")
        study = optuna.load_study(study_name="cnn_digits", storage=f"sqlite:///{sweep}/optuna.db")
        states = [t.state.name for t in study.trials]
        epochs_run = sum(json.loads((sweep / str(t.number) / "summary.json").read_text())["epochs_run"]
                         for t in study.trials)
        print(f"search pruner={pruner}: {wall:.1f}s for {trials} trials ({epochs_run} epochs trained, "
              f"{states.count('PRUNED')} pruned), best val_loss {study.best_value:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--out", default="/tmp/bench_scaling")
    ap.add_argument("--only", choices=["ddp", "allclose", "search"], default=None)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if a.only in (None, "ddp", "allclose"):
        ddp(out, a.epochs, a.only == "allclose")
    if a.only in (None, "search"):
        search(out, a.trials, a.epochs)


if __name__ == "__main__":
    main()
