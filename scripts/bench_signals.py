"""Per-epoch cost of the per-layer signals: trainer.diagnostics=true (the default) vs false, same process.

Alternating rounds (on/off, then off/on, ...) of the same run; the figure is the median over rounds of
(median epoch time with signals) / (median epoch time without). Both runs keep the default loggers
(csv + tensorboard); the first epoch of each run (warm-up) is dropped.

    python scripts/bench_signals.py [--epochs 8] [--repeats 8] [--threads 2] [--clock wall|cpu] [overrides ...]
    python scripts/bench_signals.py --isolated [--repeats 16]   # the step loop + validation + Signals alone

Whole runs also contain costs that are triggered by wall time (curves.png is redrawn when 15 s have passed,
TensorBoard histograms every 30 s): on a loaded machine a redraw lands in one run's measured epochs and not the
other's. --isolated times train_one_epoch + evaluate with and without the Signals hooks and per-epoch work,
alternating epoch by epoch on the same model, which is the per-epoch cost the signals add.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dltool.config.compose import train_config
from dltool.train.callbacks import Callback, FitState
from dltool.train.loop import evaluate, make_scaler, train_one_epoch
from dltool.train.run import prepare, train
from dltool.train.signals import Signals


class EpochClock(Callback):
    """Time between consecutive epoch ends, taken after every other callback (all per-epoch work counts)."""

    priority = 1000

    def __init__(self, clock) -> None:
        self.clock, self.times = clock, []

    def on_fit_start(self, state) -> None:
        self.times = [self.clock()]

    def on_epoch_end(self, state, logs) -> None:
        self.times.append(self.clock())


def epoch_times(cfg, clock) -> tuple[list[float], float]:
    """(per-epoch times without the first epoch, the once-per-run rest: fit start + first epoch + fit end)."""
    c = EpochClock(clock)
    p = prepare(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = clock()
        train(cfg, tmp, extra_callbacks=[c], prepared=p)
        total = clock() - t0
    epochs = [b - a for a, b in zip(c.times, c.times[1:])]
    return epochs[1:], total - sum(epochs[1:])


def isolated(cfg, repeats: int, clock) -> None:
    p = prepare(cfg)
    s, d, bs = p.setup, p.data, cfg.trainer.batch_size
    g = torch.Generator().manual_seed(0)
    scaler = make_scaler(s)
    state = FitState(s.model, Path(tempfile.mkdtemp()), epochs=10 ** 6, history=[{}])  # not fresh: no probe loss
    steps = -(-d.train.num_batches(bs) // cfg.trainer.accumulate)
    sig = Signals(s.optimizer, steps, s.loss_fn, next(iter(d.val.batches(bs))))

    def epoch(with_signals: bool) -> float:
        t = clock()
        if with_signals:
            sig.on_fit_start(state)
            sig.on_epoch_start(state, d.train.num_batches(bs))
        train_one_epoch(s, d.train.batches(bs, g), d.train.num_batches(bs), g, scaler)
        evaluate(s.model, s.loss_fn, d.val, bs, s.device, s.precision)
        if with_signals:
            state.epoch += 1
            sig.on_epoch_end(state, {})
            sig.on_fit_end(state)  # removes the hooks again
        return clock() - t

    epoch(True), epoch(False)  # warm-up
    on, off = [], []
    for r in range(repeats):
        for w in ((True, False) if r % 2 == 0 else (False, True)):
            (on if w else off).append(epoch(w))
    print(f"isolated: on {statistics.median(on) * 1000:.1f} ms/epoch, off {statistics.median(off) * 1000:.1f} ms/epoch,"
          f" ratio of medians {statistics.median(on) / statistics.median(off):.3f}x, of fastest "
          f"{min(on) / min(off):.3f}x ({repeats} epochs each, alternating)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--isolated", action="store_true", help="time the step loop with/without the signals only")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. model=mlp trainer.batch_size=32")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    overrides = [f"trainer.epochs={args.epochs}", "trainer.patience=null", "trainer.progress=false",
                 "trainer.eval_test=false", *args.overrides]
    on = train_config(overrides)
    if args.isolated:
        return isolated(on, args.repeats, clock)
    off = dataclasses.replace(on, trainer=dataclasses.replace(on.trainer, diagnostics=False))
    ratios, low, whole, t_on, t_off, once_on, once_off = [], [], [], [], [], [], []
    for r in range(args.repeats):
        order = (on, off) if r % 2 == 0 else (off, on)
        got = {id(c): epoch_times(c, clock) for c in order}
        (a, rest_a), (b, rest_b) = got[id(on)], got[id(off)]
        t_on.append(statistics.median(a))
        t_off.append(statistics.median(b))
        once_on.append(rest_a)
        once_off.append(rest_b)
        ratios.append(t_on[-1] / t_off[-1])
        whole.append((sum(a) + rest_a) / (sum(b) + rest_b))  # the run from train() call to return
        low.append(min(a) / min(b))  # contention only adds time: the fastest epochs are the least disturbed
        print(f"round {r + 1}: on {t_on[-1] * 1000:7.1f} ms/epoch  off {t_off[-1] * 1000:7.1f} ms/epoch  "
              f"ratio {ratios[-1]:.3f}  fastest-epoch ratio {low[-1]:.3f}", flush=True)
    print(f"{' '.join(overrides)} threads={args.threads} clock={args.clock}")
    print(f"signals on : {statistics.median(t_on) * 1000:8.1f} ms/epoch (median of rounds)")
    print(f"signals off: {statistics.median(t_off) * 1000:8.1f} ms/epoch")
    print(f"ratio      : {statistics.median(ratios):.3f}x median of {args.repeats} alternating rounds "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.03x); fastest epochs: "
          f"{statistics.median(low):.3f}x")
    print(f"once per run (setup, first epoch, end-of-run figures): on {statistics.median(once_on):.2f} s, "
          f"off {statistics.median(once_off):.2f} s")
    print(f"whole runs : {statistics.median(whole):.3f}x (total time of a run, median of rounds, "
          f"range {min(whole):.3f}-{max(whole):.3f})")

if __name__ == "__main__":
    main()
