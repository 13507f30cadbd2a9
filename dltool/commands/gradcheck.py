"""`dltool gradcheck`: compare backprop's gradients with centered differences, in float64.

For each parameter tensor (all of its elements, or a seeded random sample of `max_elements`), the
numerical gradient (f(w+h) - f(w-h)) / 2h of f = data loss + regularization penalty on a tiny batch of
real training examples is compared with the analytic one. The relative error of an element is
|a - n| / max(|a|, |n|, floor) with floor = 10 * eps * max(|f|, 1) / (2h * threshold), eps = 2.2e-16:
float64 rounding of f(w+h) - f(w-h) alone makes n uncertain by about eps*|f|/2h, so gradients smaller
than the floor (e.g. a conv bias right before batch norm, whose true gradient is 0) are compared at that
rounding level instead of relatively. A tensor passes when its largest error is under the threshold
(1e-6 by default).

Randomness: dropout draws the same mask in every evaluation (the RNG is re-seeded before each one);
batch norm stays in training mode (batch statistics), the function training differentiates.
Kinks (ReLU at 0, max-pool ties, hinge margins at 0): an element that fails is checked again with h/10;
it counts as a kink, not a failure, when it passes then, or when the one-sided differences
(f(w+h)-f(w))/h and (f(w)-f(w-h))/h differ by more than the discrepancy (a jump in the derivative).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dltool.config.options import load_options, options_class
from dltool.config.schema import TrainConfig
from dltool.console import console, note, table
from dltool.errors import ConfigError
from dltool.models.params import short_name
from dltool.train.parts import build_parts

Objective = Callable[[], torch.Tensor]


GradcheckOptions = options_class("gradcheck", "GradcheckOptions", __name__)  # keys: dltool/config/keys_options.py


@dataclass
class TensorResult:
    name: str
    shape: tuple[int, ...]
    checked: int
    kinks: int
    max_abs_grad: float
    max_rel_error: float
    passed: bool


def make_objective(model: nn.Module, loss_fn: Callable, penalty: Callable | None, x: torch.Tensor, y: torch.Tensor,
                   seed: int) -> Objective:
    """f(weights) = loss(model(x), y) + penalty, with the same dropout masks in every evaluation."""
    def f() -> torch.Tensor:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = loss_fn(model(x), y)  # model(x): (N, C)
            return out + penalty() if penalty is not None else out
    return f


def centered(f: Objective, flat: torch.Tensor, i: int, h: float, f0: float) -> tuple[float, float]:
    """(centered difference, |forward - backward one-sided difference|) for element i of a parameter."""
    orig = flat[i].item()
    flat[i] = orig + h
    fp = f().item()
    flat[i] = orig - h
    fm = f().item()
    flat[i] = orig
    return (fp - fm) / (2 * h), abs((fp - f0) / h - (f0 - fm) / h)


EPS = torch.finfo(torch.float64).eps


def rounding_floor(f0: float, h: float, threshold: float) -> float:
    """The smallest gradient whose relative error the rounding of f(w+h) - f(w-h) lets us resolve."""
    return 10 * EPS * max(abs(f0), 1.0) / (2 * h * threshold)


def rel_error(a: float, n: float, floor: float) -> float:
    return abs(a - n) / max(abs(a), abs(n), floor)


def check_tensor(f: Objective, name: str, p: torch.Tensor, grad: torch.Tensor, f0: float, opts: GradcheckOptions,
                 g: torch.Generator) -> TensorResult:
    """Numerical vs analytic gradient on (a sample of) one tensor's elements."""
    flat, gflat = p.data.view(-1), grad.reshape(-1)
    n = flat.numel()
    idx = torch.randperm(n, generator=g)[:opts.max_elements].tolist() if n > opts.max_elements else range(n)
    worst, kinks, checked = 0.0, 0, 0
    floor, floor2 = (rounding_floor(f0, h, opts.threshold) for h in (opts.h, opts.h / 10))
    for i in idx:
        a = gflat[i].item()
        num, _ = centered(f, flat, i, opts.h, f0)
        err = rel_error(a, num, floor)
        if err > opts.threshold or not math.isfinite(err):
            num2, jump = centered(f, flat, i, opts.h / 10, f0)
            err2 = rel_error(a, num2, floor2)
            if err2 <= opts.threshold or jump > abs(a - num2):
                kinks += 1
                continue
        worst = max(worst, err if math.isfinite(err) else math.inf)
        checked += 1
    return TensorResult(name, tuple(p.shape), checked, kinks, gflat.abs().max().item() if n else 0.0, worst,
                        worst <= opts.threshold and checked > 0)


