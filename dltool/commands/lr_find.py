"""`dltool lr-find`: the learning-rate range test (Smith 2017; the fastai / Lightning lr finder).

From the config's initial weights, train one mini-batch per step while the learning rate grows
exponentially from lr_find.start to lr_find.end; stop when the smoothed loss exceeds
lr_find.divergence times its minimum. The suggestion is the lr at the minimum of the smoothed loss
divided by lr_find.divisor (a rate still safely on the falling side of the curve). Only lr_find.png and
lr_find.json are written, to their own folder: no run dir and no checkpoint is read for weights or touched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Iterator  # OmegaConf structured configs want Optional

import torch

from dltool.commands.rundir import fresh_dir, out_folder
from dltool.config.options import as_dict, load_options, options_class
from dltool.config.schema import TrainConfig
from dltool.console import console, note, table
from dltool.errors import ConfigError
from dltool.plots import lr_range
from dltool.train.loop import Setup, autocast, make_scaler, step
from dltool.train.run import Prepared, prepare

LrFindOptions = options_class("lr_find", "LrFindOptions", __name__)  # keys: dltool/config/keys_options.py


def check_options(o: LrFindOptions) -> None:
    if not 0 < o.start < o.end:
        raise ConfigError(f"lr_find.start={o.start:g} and lr_find.end={o.end:g}: need 0 < start < end.")
    if o.steps < 5:
        raise ConfigError(f"lr_find.steps={o.steps} must be at least 5 (mini-batches along the lr range).")
    if not 0 <= o.smoothing < 1:
        raise ConfigError(f"lr_find.smoothing={o.smoothing:g} must be in [0, 1) (0: no smoothing).")
    if o.divergence <= 1 or o.divisor < 1:
        bad = ("divergence", o.divergence) if o.divergence <= 1 else ("divisor", o.divisor)
        raise ConfigError(f"lr_find.{bad[0]}={bad[1]:g} must be greater than 1.")


def endless_batches(p: Prepared, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training mini-batches, epoch after epoch (the range test may need more than one pass)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        for x, y in p.data.train.batches(batch_size, g):
            yield x.to(p.device, non_blocking=True), y.to(p.device, non_blocking=True)


def lr_at(o: LrFindOptions, i: int) -> float:
    return o.start * (o.end / o.start) ** (i / (o.steps - 1))


def range_test(cfg: TrainConfig, p: Prepared, o: LrFindOptions) -> dict:
    """Step through the lr range; returns lrs, raw and smoothed losses, and why it stopped."""
    s: Setup = dataclasses.replace(p.setup, scheduler=None, interval="epoch", accumulate=1)  # lr set here
    scaler, batches = make_scaler(s), endless_batches(p, cfg.trainer.batch_size, cfg.trainer.seed)
    g = torch.Generator().manual_seed(cfg.trainer.seed)  # augmentation draws
    mults = [grp.get("lr_mult", 1.0) for grp in s.optimizer.param_groups]
    lrs, losses, smoothed, avg, reason = [], [], [], 0.0, f"reached lr_find.end={o.end:g}"
    s.model.train()
    s.optimizer.zero_grad(set_to_none=True)
    for i in range(o.steps):
        lr = lr_at(o, i)
        for grp, m in zip(s.optimizer.param_groups, mults):
            grp["lr"] = lr * m
        x, y = next(batches)  # (B, ...), (B,)
        if s.augment is not None:
            x = s.augment(x, g)
        with autocast(s.device, s.precision):
            data_loss = s.loss_fn(s.model(x), y)
            loss = data_loss + s.penalty() if s.penalty is not None else data_loss
        scaler.scale(loss).backward()
        step(s, scaler)
        value = float(data_loss.detach())
        avg = o.smoothing * avg + (1 - o.smoothing) * value
        lrs.append(lr)
        losses.append(value)
        smoothed.append(avg / (1 - o.smoothing ** (i + 1)))  # bias-corrected, as in Adam
        if not math.isfinite(smoothed[-1]):
            reason = f"the loss became {value} at lr {lr:.2e}"
            break
        if i > 0 and smoothed[-1] > o.divergence * min(smoothed):
            reason = f"the smoothed loss exceeded {o.divergence:g}x its minimum at lr {lr:.2e}"
            break
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed, "stop_reason": reason}


def suggest(curve: dict, o: LrFindOptions) -> dict:
    """lr at the smoothed loss's minimum, the suggestion (that / divisor) and the steepest descent (for reference)."""
    sm = [v if math.isfinite(v) else math.inf for v in curve["smoothed"]]
    i_min = min(range(len(sm)), key=sm.__getitem__)
    lrs = curve["lrs"]
    first = min(len(sm) // 10, max(i_min - 1, 0))  # the first steps are noise around the initial loss
    slopes = {i: (sm[i + 1] - sm[i]) / math.log(lrs[i + 1] / lrs[i]) for i in range(first, max(i_min, first + 1))
              if i + 1 < len(sm)}
    i_steep = min(slopes, key=slopes.__getitem__) if slopes else 0
    return {"min_loss": sm[i_min], "min_loss_lr": lrs[i_min], "steepest_lr": lrs[i_steep],
            "suggested_lr": lrs[i_min] / o.divisor}


def override_for(cfg: TrainConfig, lr: float) -> str:
    """The override that uses the suggestion: the peak of a one-cycle schedule, otherwise the base lr."""
    return f"scheduler.max_lr={lr:.3g}" if cfg.scheduler.name == "onecycle" else f"optimizer.lr={lr:.3g}"


def write_outputs(cfg: TrainConfig, o: LrFindOptions, curve: dict, best: dict) -> Path:
    out = Path(o.out_dir) if o.out_dir else Path("outputs") / "lr_find" / \
        f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{cfg.name}"
    out = out_folder(out) if o.out_dir else fresh_dir(out)  # its own dir, atomically
    out.mkdir(parents=True, exist_ok=True)
    lr_range(curve["lrs"], curve["smoothed"], best["suggested_lr"], best["min_loss_lr"], out / "lr_find.png",
             f"lr range test: {cfg.name}, {cfg.optimizer.name}, batch {cfg.trainer.batch_size}")
    record = {**best, "override": override_for(cfg, best["suggested_lr"]), "stop_reason": curve["stop_reason"],
              "steps_run": len(curve["lrs"]), "options": as_dict(o), "config_name": cfg.name,
              "optimizer": cfg.optimizer.name, "batch_size": cfg.trainer.batch_size,
              "lrs": curve["lrs"], "losses": curve["losses"], "smoothed_losses": curve["smoothed"]}
    (out / "lr_find.json").write_text(json.dumps(record, indent=2))
    return out


def run_lr_find(cfg: TrainConfig, args: list[str], train_args: list[str]) -> int:
    """`dltool lr-find`: run the range test, write lr_find.png/json, print the suggestion and its override."""
    o = load_options(LrFindOptions, "lr_find", args)
    check_options(o)
    t0 = time.perf_counter()
    curve = range_test(cfg, prepare(cfg), o)
    best = suggest(curve, o)
    out = write_outputs(cfg, o, curve, best)
    override = override_for(cfg, best["suggested_lr"])
    rows = [("steps", f"{len(curve['lrs'])} of {o.steps} ({time.perf_counter() - t0:.1f}s)"),
            ("stopped because", curve["stop_reason"]),
            ("lowest smoothed loss", f"{best['min_loss']:.4f} at lr {best['min_loss_lr']:.2e}"),
            ("steepest descent at", f"lr {best['steepest_lr']:.2e}"),
            ("suggested lr", f"{best['suggested_lr']:.3g} (lowest-loss lr / {o.divisor:g})")]
    console.print(table(f"[bold]lr range test[/]: {cfg.name}, {cfg.optimizer.name}", ["", ""], rows, False))
    kept = [a for a in train_args if not a.startswith(override.split("=")[0] + "=")]
    note(f"suggested learning rate: [bold]{best['suggested_lr']:.3g}[/]; train with: "
         f"dltool train {' '.join([*kept, override])}")
    note(f"wrote lr_find.png, lr_find.json to {out}")
    return 0
