"""Custom modules behind the architecture vocabulary: parallel branches, causal conv1d, recurrent wrappers,
locally connected 2-D, axis shuffles and WaveNet's gated unit. Plain torch; the builders live in layers.py
and model.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Branches(nn.Module):
    """Parallel paths over the same input, concatenated on the channel (first per-example) axis."""

    def __init__(self, paths: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, path in paths.items():
            self.add_module(name, path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, ...) -> (N, sum of path channels, ...)
        return torch.cat([path(x) for path in self.children()], dim=1)


class CausalConv1d(nn.Conv1d):
    """Conv1d whose output at time t sees only inputs at t, t-d, t-2d, ...: left padding d*(k-1)."""

    def __init__(self, *args, **kw) -> None:  # noqa: ANN002, ANN003 - nn.Conv1d's own signature
        super().__init__(*args, padding=0, **kw)
        self.left = self.dilation[0] * (self.kernel_size[0] - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, L)
        return super().forward(F.pad(x, (self.left, 0)))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", causal (left pad {self.left})"


class Recurrent(nn.Module):
    """nn.RNN / nn.LSTM / nn.GRU (batch first) returning one tensor.

    mode: `last` = final hidden state of the top layer (both directions concatenated), `mean` / `max` =
    pooled over time, `sequence` = the whole output sequence (N, T, H*directions) for stacking.
    """

    def __init__(self, rnn: nn.RNNBase, mode: str) -> None:
        super().__init__()
        self.rnn, self.mode = rnn, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F)
        out, h = self.rnn(x)  # out: (N, T, H*dirs); h: (layers*dirs, N, H) (LSTM: (h, c))
        if self.mode == "sequence":
            return out
        if self.mode == "mean":
            return out.mean(dim=1)
        if self.mode == "max":
            return out.amax(dim=1)
        h = h[0] if isinstance(h, tuple) else h
        dirs = 2 if self.rnn.bidirectional else 1
        return torch.cat(list(h[-dirs:]), dim=1)  # (N, H*dirs): forward's last step, backward's first

    def extra_repr(self) -> str:
        return f"return={self.mode}"


class LocallyConnected2d(nn.Module):
    """A conv layer without weight sharing: every output position has its own filter bank.

    weight: (L*F, C, kh, kw) for L output positions and F filters (one conv kernel per position and
    filter); bias: (F, oh, ow).
    """

    def __init__(self, in_ch: int, filters: int, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], out_hw: tuple[int, int], bias: bool) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding, self.out_hw = kernel, stride, padding, out_hw
        self.in_ch, self.filters = in_ch, filters
        positions = out_hw[0] * out_hw[1]
        self.weight = nn.Parameter(torch.empty(positions * filters, in_ch, *kernel))
        self.bias = nn.Parameter(torch.zeros(filters, *out_hw)) if bias else None
        with torch.no_grad():
            for w in self.weight_views():  # like nn.Conv2d's default, per position
                nn.init.kaiming_uniform_(w, a=5 ** 0.5)

    def weight_views(self) -> list[torch.Tensor]:
        """One (F, C, kh, kw) view per position, so initializers see the true fan-in and fan-out."""
        return list(self.weight.view(-1, self.filters, self.in_ch, *self.kernel).unbind(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        cols = F.unfold(x, self.kernel, padding=self.padding, stride=self.stride)  # (N, C*kh*kw, L)
        w = self.weight.view(-1, self.filters, cols.shape[1])  # (L, F, C*kh*kw)
        out = torch.einsum("ncl,lfc->nfl", cols, w).reshape(x.shape[0], self.filters, *self.out_hw)
        return out + self.bias if self.bias is not None else out  # (N, F, oh, ow)

    def extra_repr(self) -> str:
        return (f"{self.in_ch}, {self.filters}, kernel_size={self.kernel}, stride={self.stride}, "
                f"padding={self.padding}, positions={self.out_hw[0]}x{self.out_hw[1]}, untied")


class Transpose(nn.Module):
    """Swap the two per-example axes: (T, F) sequences <-> (C, L) signals."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, A, B) -> (N, B, A)
        return x.transpose(1, 2).contiguous()


class Rows(nn.Module):
    """Read an image row by row: (C, H, W) -> (T=H, F=C*W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, H, C*W)
        n, c, h, w = x.shape
        return x.permute(0, 2, 1, 3).reshape(n, h, c * w)


class Gated(nn.Module):
    """WaveNet's gated activation: split the channels in half, tanh(a) * sigmoid(b)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 2C, ...) -> (N, C, ...)
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)
