"""Batched inference, one way for everyone: training's validation, `dltool evaluate` and `dltool predict`.

The model runs in eval mode under no_grad and the same autocast as training (trainer.precision, resolved
for the device once), batch by batch, so evaluate and predict see exactly the numbers training saw.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from dltool.errors import ConfigError
from dltool.train.metrics import correct as count_correct

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} but no CUDA device is available here; use trainer.device=auto.")
    return dev


PRECISIONS = ("32", "bf16", "16")


# CPU flags of native bf16 arithmetic (x86 AVX512-BF16 / AMX, Arm BF16). Without them autocast emulates bf16:
# issue 21 measured 5-8x slower epochs than 32-bit; with them (this project's AMD EPYC has avx512_bf16)
# scripts/bench_bf16_cpu.py measured 0.7x (cnn_digits) and 1.0x (mlp).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU flags (/proc/cpuinfo's `flags`/`Features` lines) include native bf16; None: unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = {f for line in cpuinfo.splitlines() if line.lower().startswith(("flags", "features"))
             for f in line.split(":", 1)[-1].split()}
    return bool(flags & set(BF16_FLAGS)) if flags else None


def resolve_precision(precision: str, device: torch.device) -> str:
    """trainer.precision checked, with fp16 falling back to bf16 autocast off CUDA."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not valid; use 32, bf16 or 16 (mixed precision).")
    if precision == "16" and device.type != "cuda":
        log.warning("trainer.precision=16 needs a CUDA device; using bf16 autocast on %s instead", device.type)
        return "bf16"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        log.warning("trainer.precision=bf16 on a CPU without bf16 instructions (no avx512_bf16/amx_bf16 flag): "
                    "autocast emulates bf16 and runs several times slower than 32-bit (5-8x seen); use "
                    "trainer.precision=32")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision context: bf16 or fp16 autocast, or nothing for full 32-bit."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Inference:
    loss: float | None  # mean loss, when labels and a loss were given
    acc: float | None  # accuracy (classification), when labels were given
    logits: torch.Tensor | None  # (N, C) float32 on the CPU, when asked for
    targets: torch.Tensor | None = None  # (N,) or (N, K) on the CPU, when asked for


@torch.no_grad()
def infer(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], device: torch.device,
          precision: str = "32", loss_fn: Callable | None = None, keep_logits: bool = False,
          keep_targets: bool = False, task: str = "classification") -> Inference:
    """Run the model over (x, y or None) batches in eval mode (dropout off, batch-norm running statistics)."""
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen, labelled, outs, ys = 0, False, [], []
    for x, y in batches:  # x: (B, ...), y: (B,) or (B, K) or None
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True) if y is not None else None
        with autocast(device, precision):
            logits = model(x)  # (B, C)
            if y is not None and loss_fn is not None:
                total_loss += loss_fn(logits, y).float() * len(y)
        if y is not None:
            if task != "regression":
                correct += count_correct(task, logits, y)
            labelled = True
            if keep_targets:
                ys.append(y.cpu())
        seen += len(x)
        if keep_logits:
            outs.append(logits.float().cpu())
    n = max(seen, 1)
    return Inference(total_loss.item() / n if labelled and loss_fn is not None else None,
                     correct.item() / n if labelled and task != "regression" else None,
                     torch.cat(outs) if outs else None, torch.cat(ys) if ys else None)
