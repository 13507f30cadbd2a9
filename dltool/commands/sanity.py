"""`dltool overfit-sanity-check`: can this setup drive the loss to ~0 on a tiny subset?

The textbook check before a long run (cs231n): turn regularization off (L1/L2, weight decay, dropout,
augmentation, label smoothing), check the loss at initialization against its expected value (ln C
for softmax cross-entropy), then train on ~20 examples until the loss is under a threshold or a step
budget is spent. A failure comes with a diagnosis a learner can act on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # OmegaConf structured configs want Optional

import torch
from torch import nn

from dltool.commands.rundir import fresh_dir, out_folder
from dltool.config.options import as_dict, load_options, options_class
from dltool.config.schema import TrainConfig
from dltool.console import console, note, table, warning
from dltool.errors import ConfigError
from dltool.models.params import short_name
from dltool.plots import loss_curve
from dltool.tasks import config_task
from dltool.train.loop import make_scaler, step
from dltool.train.losses import expected_initial_loss
from dltool.train.metrics import correct as count_correct
from dltool.train.report import finite_or_null
from dltool.train.run import prepare

RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.Hardtanh)  # units that can die (output 0 for every input)


SanityOptions = options_class("sanity", "SanityOptions", __name__)  # keys: dltool/config/keys_options.py


@dataclass
class Outcome:
    """What the run measured; `diagnosis` is empty when the check passed."""

    expected_init: float | None
    init_loss: float
    losses: list[float] = field(default_factory=list)
    final_loss: float = math.nan
    final_acc: float = 0.0
    passed: bool = False
    verdict: str = ""
    diagnosis: list[str] = field(default_factory=list)
    turned_off: list[str] = field(default_factory=list)
    init_note: str = ""
    examples: int = 0
    seconds: float = 0.0  # the training steps alone


def without_regularization(cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """The config with every regularizer off, and a list of what was on (for the report)."""
    r, o, lo = cfg.regularization, cfg.optimizer, cfg.loss
    was = [f"{k}={v}" for k, v in (("regularization.l2", r.l2), ("regularization.l1", r.l1),
                                   ("optimizer.weight_decay", o.weight_decay),
                                   ("loss.label_smoothing", lo.label_smoothing)) if v]
    was += ["regularization.activity"] if r.activity else []
    was += ["augment.ops"] if cfg.augment.ops else []
    a = cfg.augment
    was += [f"augment.{k}={getattr(a, k)}" for k in ("mixup_alpha", "cutmix_alpha") if getattr(a, k)]
    new = dataclasses.replace(
        cfg, regularization=dataclasses.replace(r, l1=0.0, l2=0.0, activity=[]),
        optimizer=dataclasses.replace(o, weight_decay=0.0), loss=dataclasses.replace(lo, label_smoothing=0.0),
        augment=dataclasses.replace(cfg.augment, ops=[], mixup_alpha=0.0, cutmix_alpha=0.0),
        scheduler=dataclasses.replace(cfg.scheduler, name="none", warmup_epochs=0))  # a constant learning rate
    return new, was


def no_dropout(model: nn.Module) -> list[str]:
    """Set every dropout probability to 0 (in place); returns the layers that had dropout."""
    off = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            off.append(f"{short_name(name)} p={m.p}")
            m.p = 0.0
    return off


def relu_activity(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per ReLU-like layer: the fraction of its units that output 0 for every example of x (dead units)."""
    dead: dict[str, float] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, RELU_LIKE):
            def hook(mod: nn.Module, inp: tuple, out: torch.Tensor, name: str = name) -> None:
                alive = (out != 0).flatten(1).any(0)  # (units,)
                dead[short_name(name)] = 1.0 - alive.float().mean().item()
            handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return dead


def grad_report(model: nn.Module) -> tuple[list[str], list[str]]:
    """(parameters frozen with requires_grad=False, trainable parameters whose gradient is exactly zero)."""
    frozen, zero = [], []
    for name, p in model.named_parameters():
        short = short_name(name)
        if not p.requires_grad:
            frozen.append(short)
        elif p.grad is None or not torch.any(p.grad != 0):
            zero.append(short)
    return frozen, zero


