"""Example dltool plug-ins, one per registry; pyproject.toml names each in its entry-point group.

Each object carries `@plugin(doc, options)`: the one-line doc `dltool list` shows and the option keys (with
defaults; None: required) that dltool checks before anything runs, exactly as for its own entries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dltool.data.splits import RawData
from dltool.errors import ConfigError
from dltool.plugins import plugin
from dltool.train.callbacks import Callback, FitState


class SqueezeExcitation(nn.Module):
    """Hu et al. 2018: channel weights from the global average, x * sigmoid(W2 relu(W1 mean(x)))."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)  # plain Linear layers: init, penalties, signals, freezing see them
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        s = x.mean(dim=(2, 3))  # (N, C)
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))  # (N, C)
        return x * w[:, :, None, None]


@plugin("squeeze-excitation: reweight the channels of CxHxW by a bottleneck of C/reduction units",
        options={"reduction": 4}, primary="reduction")
def se_block(options: dict, shape: tuple, ctx: object) -> tuple[nn.Module, tuple]:
    if len(shape) != 3:
        raise ValueError(f"se_block needs a CxHxW input, got {shape}")
    if not isinstance(options["reduction"], int) or options["reduction"] < 1:
        raise ConfigError(f"{getattr(ctx, 'where', 'se_block')}: reduction={options['reduction']!r} must be a "
                          f"whole number >= 1.")
    return SqueezeExcitation(shape[0], options["reduction"]), tuple(shape)


@plugin("focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)^gamma, for easy-example down-weighting",
        options={"gamma": 2.0})
def focal(options: dict, ctx: object):
    gamma = float(options["gamma"])

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # (N, C), (N,)
        logp = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)  # (N,)
        return (-(1 - logp.exp()) ** gamma * logp).mean()
    return loss


@plugin("top-2 accuracy: the true class among the two highest scores")
def top2(outputs: torch.Tensor, y: torch.Tensor) -> float:
    k = min(2, outputs.shape[1])
    return float((outputs.topk(k, dim=1).indices == y[:, None]).any(dim=1).float().mean())


@plugin("writes one JSON line per hook (fit start, each epoch's logs, fit end) to RUN_DIR/<filename>",
        options={"filename": "plugin_log.jsonl"})
class EpochLog(Callback):
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.batches = 0

    def write(self, state: FitState, record: dict) -> None:
        with open(Path(state.run_dir) / self.filename, "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_fit_start(self, state: FitState) -> None:
        self.write(state, {"hook": "fit_start", "epochs": state.epochs})

    def on_epoch_start(self, state: FitState, num_batches: int) -> None:
        self.batches = 0

    def on_batch_end(self, state: FitState) -> None:
        self.batches += 1

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        self.write(state, {"hook": "epoch_end", "epoch": state.epoch, "batches": self.batches, "step": state.step,
                           **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}})

    def on_fit_end(self, state: FitState) -> None:
        self.write(state, {"hook": "fit_end", "epoch": state.epoch})


@plugin("a text table of numbers separated by spaces, one example per line, the class label in one column",
        options={"path": None, "label_column": -1})
def whitespace_table(options: dict, cfg: object) -> RawData:
    table = np.loadtxt(Path(options["path"]), ndmin=2)  # (N, F+1), plain numbers: nothing is unpickled
    col = int(options["label_column"]) % table.shape[1]
    labels = table[:, col].astype(np.int64)
    classes = np.unique(labels)
    x = torch.tensor(np.delete(table, col, axis=1), dtype=torch.float32)  # (N, F)
    y = torch.tensor(np.searchsorted(classes, labels), dtype=torch.int64)  # (N,) class numbers 0..K-1
    return RawData({"all": (x, y)}, [str(c) for c in classes], "features")


@plugin("salt-and-pepper noise: a share `amount` of the values set to 0 or 1 (any layout)", options={"amount": 0.05})
def salt_pepper(x: torch.Tensor, options: dict, g: torch.Generator) -> torch.Tensor:  # (N, ...) in [0, 1]
    hit = torch.rand(x.shape, generator=g, device=g.device).to(x.device) < float(options["amount"])
    salt = (torch.rand(x.shape, generator=g, device=g.device) < 0.5).to(x.device, x.dtype)
    return torch.where(hit, salt, x)


@plugin("a whole network: flatten, fc hidden, relu, fc num_classes (any input shape)", options={"hidden": 32})
def small_mlp(options: dict, shape: tuple, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), options["hidden"]), nn.ReLU(),
                         nn.Linear(options["hidden"], num_classes))
