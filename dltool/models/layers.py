"""The layer builders named in dltool.catalog.LAYERS, plus custom modules.

Each builder takes (params, input shape without batch, ctx) and returns (module, output shape).
Shapes are tuples: (C, H, W) images, (F,) features, (C, L) 1-D signals, (T, F) sequences,
(C, T, H, W) volumes.
Builders check the textbook arithmetic themselves, so a bad spec fails with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from dltool.errors import ConfigError
from dltool.models.blocks import CausalConv1d, Gated, LocallyConnected2d, Recurrent, Rows, Transpose

Shape = tuple[int, ...]


@dataclass
class BuildContext:
    """What a builder may need besides its own params."""

    where: str  # e.g. "layer 4 (pool)" for error messages
    num_classes: int
    strict: bool = True
    is_last: bool = False


def fmt(shape: Shape) -> str:
    return "x".join(str(s) for s in shape)


def pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"expected one number or two, got {list(v)}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def out_size(size: int, k: int, s: int, p: int, d: int, what: str, dim: str, ctx: BuildContext) -> int:
    """(W - F + 2P)/S + 1 with dilation, refusing sizes that cannot work (strict: non-integers too)."""
    eff = d * (k - 1) + 1
    if size + 2 * p < eff:
        raise ConfigError(
            f"{ctx.where}: input {dim} {size} (+2*{p} padding) is smaller than the {what} extent {eff}; "
            f"use a smaller kernel, more padding, or fewer downsampling layers before it."
        )
    num = size - eff + 2 * p
    out = num // s + 1
    if num % s and ctx.strict:
        raise ConfigError(
            f"{ctx.where}: output {dim} ({size} - {eff} + 2*{p})/{s} + 1 = {num / s + 1:g} is not a whole number; "
            f"change padding/stride (or `padding: same`), or set model.strict_shapes=false to floor it like PyTorch."
        )
    return out


# --------------------------------------------------------------------------- custom modules
class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow-style 'same' padding (possibly asymmetric): output = ceil(input / stride)."""

    def __init__(self, *args: Any, pads: tuple[int, int, int, int], **kw: Any) -> None:
        super().__init__(*args, padding=0, **kw)
        self.pads = pads  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        return super().forward(F.pad(x, self.pads))


class Maxout(nn.Module):
    """Maxout over groups of `pieces` consecutive channels/features: (N, C, ...) -> (N, C/pieces, ...)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        return x.view(n, c // self.pieces, self.pieces, *x.shape[2:]).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class GlobalAvgPool(nn.Module):
    """Mean over every axis after the channel axis: (N, C, ...) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2)


# --------------------------------------------------------------------------- builders
def need_dims(shape: Shape, dims: tuple[int, ...], ctx: BuildContext, hint: str = "") -> None:
    if len(shape) not in dims:
        raise ConfigError(
            f"{ctx.where}: expects a {' or '.join(f'{d}-D' for d in dims)} input per example but gets {fmt(shape)}"
            f"{'; ' + hint if hint else ''}."
        )


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int, int]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return out, total // 2, total - total // 2