def train_steps(s: Any, x: torch.Tensor, y: torch.Tensor, opts: SanityOptions) -> tuple[list[float], tuple]:
    """Up to max_steps optimizer steps on (x, y); returns the loss before each step and the first step's grads."""
    bs = min(opts.batch_size or len(y), len(y))
    per_pass = -(-len(y) // bs)
    g = torch.Generator().manual_seed(0)
    losses: list[float] = []
    grads: tuple = ([], [])
    s.model.train()
    s.optimizer.zero_grad(set_to_none=True)
    order = torch.arange(len(y))
    for k in range(opts.max_steps):
        if k % per_pass == 0 and bs < len(y):
            order = torch.randperm(len(y), generator=g)
        idx = order[(k % per_pass) * bs:(k % per_pass + 1) * bs].to(x.device)
        loss = s.loss_fn(s.model(x[idx]), y[idx])  # x[idx]: (B, ...)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]) or (per_pass == 1 and losses[-1] < opts.loss_threshold):
            break  # full batch: stop before stepping, so the final loss below is this one
        loss.backward()
        if k == 0:
            grads = grad_report(s.model)
            before = [q.detach().clone() for q in s.model.parameters()]
        step(s, make_scaler(s))
        if k == 0 and no_change(s, before, per_pass == 1):
            break  # a step that changes nothing will never change anything: no need to run all max_steps
        if per_pass > 1 and len(losses) >= per_pass and sum(losses[-per_pass:]) / per_pass < opts.loss_threshold:
            break
    return losses, grads


def no_change(s: Any, before: list[torch.Tensor], full_batch: bool) -> bool:
    """The first step left every weight as it was, and the next ones cannot do better (lr 0, or the same batch)."""
    if any(not torch.equal(a, b) for a, b in zip(before, s.model.parameters())):
        return False
    return full_batch or all(g["lr"] == 0 for g in s.optimizer.param_groups)


def build(cfg: TrainConfig, opts: SanityOptions) -> tuple[Any, torch.Tensor, torch.Tensor, int, list[str]]:
    """Everything `dltool train` would build (seeded, initialized), dropout off, and the tiny subset."""
    if opts.examples < 1 or opts.max_steps < 1:
        bad = "examples" if opts.examples < 1 else "max_steps"
        raise ConfigError(f"sanity.{bad}={getattr(opts, bad)} must be at least 1.")
    p = prepare(cfg)
    dropped = no_dropout(p.setup.model)
    g = torch.Generator().manual_seed(cfg.trainer.seed)
    x, y = next(iter(p.data.train.batches(opts.examples, g)))  # a random subset of the training split
    return p.setup, x.to(p.device), y.to(p.device), p.data.num_classes, dropped


def overfit(cfg: TrainConfig, opts: SanityOptions) -> Outcome:
    """Run the check; the Outcome carries the numbers and, on failure, the diagnosis."""
    cfg, turned_off = without_regularization(cfg)
    s, x, y, num_classes, dropped = build(cfg, opts)
    t0 = time.perf_counter()
    losses, (frozen, zero) = train_steps(s, x, y, opts)
    seconds = time.perf_counter() - t0
    with torch.no_grad():  # training mode: what the optimizer saw (batch-norm batch statistics)
        logits = s.model(x)
        final = s.loss_fn(logits, y).item()
        task = s.task
        acc = count_correct(task, logits, y).item() / len(y) if task != "regression" else math.nan
    expected = expected_initial_loss(cfg.loss.name, num_classes, cfg.loss.margin, task,
                                     cfg.loss.delta if cfg.loss.name == "huber" else cfg.loss.beta)
    o = Outcome(expected, losses[0], losses, final, acc,
                turned_off=turned_off + dropped, examples=len(y), seconds=seconds)
    o.passed = math.isfinite(final) and final < opts.loss_threshold
    o.init_note = init_check(o, cfg, opts, num_classes)
    if not o.passed:
        dead = relu_activity(s.model, x) if math.isfinite(final) else {}
        o.verdict, o.diagnosis = diagnose(o, cfg, opts, (frozen, zero), dead)
    return o


def init_check(o: Outcome, cfg: TrainConfig, opts: SanityOptions, num_classes: int) -> str:
    """A warning when the loss at initialization is far from the textbook value ('' when fine)."""
    if o.expected_init is None or not math.isfinite(o.init_loss):
        return ""
    off = abs(o.init_loss - o.expected_init) / o.expected_init
    if off <= opts.init_tolerance:
        return ""
    task = config_task(dataclasses.asdict(cfg.data))
    what = {"classification": f"{num_classes} classes", "regression": "standardized targets (outputs ~ 0)"}.get(
        task, "sigmoid outputs (ln 2 per label)")
    return (f"the loss at initialization ({o.init_loss:.4g}) is {off:.0%} off the expected {o.expected_init:.4g} "
            f"for {cfg.loss.name} with {what}: the initial scores are not small, so the weights "
            f"(init.scheme={cfg.init.scheme}) are probably too large or a bias is far from 0.")


def diagnose(o: Outcome, cfg: TrainConfig, opts: SanityOptions, grads: tuple[list[str], list[str]],
             dead: dict[str, float]) -> tuple[str, list[str]]:
    """(verdict, actionable causes) for a failed check, most specific first."""
    lr, init, final = cfg.optimizer.lr, o.init_loss, o.final_loss
    finite = [v for v in o.losses if math.isfinite(v)]
    if not math.isfinite(final) or len(finite) < len(o.losses) or max(finite) > 10 * max(init, 1e-12):
        # losses[i] is the loss after i optimizer steps (losses[0]: at initialization)
        i = next((i for i, v in enumerate(o.losses) if not math.isfinite(v) or v > 10 * init), len(o.losses))
        worst = o.losses[i] if i < len(o.losses) else final if not math.isfinite(final) else max(finite)
        when = "at initialization" if i == 0 else f"after step {i}"
        return (f"the loss exploded (it reached {worst:.4g} {when})",
                [f"the learning rate is too high: try optimizer.lr={lr / 10:g} (10x smaller)",
                 "or clip gradients: regularization.clip_grad_norm=1.0"])
    if final > opts.stuck_fraction * init:
        return f"the loss is stuck near its initial value ({init:.4g} -> {final:.4g})", stuck_causes(cfg, grads, dead)
    more_steps = f"sanity.max_steps={opts.max_steps * 4}"
    if o.final_acc == 1.0:
        return (f"training accuracy is 100% but the loss is still {final:.4g} (threshold {opts.loss_threshold:g})",
                [(f"the predictions are right but not confident yet: give it more steps ({more_steps}) "
                  f"or a larger learning rate (optimizer.lr={lr * 3:g})")])
    slow = (f"learning too slowly: raise the learning rate (optimizer.lr={lr * 3:g}) "
            f"or the budget ({more_steps})")
    verdict = (f"the loss fell ({init:.4g} -> {final:.4g}) but not below {opts.loss_threshold:g} in "
               f"{len(o.losses)} steps (training accuracy {o.final_acc:.0%})")
    return (verdict,
            [slow, "if it plateaus, the model may be too small or too constrained to memorize even these examples"])


def stuck_causes(cfg: TrainConfig, grads: tuple[list[str], list[str]], dead: dict[str, float]) -> list[str]:
    """Why nothing is being learned: zero learning rate, frozen layers, no gradient, dead ReLUs."""
    frozen, zero = grads
    lr = cfg.optimizer.lr
    causes = []
    if lr == 0:
        causes.append(f"optimizer.lr={lr:g}: the optimizer never changes a weight; use e.g. optimizer.lr=1e-3 "
                      f"(adam) or 1e-2 (sgd)")
    if frozen:
        causes.append(f"frozen parameters (requires_grad=False): {short_list(frozen)}")
    if zero:
        causes.append(f"gradients are not flowing: these parameters get an all-zero gradient: {short_list(zero)}")
    bad = {k: v for k, v in dead.items() if v >= 0.5}
    if bad:
        causes.append("dead ReLUs (units that output 0 for every example, so no gradient passes them): "
                      + ", ".join(f"{k} {v:.0%} dead" for k, v in bad.items())
                      + "; lower the learning rate, use init.bias=0 (or small positive), or try leaky_relu")
    if lr != 0 and not causes:
        causes.append(f"the learning rate may be too low: try optimizer.lr={lr * 10:g} (10x larger)")
    return causes


def short_list(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def sparkline(values: list[float], width: int = 60) -> str:
    """The loss curve in one line of block characters (log scale)."""
    vals = [v for v in values if math.isfinite(v) and v > 0]
    if len(vals) < 2:
        return ""
    n = min(width, len(vals))
    picked = [vals[round(i * (len(vals) - 1) / (n - 1))] for i in range(n)]
    logs = [math.log10(v) for v in picked]
    lo, hi = min(logs), max(logs)
    blocks = "▁▂▃▄▅▆▇█"
    return "".join(blocks[int((v - lo) / (hi - lo) * 7) if hi > lo else 0] for v in logs)


def write_outputs(o: Outcome, cfg: TrainConfig, opts: SanityOptions) -> Path:
    out = Path(opts.out_dir) if opts.out_dir else Path("outputs") / "sanity" / \
        f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{cfg.name}"
    out = out_folder(out) if opts.out_dir else fresh_dir(out)  # its own dir, atomically
    out.mkdir(parents=True, exist_ok=True)
    loss_curve(o.losses, out / "loss_curve.png", opts.loss_threshold, o.expected_init,
               f"overfit sanity check: {cfg.name}, {opts.examples} examples")
    record = {**dataclasses.asdict(o), "options": as_dict(opts), "config_name": cfg.name}
    (out / "sanity.json").write_text(json.dumps(finite_or_null(record), indent=2, default=str, allow_nan=False))
    return out


def run_sanity(cfg: TrainConfig, args: list[str]) -> int:
    """`dltool overfit-sanity-check`: 0 when the subset can be overfit, 1 (with a diagnosis) when not."""
    opts = load_options(SanityOptions, "sanity", args)
    o = overfit(cfg, opts)
    out = write_outputs(o, cfg, opts)
    print_outcome(o, cfg, opts, out)
    return 0 if o.passed else 1


def print_outcome(o: Outcome, cfg: TrainConfig, opts: SanityOptions, out: Path) -> None:
    off = f"turned off: {', '.join(o.turned_off)}" if o.turned_off else "none was on"
    note(f"[bold]overfit sanity check[/]: {cfg.name}, {o.examples} training examples, {cfg.optimizer.name} "
         f"lr={cfg.optimizer.lr:g}; regularization off ({off})")
    expected = f"{o.expected_init:.4f}" if o.expected_init is not None else "no textbook value for this loss"
    rows = [("loss at init (expected)", expected),
            ("loss at init (measured)", f"{o.init_loss:.4f}" + ("  [yellow]warning[/]" if o.init_note else "  ok")),
            ("final loss", f"{o.final_loss:.4g} (threshold {opts.loss_threshold:g})"),
            ("training accuracy on the subset",
             f"{o.final_acc:.2%}" if o.final_acc == o.final_acc else "n/a (regression)"),
            ("steps", f"{len(o.losses)} of {opts.max_steps} ({o.seconds:.1f}s)")]
    console.print(table("results", ["", ""], rows, False))
    line = sparkline(o.losses)
    if line:
        note(f"loss curve (log scale): {o.losses[0]:.3g} {line} {o.losses[-1]:.3g}")
    if o.init_note:
        warning(o.init_note)
    if o.passed:
        note(f"[bold green]PASS[/]: the loss reached {o.final_loss:.4g} < {opts.loss_threshold:g} in "
             f"{len(o.losses)} steps; the model, loss and optimizer can learn.")
    else:
        note(f"[bold red]FAIL[/]: {o.verdict}.")
        for cause in o.diagnosis:
            note(f"  - {cause}")
    note(f"wrote loss_curve.png, sanity.json to {out}")
