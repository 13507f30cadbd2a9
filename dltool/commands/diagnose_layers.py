"""Findings from the per-layer signals: dead ReLUs, saturated units, gradient flow, the loss at init."""

from __future__ import annotations

import math

from dltool.commands.advice import Finding, Step, clip_step, get, lr_step, smaller_init_step
from dltool.tasks import config_task
from dltool.train.losses import INIT_TOLERANCE, expected_initial_loss

DEAD, SATURATED = 0.5, 0.5
GRAD_SPREAD = 1e3  # weight-gradient norms across layers differing by three orders of magnitude


def bias_step(cfg: dict, value: float) -> list[Step]:
    """init.bias=value, when the run's init scheme reads init.bias and it holds another value."""
    if get(cfg, "init.scheme") in (None, "default") or get(cfg, "init.bias") == value:
        return []
    return [Step("a small positive bias" if value > 0 else "zero biases", (f"init.bias={value:g}",))]


def unit_findings(signals: list[dict], cfg: dict) -> list[Finding]:
    """Dead ReLUs and saturated tanh/sigmoid units at the last recorded epoch."""
    out = []
    last = max((r["epoch"] for r in signals), default=0)
    acts = [r for r in signals if r["kind"] == "activation" and r["epoch"] == last]
    dead = [(r["name"], r["dead"]) for r in acts if r.get("dead") is not None and r["dead"] > DEAD]
    if dead:
        out.append(Finding("dead_relu", "dead ReLUs",
                           ", ".join(f"{n} {v:.0%} dead" for n, v in dead) + f" at epoch {last} (units that output 0 "
                           "for every probe example pass no gradient)",
                           lr_step(cfg, 0.1, "a lower learning rate")
                           + [Step("leaky_relu instead of relu in model.layers")] + bias_step(cfg, 0.01)))
    sat = [(r["name"], r["saturated"]) for r in acts if r.get("saturated") is not None and r["saturated"] > SATURATED]
    if sat:
        out.append(Finding("saturated", "saturated tanh/sigmoid units",
                           ", ".join(f"{n} {v:.0%} of outputs at the rails" for n, v in sat) + f" at epoch {last}",
                           smaller_init_step(cfg) + [Step("batchnorm before the activation, or relu, in model.layers")]
                           + lr_step(cfg, 0.1, "a lower learning rate")))
    return out


def layer_findings(signals: list[dict], cfg: dict, num_classes: int | None) -> list[Finding]:
    """Dead ReLUs, saturated tanh/sigmoid, vanishing/exploding gradients, loss at init."""
    out = unit_findings(signals, cfg) + gradient_findings(signals, cfg)
    init = next((r["mean"] for r in signals if r["kind"] == "loss" and r["epoch"] == 0), None)
    loss = cfg.get("loss", {})
    task = config_task(cfg.get("data") or {})
    expected = expected_initial_loss(loss.get("name", ""), num_classes, loss.get("margin", 1.0), task,
                                     loss.get("delta", loss.get("beta", 1.0))) if num_classes else None
    what = {"classification": f"{num_classes} classes", "regression": "standardized targets (outputs ~ 0)"}.get(
        task, "sigmoid outputs (ln 2 per label)")
    if init is not None and expected and math.isfinite(init) and abs(init - expected) / expected > INIT_TOLERANCE:
        out.append(Finding("init_loss", "loss at initialization far from the expected value",
                           f"loss at init {init:.4g}, expected {expected:.4g} for {loss.get('name')} with "
                           f"{what} (tolerance: within {INIT_TOLERANCE:.0%} of it)",
                           [Step("the initial scores are not small")] + smaller_init_step(cfg) + bias_step(cfg, 0.0)))
    elif init is not None and not math.isfinite(init):
        out.append(Finding("init_loss", "loss at initialization is not finite", f"loss at init {init}",
                           smaller_init_step(cfg) + [Step("check the data normalization (data.normalize)")]))
    return out


def gradient_findings(signals: list[dict], cfg: dict | None = None) -> list[Finding]:
    """Weight-gradient norms across layers (epoch 1) differing by orders of magnitude."""
    cfg = cfg or {}
    first = min((r["epoch"] for r in signals if r["epoch"] > 0), default=None)
    g = [(r["name"], r["grad_norm"]) for r in signals
         if r["epoch"] == first and r["kind"] == "weight" and r.get("grad_norm") is not None]
    if len(g) < 2 or not all(math.isfinite(v) for _, v in g):
        return []
    lo, hi = min(g, key=lambda t: t[1]), max(g, key=lambda t: t[1])
    if hi[1] <= 0 or (lo[1] > 0 and hi[1] / lo[1] <= GRAD_SPREAD):
        return []
    early = [n for n, _ in g].index(lo[0]) < [n for n, _ in g].index(hi[0])
    kind = "vanishing" if early else "exploding"
    steps = [Step("an init matched to the activation (kaiming for relu, xavier for tanh) and batchnorm layers "
                  "in model.layers" + (", or relu instead of sigmoid/tanh" if early else ""))]
    if not early:
        steps += smaller_init_step(cfg) + clip_step(cfg)
    return [Finding(f"{kind}_gradients", f"{kind} gradients",
                    f"weight-gradient norms in epoch {first} range from {lo[1]:.2g} ({lo[0]}) to {hi[1]:.2g} "
                    f"({hi[0]}): {'inf' if lo[1] == 0 else f'{hi[1] / lo[1]:.0e}'}x", steps)]
