"""Per-layer training signals, collected cheaply every epoch (trainer.diagnostics).

Per parameter tensor: the update/weight ratio ||dw|| / ||w|| of the optimizer steps (mean over the epoch's
steps; the textbook rule of thumb is ~1e-3), the weight norm and the gradient norm (mean over the steps).
They come from optimizer step hooks, so the loop is untouched: the pre-step hook copies the weights into a
preallocated buffer, the post-step hook (gradients still there, already unscaled and clipped) takes three
fused norms. Long epochs measure every k-th step only (at most MAX_MEASURED_STEPS per epoch).

Per activation layer (ReLU-like, tanh, sigmoid, ...): mean, std, the fraction of dead units (zero for every
example) and of saturated outputs, measured by forward hooks on the first validation batch of each epoch,
the same fixed examples every epoch (eval mode, no extra forward pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from dltool.train.callbacks import FIRST, Callback, FitState

RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus)
SATURATING = (nn.Tanh, nn.Sigmoid, nn.Hardtanh)
MAX_MEASURED_STEPS = 4  # per epoch: enough for a mean, bounded cost (every k-th step on long epochs)
SAMPLE = 4096  # values kept per tensor for histograms (strided sample)
SAT_MARGIN = 0.02  # tanh |a| > 0.98, sigmoid a < 0.02 or a > 0.98 count as saturated

COLUMNS = ("epoch", "name", "kind", "update_ratio", "weight_norm", "grad_norm", "mean", "std", "dead", "saturated")


def short(name: str) -> str:
    return name.removeprefix("layers.").replace(".body.", ".")


def sample(t: torch.Tensor, n: int = SAMPLE) -> torch.Tensor:
    """A strided sample of at most n values, on the CPU, as float32 (for histograms)."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // n)
    return flat[::step][:n].float().cpu()


def activation_stats(out: torch.Tensor, module: nn.Module) -> dict[str, float]:
    """mean, std, dead (units zero for every example), saturated (fraction of outputs at the rails)."""
    a = out.detach().float()  # (N, units...)
    row = {"mean": a.mean().item(), "std": a.std().item() if a.numel() > 1 else 0.0}
    if isinstance(module, RELU_LIKE) and a.dim() >= 2:
        alive = (a > 0).flatten(1).any(0)  # (units,): positive for at least one example
        row["dead"] = 1.0 - alive.float().mean().item()
    if isinstance(module, nn.Tanh) or isinstance(module, nn.Hardtanh):
        row["saturated"] = (a.abs() > 1 - SAT_MARGIN).float().mean().item()
    elif isinstance(module, nn.Sigmoid):
        row["saturated"] = ((a < SAT_MARGIN) | (a > 1 - SAT_MARGIN)).float().mean().item()
    return row


@dataclass
class EpochSignals:
    """One epoch's rows (tidy: one per tensor / layer) and the samples histograms are drawn from."""

    rows: list[dict] = field(default_factory=list)
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    acts: dict[str, torch.Tensor] = field(default_factory=dict)