def check_model(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, opts: GradcheckOptions,
                penalty_factory: Callable[[nn.Module], Callable | None] | None = None) -> list[TensorResult]:
    """Gradient check of every trainable tensor of `model` (converted to float64 in place, training mode)."""
    if opts.h <= 0 or opts.max_elements < 1:
        bad = "h" if opts.h <= 0 else "max_elements"
        raise ConfigError(f"gradcheck.{bad}={getattr(opts, bad)} must be positive.")
    model.double().train()
    x = x.double() if x.is_floating_point() else x
    penalty = penalty_factory(model) if penalty_factory is not None else None
    f = make_objective(model, loss_fn, penalty, x, y, opts.seed)
    params = [(short_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    f().backward()
    grads = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in params}
    g = torch.Generator().manual_seed(opts.seed)
    with torch.no_grad():
        f0 = f().item()
        return [check_tensor(f, n, p, grads[n], f0, opts, g) for n, p in params]


def build_for_check(cfg: TrainConfig, opts: GradcheckOptions) -> tuple[nn.Module, torch.Tensor, torch.Tensor, Any]:
    """What `dltool train` would build (initialized model, penalty) and a tiny seeded batch of training examples."""
    if opts.examples < 2:
        raise ConfigError(f"gradcheck.examples={opts.examples} must be at least 2 (batch norm needs a batch).")
    p = build_parts(cfg)  # no optimizer, loggers or figures: what prepare() builds before them, same seeds
    x, y = next(iter(p.data.train.batches(opts.examples, torch.Generator().manual_seed(opts.seed))))
    return p.model, x.to(p.device), y.to(p.device), (p.penalty if p.penalty.active else None, p.loss_fn)


def run_gradcheck(cfg: TrainConfig, args: list[str]) -> int:
    """`dltool gradcheck`: 0 when every parameter tensor passes, 1 otherwise."""
    opts = load_options(GradcheckOptions, "gradcheck", args)
    model, x, y, (penalty, loss_fn) = build_for_check(cfg, opts)  # the run's loss, for its task and weights
    results = check_model(model, loss_fn, x, y, opts, lambda m: penalty)
    print_results(results, cfg, opts, len(y))
    return 0 if all(r.passed for r in results) else 1


def print_results(results: list[TensorResult], cfg: TrainConfig, opts: GradcheckOptions, n: int) -> None:
    r = cfg.regularization
    reg = " + ".join(f"{k}={v:g}" for k, v in (("l2", r.l2), ("l1", r.l1)) if v) or "no penalty"
    note(f"[bold]gradient check[/]: {cfg.name}, {n} training examples, float64, loss {cfg.loss.name} ({reg}), "
         f"centered differences with h={opts.h:g}, pass under relative error {opts.threshold:g}")
    rows = [(t.name, "x".join(map(str, t.shape)), t.checked, t.kinks, f"{t.max_abs_grad:.2e}",
             f"{t.max_rel_error:.2e}", "[green]ok[/]" if t.passed else "[red]FAIL[/]") for t in results]
    console.print(table("parameters", ["tensor", "shape", "checked", "kinks skipped", "max |grad|",
                                       "max rel. error", ""], rows))
    bad = [t.name for t in results if not t.passed]
    if not bad:
        note(f"[bold green]PASS[/]: backprop agrees with the numerical gradient for all {len(results)} tensors.")
        return
    note(f"[bold red]FAIL[/]: {len(bad)} of {len(results)} tensors disagree ({', '.join(bad)}): the analytic "
         f"gradient of these layers (or of the loss/penalty) is wrong, or the function is not smooth there.")
