"""Multiply-adds and activation sizes of whatever a model runs, from torch's own counter.

torch.utils.flop_counter.FlopCounterMode sees every aten op a forward pass executes (convolutions, linear
layers, attention projections, matmul/bmm/einsum, scaled-dot-product attention), including ops called
functionally outside any nn.Module, and works on `meta` tensors (no memory, no compute). mult-adds = flops / 2
(torch counts a multiply-add as 2 flops, as torchvision's published `_ops` count it as one). Recurrent layers
are counted by their gate formula instead: torch's fused LSTM kernel has no flop formula (the counter reports 0)
and other RNNs decompose differently per device, so the counter's share inside them is replaced by the rule.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def cpu_attention_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)  # q k^T and attention x v


cpu_attention_flops._get_raw = True  # type: ignore[attr-defined]  # called with the op's own arguments
# torch's counter knows the CUDA attention kernels; the CPU one (what nn.MultiheadAttention runs here) has the
# same arithmetic
CPU_ATTENTION = {getattr(torch.ops.aten, op): cpu_attention_flops
                 for op in ("_scaled_dot_product_flash_attention_for_cpu",) if hasattr(torch.ops.aten, op)}


@dataclass
class Measured:
    """One forward pass: totals over the batch, and per named group of modules (see `measure`)."""

    macs: int = 0
    activations: int = 0  # values of every executed leaf module's outputs (each call once)
    group_macs: dict[str, int] = field(default_factory=dict)
    group_activations: dict[str, int] = field(default_factory=dict)


def rnn_macs(m: nn.RNNBase, x: torch.Tensor) -> int:
    """Per time step, layer and direction: gates * hidden * (inputs + hidden) for the gate pre-activations."""
    if x.dim() == 2:  # unbatched (T, F)
        x = x.unsqueeze(0)
    n, t, f = x.shape if m.batch_first else (x.shape[1], x.shape[0], x.shape[2])
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    dirs, h = (2 if m.bidirectional else 1), m.hidden_size
    return sum(n * t * dirs * gates * h * ((f if layer == 0 else h * dirs) + h) for layer in range(m.num_layers))


def first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def skip_dynamo_import() -> None:
    """Let the counter run without importing torch._dynamo (1.5-2 s: most of `summary`/`evaluate`/`export` start-up).

    torch wraps every dispatch mode's __torch_dispatch__ so that a dynamo trace skips it, and the wrapper imports
    torch._dynamo on its first call. While torch._dynamo is not imported nothing can be tracing, so the wrapper's
    cache is pointed at the plain function (dltool never counts inside a compiled region; a later import of
    torch._dynamo by an optimizer changes nothing here). With another torch layout this does nothing.
    """
    if "torch._dynamo" in sys.modules:
        return
    mode = getattr(flop_counter, "_FlopCounterMode", None)
    raw = getattr(vars(mode).get("__torch_dispatch__") if mode is not None else None, "__wrapped__", None)
    if raw is not None and getattr(raw, "__dynamo_disable", None) is None:
        setattr(raw, "__dynamo_disable", raw)  # noqa: B010 - the cache attribute torch._compile reads


def measure(model: nn.Module, x: torch.Tensor, groups: dict[str, nn.Module] | None = None) -> tuple[Any, Measured]:
    """Run model(x) under the counter -> (output, Measured); groups: name -> a submodule to total separately."""
    skip_dynamo_import()
    res, counter = Measured(), FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    extra = [0]  # flops the recurrent rule adds on top of the counter (minus what the counter saw inside)
    starts: dict[int, list[int]] = {}
    now = lambda: counter.get_total_flops() + extra[0]  # noqa: E731

    def pre(m: nn.Module, inp: tuple) -> None:
        starts.setdefault(id(m), []).append(now())

    def rnn_post(m: nn.Module, inp: tuple, out: Any) -> None:
        extra[0] += 2 * rnn_macs(m, inp[0]) - (now() - starts[id(m)].pop())

    def leaf_post(m: nn.Module, inp: tuple, out: Any, group: str | None) -> None:
        y = first_tensor(out)
        size = y.numel() if y is not None else 0
        res.activations += size
        if group is not None:
            res.group_activations[group] = res.group_activations.get(group, 0) + size

    def group_post(m: nn.Module, inp: tuple, out: Any, group: str) -> None:
        res.group_macs[group] = res.group_macs.get(group, 0) + (now() - starts[id(m)].pop())

    owner = {id(sub): g for g, mod in (groups or {}).items() for sub in mod.modules()}
    handles = []
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(rnn_post)]
        if not any(True for _ in m.children()) or isinstance(m, nn.RNNBase):
            handles.append(m.register_forward_hook(lambda m, i, o, g=owner.get(id(m)): leaf_post(m, i, o, g)))
    for g, m in (groups or {}).items():
        res.group_macs[g], res.group_activations[g] = 0, 0
        handles += [m.register_forward_pre_hook(pre),
                    m.register_forward_hook(lambda m, i, o, g=g: group_post(m, i, o, g))]
    try:
        with counter, torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    res.macs = now() // 2
    res.group_macs = {g: v // 2 for g, v in res.group_macs.items()}
    return y, res