class Signals(Callback):
    """Collects EpochSignals each epoch; loggers (csv, tensorboard) and plots read `latest`, `first`, `rows`."""

    priority = FIRST  # the loggers (REPORT) read this epoch's rows

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, loss_fn: Callable | None = None,
                 probe: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.optimizer, self.loss_fn, self.probe = optimizer, loss_fn, probe
        self.every = max(1, math.ceil(steps_per_epoch / MAX_MEASURED_STEPS))
        self.rows: list[dict] = []  # every epoch's rows, for signals.csv
        self.first: EpochSignals | None = None
        self.latest: EpochSignals | None = None
        self.handles: list = []
        self.params: list[tuple[str, nn.Parameter]] = []
        self.acts_now: dict[str, dict] = {}
        self.act_samples: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ wiring
    def on_fit_start(self, state: FitState) -> None:
        model = state.model
        if not state.history and self.probe is not None:  # a fresh run (not a resume): the loss at init
            self.probe_loss(model, *self.probe)
        self.params = [(short(n), p) for n, p in model.named_parameters() if p.requires_grad]
        self.buf = [p.detach().clone() for _, p in self.params]
        n = len(self.params)
        dev = self.buf[0].device if self.buf else torch.device("cpu")
        self.ratio_sum, self.grad_sum = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
        self.measured, self.step_no = 0, 0
        self.grad_sample: dict[str, torch.Tensor] = {}
        self.handles = [self.optimizer.register_step_pre_hook(self._pre),
                        self.optimizer.register_step_post_hook(self._post)]
        for name, m in model.named_modules():
            if isinstance(m, RELU_LIKE + SATURATING):
                self.handles.append(m.register_forward_hook(self._act_hook(short(name))))

    def on_fit_end(self, state: FitState) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # ------------------------------------------------------------------ per step (optimizer hooks)
    def _pre(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.step_no % self.every == 0:
            with torch.no_grad():
                torch._foreach_copy_(self.buf, [p.detach() for _, p in self.params])

    def _post(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        measure = self.step_no % self.every == 0
        self.step_no += 1
        if not measure:
            return
        with torch.no_grad():
            weights = [p.detach() for _, p in self.params]
            grads = [p.grad if p.grad is not None else torch.zeros((), device=p.device) for _, p in self.params]
            torch._foreach_sub_(self.buf, weights)  # buf = w_before - w_after: the step's update
            dw, w, g = (torch.stack(torch._foreach_norm(t)) for t in (self.buf, weights, grads))
            self.ratio_sum += dw / w.clamp_min(1e-12)
            self.grad_sum += g
        if self.measured == 0:  # the epoch's first measured step: keep a sample of each gradient for histograms
            self.grad_sample = {n: sample(gr) for (n, _), gr in zip(self.params, grads) if gr.dim() > 0}
        self.measured += 1

    # ------------------------------------------------------------------ activations (first validation batch)
    def _act_hook(self, name: str):
        def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            if module.training or name in self.acts_now or not isinstance(out, torch.Tensor):
                return
            self.acts_now[name] = activation_stats(out, module)
            self.act_samples[name] = sample(out)
        return hook

    # ------------------------------------------------------------------ per epoch
    def on_epoch_start(self, state: FitState, num_batches: int) -> None:
        self.ratio_sum.zero_()
        self.grad_sum.zero_()
        self.measured, self.step_no = 0, 0
        self.acts_now, self.act_samples = {}, {}

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        n = max(self.measured, 1)
        ratios = (self.ratio_sum / n).tolist()
        grads = (self.grad_sum / n).tolist()
        norms = torch.stack(torch._foreach_norm([p.detach() for _, p in self.params])).tolist() if self.params else []
        ep = EpochSignals(grads=self.grad_sample, acts=dict(self.act_samples))
        for (name, p), r, g, w in zip(self.params, ratios, grads, norms):
            kind = "weight" if p.dim() >= 2 else "bias" if name.endswith("bias") else "param"
            ep.rows.append({"epoch": state.epoch, "name": name, "kind": kind, "weight_norm": w,
                            "update_ratio": r if self.measured else None, "grad_norm": g if self.measured else None})
        for name, st in self.acts_now.items():
            ep.rows.append({"epoch": state.epoch, "name": name, "kind": "activation", **st})
        self.rows += ep.rows
        self.first = self.first or ep
        self.latest = ep

    def probe_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """The loss at initialization on the probe batch (an epoch-0 row of kind 'loss'), before any step."""
        if self.loss_fn is None:
            return
        was = model.training
        model.eval()
        with torch.no_grad():
            value = float(self.loss_fn(model(x), y))
        model.train(was)
        self.rows.append({"epoch": 0, "name": "loss_at_init", "kind": "loss", "mean": value})
