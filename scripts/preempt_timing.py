"""Signal-to-exit time of a preempted `dltool train` and bitwise equality of the resumed runs (N of N).

    python scripts/preempt_timing.py [--runs 5] [--ddp-runs 2] [--out DIR]

Each run: start `dltool train`, wait until the given number of epochs is in metrics.csv plus a random delay
(so the signal lands anywhere in an epoch), send SIGTERM, time until last.pt is written (its mtime) and until
the process has exited (Python's and torch's teardown included), resume it, and compare last.pt's weights and
metrics.csv (without the wall-clock column) with one uninterrupted run.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ENV = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
SINGLE = ["model=mlp", "trainer.patience=null", "trainer.batch_size=8", "trainer.epochs=5"]
DDP = [*SINGLE, "trainer.devices=2", "trainer.device=cpu", "scheduler=none"]


def dltool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dltool", *args], cwd=cwd, env=ENV, capture_output=True, text=True)


def epochs_done(run: Path) -> int:
    f = run / "metrics.csv"
    return max(0, len(f.read_text().splitlines()) - 1) if f.is_file() else 0


def interrupted(args: list[str], run: Path, after: int, rng: random.Random) -> tuple[float, float, int]:
    """(seconds from SIGTERM to last.pt written (its mtime), to the process gone, exit status)."""
    proc = subprocess.Popen([sys.executable, "-m", "dltool", "train", *args, f"hydra.run.dir={run}"], cwd=run.parent,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while epochs_done(run) < after:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.3))
    t0, wall = time.perf_counter(), time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    gone = time.perf_counter() - t0
    return (run / "checkpoints" / "last.pt").stat().st_mtime - wall, gone, proc.returncode


def same(a: Path, b: Path) -> bool:
    wa, wb = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in (a, b))
    rows = [[{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(open(x / "metrics.csv"))]
            for x in (a, b)]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and rows[0] == rows[1]


def measure(label: str, args: list[str], runs: int, out: Path, rng: random.Random) -> None:
    whole = out / f"{label}_whole"
    assert dltool("train", *args, f"hydra.run.dir={whole}", cwd=out).returncode == 0
    saved, times, equal = [], [], 0
    for i in range(runs):
        run = out / f"{label}_{i}"
        written, seconds, code = interrupted(args, run, 1 + i % 3, rng)
        resumed = dltool("train", f"resume={run}", cwd=out)
        ok = code == 75 and resumed.returncode == 0 and same(whole, run)
        saved.append(written)
        times.append(seconds)
        equal += ok
        print(f"{label} run {i}: SIGTERM -> last.pt written {written * 1000:.0f} ms, process gone {seconds:.2f} s "
              f"(status {code}); resumed bitwise equal: {ok}", flush=True)
    print(f"{label}: signal -> last.pt median {statistics.median(saved) * 1000:.0f} ms (max {max(saved) * 1000:.0f}); "
          f"signal -> exit median {statistics.median(times):.2f} s (max {max(times):.2f}); "
          f"bitwise equal after resume: {equal} of {runs}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ddp-runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="preempt_"))
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    measure("single", SINGLE, a.runs, out, rng)
    if a.ddp_runs:
        measure("ddp2", DDP, a.ddp_runs, out, rng)


if __name__ == "__main__":
    main()