def build_conv(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (3,), ctx, "conv works on CxHxW images (use conv1d for sequences)")
    c, h, w = shape
    filters, (kh, kw), (sh, sw), (dh, dw) = int(p["filters"]), pair(p["kernel"]), pair(p["stride"]), pair(p["dilation"])
    groups = int(p["groups"])
    if c % groups or filters % groups:
        raise ConfigError(f"{ctx.where}: groups={groups} must divide both in-channels {c} and filters {filters}.")
    pad = p["padding"]
    if pad == "same":
        oh, top, bottom = same_pads(h, kh, sh, dh)
        ow, left, right = same_pads(w, kw, sw, dw)
        if (top, left) == (bottom, right):
            conv: nn.Module = nn.Conv2d(c, filters, (kh, kw), (sh, sw), (top, left), (dh, dw), groups, bool(p["bias"]))
        else:
            conv = SameConv2d(c, filters, (kh, kw), (sh, sw), dilation=(dh, dw), groups=groups,
                              bias=bool(p["bias"]), pads=(left, right, top, bottom))
        return conv, (filters, oh, ow)
    ph, pw = (0, 0) if pad == "valid" else pair(pad)
    oh = out_size(h, kh, sh, ph, dh, "kernel", "height", ctx)
    ow = out_size(w, kw, sw, pw, dw, "kernel", "width", ctx)
    conv = nn.Conv2d(c, filters, (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups, bool(p["bias"]))
    return conv, (filters, oh, ow)


def ntuple(v: Any, n: int, ctx: BuildContext, key: str) -> tuple[int, ...]:
    """One number for every axis, or a list with one number per axis."""
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ConfigError(f"{ctx.where}: {key}={list(v)} needs one number or {n} numbers (one per axis).")
        return tuple(int(x) for x in v)
    return (int(v),) * n


AXES = {1: ("length",), 2: ("height", "width"), 3: ("time", "height", "width")}


def build_pool(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (2, 3, 4), ctx, "pool works on CxL signals, CxHxW images and CxTxHxW volumes")
    n = len(shape) - 1
    k = ntuple(p["kernel"], n, ctx, "kernel")
    s = ntuple(p["stride"] if p["stride"] is not None else p["kernel"], n, ctx, "stride")
    pad = ntuple(p["padding"], n, ctx, "padding")
    if any(2 * pp > kk for pp, kk in zip(pad, k)):
        raise ConfigError(f"{ctx.where}: padding {p['padding']} must be at most half the kernel {p['kernel']}.")
    out = tuple(out_size(shape[i + 1], k[i], s[i], pad[i], 1, "pooling window", AXES[n][i], ctx) for i in range(n))
    kind = p["kind"]
    if kind == "max":
        return (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[n - 1](k, s, pad), (shape[0], *out)
    if kind == "avg":
        return (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[n - 1](k, s, pad, count_include_pad=False), (shape[0], *out)
    raise ConfigError(f"{ctx.where}: kind={kind!r} is not known; valid kinds: max, avg.")


def build_fc(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    if len(shape) > 2:
        raise ConfigError(f"{ctx.where}: input is {fmt(shape)}, but fc needs a flat vector; put a `flatten` "
                          f"(or `global_avg_pool`) layer before it.")
    units = p["units"]
    if units in ("num_classes", "classes"):
        units = ctx.num_classes
    units = int(units)
    if units < 1:
        raise ConfigError(f"{ctx.where}: units={units} must be a positive whole number.")
    return nn.Linear(shape[-1], units, bias=bool(p["bias"])), (*shape[:-1], units)


def build_flatten(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    return nn.Flatten(), (math.prod(shape),)


def build_gap(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (2, 3, 4), ctx, "global_avg_pool averages the positions of a CxHxW (or CxL) map")
    return GlobalAvgPool(), (shape[0],)


def build_dropout(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    prob = float(p["p"])
    if not 0.0 <= prob < 1.0:
        raise ConfigError(f"{ctx.where}: p={prob} is the probability of dropping a unit and must be in [0, 1).")
    return nn.Dropout(prob), shape


def build_batchnorm(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    kinds = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d, 4: nn.BatchNorm3d}
    need_dims(shape, tuple(kinds), ctx)
    return kinds[len(shape)](shape[0], eps=float(p["eps"]), momentum=float(p["momentum"])), shape


def build_maxout(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    k = int(p["pieces"])
    if k < 2 or shape[0] % k:
        raise ConfigError(f"{ctx.where}: pieces={k} must be at least 2 and divide the {shape[0]} "
                          f"channels/units coming in.")
    return Maxout(k), (shape[0] // k, *shape[1:])


def build_softmax(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    if not ctx.is_last:
        raise ConfigError(f"{ctx.where}: softmax is only allowed as the final layer (it is there for "
                          f"readability; the loss applies it to the logits).")
    return nn.Identity(), shape


def build_conv1d(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (2,), ctx, "conv1d works on CxL signals (put `transpose` first to turn a TxF sequence into FxT)")
    c, length = shape
    filters, k, s, d, groups = (int(p[key]) for key in ("filters", "kernel", "stride", "dilation", "groups"))
    if c % groups or filters % groups:
        raise ConfigError(f"{ctx.where}: groups={groups} must divide both in-channels {c} and filters {filters}.")
    pad, kw = p["padding"], dict(stride=s, dilation=d, groups=groups, bias=bool(p["bias"]))
    if pad == "causal":  # left padding d*(k-1): output t sees inputs t, t-d, ... only (WaveNet)
        return CausalConv1d(c, filters, k, **kw), (filters, out_size(length + d * (k - 1), k, s, 0, d, "kernel",
                                                                       "length", ctx))
    if pad == "same":
        if s != 1:
            raise ConfigError(f"{ctx.where}: padding=same needs stride 1 (got {s}); give the padding as a number.")
        return nn.Conv1d(c, filters, k, padding="same", **kw), (filters, length)
    pad = 0 if pad == "valid" else int(pad)
    return nn.Conv1d(c, filters, k, padding=pad, **kw), (filters, out_size(length, k, s, pad, d, "kernel", "length",
                                                                           ctx))


def build_conv3d(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (4,), ctx, "conv3d works on CxTxHxW volumes (time or depth, height, width)")
    c = shape[0]
    filters = int(p["filters"])
    k, s, d = (ntuple(p[key], 3, ctx, key) for key in ("kernel", "stride", "dilation"))
    kw = dict(stride=s, dilation=d, bias=bool(p["bias"]))
    if p["padding"] == "same":
        if s != (1, 1, 1):
            raise ConfigError(f"{ctx.where}: padding=same needs stride 1 (got {list(s)}); give the padding as numbers.")
        return nn.Conv3d(c, filters, k, padding="same", **kw), (filters, *shape[1:])
    pad = (0, 0, 0) if p["padding"] == "valid" else ntuple(p["padding"], 3, ctx, "padding")
    out = tuple(out_size(shape[i + 1], k[i], s[i], pad[i], d[i], "kernel", AXES[3][i], ctx) for i in range(3))
    return nn.Conv3d(c, filters, k, padding=pad, **kw), (filters, *out)


def build_recurrent(cls: type[nn.RNNBase]) -> Callable[[dict, Shape, BuildContext], tuple[nn.Module, Shape]]:
    def build(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        need_dims(shape, (2,), ctx, "recurrent layers read TxF sequences (use a sequence data set, or a `rows` "
                                    "layer to read an image row by row)")
        if shape[0] == 1:
            raise ConfigError(f"{ctx.where}: the input {fmt(shape)} is 1 time step of {shape[1]} features, so the "
                              f"layer would run one step and see no sequence; give it (T, F) sequences (channels-first "
                              f"signals are (C, L): data.layout=null, or conv1d layers before it).")
        hidden, layers, dropout, mode = int(p["hidden"]), int(p["layers"]), float(p["dropout"]), p["return"]
        if mode not in RETURNS:
            raise ConfigError(f"{ctx.where}: return={mode!r} is not known; valid: {', '.join(RETURNS)}.")
        if hidden < 1 or layers < 1:
            raise ConfigError(f"{ctx.where}: hidden={hidden} and layers={layers} must be positive whole numbers.")
        if not 0.0 <= dropout < 1.0 or (dropout and layers == 1):
            raise ConfigError(f"{ctx.where}: dropout={dropout} is applied between stacked layers: it needs layers "
                              f">= 2 and a value in [0, 1).")
        extra = {"nonlinearity": p["nonlinearity"]} if cls is nn.RNN else {}
        if extra and extra["nonlinearity"] not in ("tanh", "relu"):
            raise ConfigError(f"{ctx.where}: nonlinearity={extra['nonlinearity']!r} is not known; valid: tanh, relu.")
        rnn = cls(shape[1], hidden, layers, batch_first=True, dropout=dropout,
                  bidirectional=bool(p["bidirectional"]), **extra)
        width = hidden * (2 if p["bidirectional"] else 1)
        return Recurrent(rnn, mode), ((shape[0], width) if mode == "sequence" else (width,))

    return build


RETURNS = ("last", "mean", "max", "sequence")


def build_local(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (3,), ctx, "locally_connected works on CxHxW images")
    c, h, w = shape
    filters, (kh, kw), (sh, sw) = int(p["filters"]), pair(p["kernel"]), pair(p["stride"])
    ph, pw = (0, 0) if p["padding"] == "valid" else pair(p["padding"])
    oh = out_size(h, kh, sh, ph, 1, "kernel", "height", ctx)
    ow = out_size(w, kw, sw, pw, 1, "kernel", "width", ctx)
    return LocallyConnected2d(c, filters, (kh, kw), (sh, sw), (ph, pw), (oh, ow), bool(p["bias"])), (filters, oh, ow)


def build_transpose(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (2,), ctx, "transpose swaps the axes of a TxF sequence or a CxL signal")
    return Transpose(), (shape[1], shape[0])


def build_rows(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    need_dims(shape, (3,), ctx, "rows reads a CxHxW image row by row")
    return Rows(), (shape[1], shape[0] * shape[2])


def build_gated(p: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
    if shape[0] % 2:
        raise ConfigError(f"{ctx.where}: gated splits the {shape[0]} channels into two halves, so they must be even "
                          f"(give the conv before it twice the filters).")
    return Gated(), (shape[0] // 2, *shape[1:])


def activation(factory: Callable[[dict], nn.Module]) -> Callable[[dict, Shape, BuildContext], tuple[nn.Module, Shape]]:
    return lambda p, shape, ctx: (factory(p), shape)


# Builders named in dltool.catalog.LAYERS (activations keep their input shape; recurrent ones share one builder).
build_relu = activation(lambda p: nn.ReLU())
build_leaky_relu = activation(lambda p: nn.LeakyReLU(float(p["slope"])))
build_elu = activation(lambda p: nn.ELU(float(p["alpha"])))
build_tanh = activation(lambda p: nn.Tanh())
build_sigmoid = activation(lambda p: nn.Sigmoid())
build_gelu = activation(lambda p: nn.GELU())
build_rnn = build_recurrent(nn.RNN)
build_lstm = build_recurrent(nn.LSTM)
build_gru = build_recurrent(nn.GRU)
