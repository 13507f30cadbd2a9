"""Per-epoch cost of the per-layer signals: trainer.diagnostics=true (the default) vs false, same process.

Alternating rounds (on/off, then off/on, ...) of the same run; the figure is the median over rounds of
(median epoch time with signals) / (median epoch time without). Both runs keep the default loggers
(csv + tensorboard); the first epoch of each run (warm-up) is dropped.

    python scripts/bench_signals.py [--epochs 8] [--repeats 8] [--threads 2] [--clock wall|cpu] [overrides ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import torch

from dltool.config.compose import train_config
from dltool.train.callbacks import Callback
from dltool.train.run import prepare, train


class EpochClock(Callback):
    """Time between consecutive epoch ends (everything the trainer does per epoch is counted)."""

    def __init__(self, clock) -> None:
        self.clock, self.times = clock, []

    def on_fit_start(self, state) -> None:
        self.times = [self.clock()]

    def on_epoch_end(self, state, logs) -> None:
        self.times.append(self.clock())


def epoch_times(cfg, clock) -> list[float]:
    c = EpochClock(clock)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp, extra_callbacks=[c], prepared=prepare(cfg))
    return [b - a for a, b in zip(c.times, c.times[1:])][1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model=mlp trainer.batch_size=32")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    overrides = [f"trainer.epochs={args.epochs}", "trainer.patience=null", "trainer.progress=false",
                 "trainer.eval_test=false", *args.overrides]
    on = train_config(overrides)
    off = dataclasses.replace(on, trainer=dataclasses.replace(on.trainer, diagnostics=False))
    ratios, t_on, t_off = [], [], []
    for r in range(args.repeats):
        order = (on, off) if r % 2 == 0 else (off, on)
        got = {id(c): statistics.median(epoch_times(c, clock)) for c in order}
        t_on.append(got[id(on)])
        t_off.append(got[id(off)])
        ratios.append(got[id(on)] / got[id(off)])
        print(f"round {r + 1}: on {got[id(on)] * 1000:7.1f} ms/epoch  off {got[id(off)] * 1000:7.1f} ms/epoch  "
              f"ratio {ratios[-1]:.3f}", flush=True)
    print(f"{' '.join(overrides)} threads={args.threads} clock={args.clock}")
    print(f"signals on : {statistics.median(t_on) * 1000:8.1f} ms/epoch (median of rounds)")
    print(f"signals off: {statistics.median(t_off) * 1000:8.1f} ms/epoch")
    print(f"ratio      : {statistics.median(ratios):.3f}x median of {args.repeats} alternating rounds "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.03x)")


if __name__ == "__main__":
    main()
