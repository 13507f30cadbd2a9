"""Per-epoch time of dltool's trainer vs a minimal hand-written PyTorch loop, in the same process.

Both train the same model (same architecture, same initial weights) on the same in-memory tensors for
the same number of steps, and both run the same validation pass every epoch. dltool's epochs include
everything its trainer does per epoch (metrics, best/last checkpoints written atomically, metrics.csv).

    python scripts/bench_overhead.py [--epochs 8] [--repeats 10] [--model cnn_digits] [--threads 2] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from dltool.cli import config_dir
from dltool.config.schema import register_schemas, validate
from dltool.train.callbacks import Callback
from dltool.train.run import prepare, train

CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process, all threads)


class EpochClock(Callback):
    """Time between consecutive epoch ends (so everything the trainer does is counted)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_fit_start(self, state) -> None:
        self.times = [CLOCK()]

    def on_epoch_end(self, state, logs) -> None:
        self.times.append(CLOCK())


def hand_written(model, data, epochs: int, batch_size: int, lr: float) -> list[float]:
    """The loop a PyTorch user writes by hand: shuffle, slice, step, validate."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y, vx, vy = data.train.x, data.train.y, data.val.x, data.val.y
    g = torch.Generator().manual_seed(0)
    times = [CLOCK()]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = 0
            total = 0.0
            for i in range(0, len(vy), batch_size):
                out = model(vx[i:i + batch_size])
                total += F.cross_entropy(out, vy[i:i + batch_size]).item() * len(out)
                correct += (out.argmax(1) == vy[i:i + batch_size]).sum().item()
        times.append(CLOCK())
    return [b - a for a, b in zip(times, times[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--model", default="cnn_digits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: CPU time of the process (steadier on a shared machine)")
    ap.add_argument("overrides", nargs="*", help="extra config overrides, e.g. trainer.batch_size=32")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    register_schemas()
    overrides = [f"model={args.model}", f"trainer.epochs={args.epochs}", "trainer.patience=null",
                 "scheduler=none", "trainer.progress=false", "trainer.eval_test=false", *args.overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = validate(compose("train", overrides=overrides))
    ours, theirs, ratios = [], [], []
    for r in range(args.repeats):
        p = prepare(cfg)
        baseline_model = copy.deepcopy(p.setup.model)
        mine: list[float] = []
        hand: list[float] = []

        def run_ours() -> None:
            clock = EpochClock()
            with tempfile.TemporaryDirectory() as tmp:
                train(cfg, tmp, extra_callbacks=[clock], prepared=p)
            mine.extend([b - a for a, b in zip(clock.times, clock.times[1:])][1:])  # drop the warm-up epoch

        def run_theirs() -> None:
            hand.extend(hand_written(baseline_model, p.data, args.epochs, cfg.trainer.batch_size,
                                     cfg.optimizer.lr)[1:])

        for run in ((run_ours, run_theirs) if r % 2 == 0 else (run_theirs, run_ours)):  # alternate the order
            run()
        ours += mine
        theirs += hand
        ratios.append(statistics.median(mine) / statistics.median(hand))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"model={args.model} epochs={args.epochs} repeats={args.repeats} batch={cfg.trainer.batch_size} "
          f"threads={args.threads} device={p.device} clock={args.clock}")
    print(f"dltool trainer : {a * 1000:8.2f} ms/epoch median, {min(ours) * 1000:8.2f} fastest")
    print(f"hand-written   : {b * 1000:8.2f} ms/epoch median, {min(theirs) * 1000:8.2f} fastest")
    print(f"ratio          : {statistics.median(ratios):8.3f}x  median of the {args.repeats} back-to-back rounds "
          f"(each: dltool / hand-written); rounds ranged {min(ratios):.3f}-{max(ratios):.3f}  (target <= 1.05x)")


if __name__ == "__main__":
    main()
