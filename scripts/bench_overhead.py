"""Per-epoch time of dltool's trainer vs a minimal hand-written PyTorch loop, in the same process.

Both train the same model (same architecture, same initial weights) on the same in-memory tensors for
the same number of steps, and both run the same validation pass every epoch. dltool's epochs include
everything its trainer does per epoch (metrics, best/last checkpoints written atomically, metrics.csv).

    python scripts/bench_overhead.py [--epochs 8] [--repeats 10] [--model cnn_digits] [--threads 2] [--clock wall|cpu]

scripts/bench.py (the whole suite) imports this module for its cases 1 and 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from dltool.config.schema import register_schemas, validate
from dltool.config.variants import config_dir
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


def compose_cfg(overrides: list[str]):
    """The validated TrainConfig for train.yaml + overrides (as the CLI composes it)."""
    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return validate(compose("train", overrides=overrides))


BASE = ["trainer.patience=null", "scheduler=none", "trainer.progress=false", "trainer.eval_test=false"]


def autocast(device: torch.device, precision: str):
    """The hand loop's mixed precision: bf16 autocast where dltool uses it, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def hand_written(model, data, epochs: int, batch_size: int, lr: float, precision: str = "32") -> list[float]:
    """The loop a PyTorch user writes by hand: shuffle, slice, step, validate (tensors already on the device)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y, vx, vy = data.train.x, data.train.y, data.val.x, data.val.y
    g = torch.Generator().manual_seed(0)
    times = [CLOCK()]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g).to(x.device)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            with autocast(x.device, precision):
                loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), autocast(x.device, precision):
            correct = 0
            total = 0.0
            for i in range(0, len(vy), batch_size):
                out = model(vx[i:i + batch_size])
                total += F.cross_entropy(out, vy[i:i + batch_size]).item() * len(out)
                correct += (out.argmax(1) == vy[i:i + batch_size]).sum().item()
        times.append(sync())
    return [b - a for a, b in zip(times, times[1:])]


def sync() -> float:
    """The clock, after the GPU finished its queued work (timings of asynchronous CUDA work are meaningless)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return CLOCK()


def dltool_epochs(cfg, p) -> list[float]:
    """Per-epoch seconds of dltool's trainer (everything between two epoch ends), warm-up epoch dropped."""
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp, extra_callbacks=[clock], prepared=p)
    return [b - a for a, b in zip(clock.times, clock.times[1:])][1:]


@dataclass
class Rounds:
    ours: list[float] = field(default_factory=list)  # per-epoch seconds, all rounds
    theirs: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # per round: median(ours) / median(theirs)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def alternate(rounds: int, ours: Callable, theirs: Callable, setup: Callable[[int], Any] = lambda r: None) -> Rounds:
    """Run both sides `rounds` times back to back, alternating which goes first. setup(r) builds what both sides
    of round r share (passed to each); each side returns per-epoch seconds."""
    out = Rounds()
    for r in range(rounds):
        ctx = setup(r)
        got: dict[str, list[float]] = {}
        sides = (("ours", ours), ("theirs", theirs))
        for name, run in sides if r % 2 == 0 else sides[::-1]:
            got[name] = run(ctx)
        out.ours += got["ours"]
        out.theirs += got["theirs"]
        out.ratios.append(statistics.median(got["ours"]) / statistics.median(got["theirs"]))
    return out


def overhead_rounds(cfg, rounds: int, epochs: int) -> Rounds:
    """dltool's trainer vs the hand loop on the same model, initial weights and in-memory tensors."""
    def setup(r: int) -> tuple:
        p = prepare(cfg)
        return p, copy.deepcopy(p.setup.model)  # the same initial weights for the hand loop

    def theirs(ctx: tuple) -> list[float]:
        p, model = ctx
        return hand_written(model, p.data, epochs, cfg.trainer.batch_size, cfg.optimizer.lr,
                            p.setup.precision)[1:]  # drop the warm-up epoch

    return alternate(rounds, lambda ctx: dltool_epochs(cfg, ctx[0]), theirs, setup)


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
    cfg = compose_cfg([f"model={args.model}", f"trainer.epochs={args.epochs}", *BASE, *args.overrides])
    res = overhead_rounds(cfg, args.repeats, args.epochs)
    a, b = statistics.median(res.ours), statistics.median(res.theirs)
    print(f"model={args.model} epochs={args.epochs} repeats={args.repeats} batch={cfg.trainer.batch_size} "
          f"threads={args.threads} clock={args.clock}")
    print(f"dltool trainer : {a * 1000:8.2f} ms/epoch median, {min(res.ours) * 1000:8.2f} fastest")
    print(f"hand-written   : {b * 1000:8.2f} ms/epoch median, {min(res.theirs) * 1000:8.2f} fastest")
    print(f"ratio          : {res.ratio:8.3f}x  median of the {args.repeats} back-to-back rounds "
          f"(each: dltool / hand-written); rounds ranged {min(res.ratios):.3f}-{max(res.ratios):.3f}  "
          f"(target <= 1.05x)")


if __name__ == "__main__":
    main()
