"""Per-layer summary: output shape, parameters, activation memory, multiply-adds; totals."""

from __future__ import annotations

import math

from dltool.models.builder import BuiltModel
from dltool.models.layers import fmt
from dltool.models.params import is_under, layer_of

BYTES_PER_VALUE = 4  # float32 activations


def human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{int(n)}{unit}"


def rows(built: BuiltModel) -> list[list[str]]:
    """One row per layer (nested layers indented), then a totals row."""
    trainable_names = {n for n, p in built.model.named_parameters() if p.requires_grad}
    out = [["input", "", fmt(built.input_shape), "", "", "", ""]]
    for r in built.trace:
        frozen = _frozen(built, r.name, trainable_names)
        acts = values(r)
        out.append(["  " * r.depth + r.name, r.kind, fmt(r.out_shape), f"{r.params:,}" if r.params else "-",
                    "frozen" if frozen else (_mult(built, r.name) if r.params else ""),
                    human(acts * BYTES_PER_VALUE, "B") if acts else "-", human(r.macs) if r.macs else "-"])
    t = totals(built)
    out.append(["total", "", "", f"{t['params']:,}", f"{t['trainable']:,} trainable",
                human(t["activation_bytes"], "B"), human(t["macs"])])
    return out


def values(r) -> int:
    """Activation values per example a row stands for: every module output inside it (backbones), else its output."""
    return r.activations if r.activations is not None else math.prod(r.out_shape)


def _frozen(built: BuiltModel, name: str, trainable: set[str]) -> bool:
    mine = [n for n, _ in built.model.named_parameters() if is_under(layer_of(n), name)]
    return bool(mine) and not any(n in trainable for n in mine)


def _mult(built: BuiltModel, name: str) -> str:
    """"yes", or "lr x0.1" for a pretrained layer trained with a smaller learning rate."""
    mults = {m for k, m in built.lr_mults.items() if is_under(k, name)}
    return "yes" if not mults else "lr x" + "/".join(f"{m:g}" for m in sorted(mults))


def totals(built: BuiltModel) -> dict:
    """Totals straight from the model (not the trace), so they always agree with torch."""
    params = sum(p.numel() for p in built.model.parameters())
    trainable = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
    acts = sum(values(r) for r in built.trace)
    return {"params": params, "trainable": trainable, "activation_bytes": acts * BYTES_PER_VALUE,
            "macs": sum(r.macs for r in built.trace)}


COLUMNS = ["layer", "type", "output", "params", "trainable", "activations", "mult-adds"]


def as_text(built: BuiltModel) -> str:
    table = rows(built)
    widths = [max(len(r[i]) for r in table + [COLUMNS]) for i in range(len(COLUMNS))]
    line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(COLUMNS), *(line(r) for r in table)]) + "\n"
