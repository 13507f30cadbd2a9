"""build_model: walk the YAML layer list, infer in_channels/in_features, trace every layer's shape.

Each layer is built from its input shape and probed at once with a real batch of two zero examples,
so a spec that cannot work fails here, before training, with the layer's index, name and input shape.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable

import torch
from torch import nn

from dltool import plugins
from dltool.catalog import ALIASES, BLOCKS, LAYERS, Layer
from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.blocks import Branches
from dltool.models.layers import BuildContext, Shape, fmt
from dltool.models.trace import BuiltModel, LayerRecord, count_macs
from dltool.registry import check_keys, resolve, unknown

log = logging.getLogger(__name__)


class Net(nn.Module):
    """The model: an ordered stack of named layers (conv1, relu1, pool1, ...)."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]") -> None:
        super().__init__()
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Residual(nn.Module):
    """y = f(x) + shortcut(x); the shortcut is the identity unless a projection was needed."""

    def __init__(self, body: "OrderedDict[str, nn.Module]", shortcut: nn.Module | None) -> None:
        super().__init__()
        self.body = nn.Sequential(body)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


POSITIVE = ("filters", "units", "hidden", "kernel", "stride", "dilation", "groups", "layers", "pieces")


def parse_item(item: Any, where: str) -> tuple[str, dict]:
    """`relu` or `{conv: {...}}` or `{fc: 120}` -> (canonical kind, params dict with defaults)."""
    if isinstance(item, str):
        kind, params = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, params = next(iter(item.items()))
    else:
        raise ConfigError(f"{where}: {item!r} is not a layer; write a name (`relu`) or one name with its "
                          f"options (`conv: {{filters: 32}}`).")
    kind = ALIASES.get(kind, kind)
    if kind in BLOCKS:
        return kind, params
    table = layer_table()
    if kind not in table:
        raise unknown(f"{where}: layer", kind, list(table) + list(BLOCKS) + list(ALIASES))
    entry = table[kind]
    if params is None:
        params = {}
    if not isinstance(params, dict):
        if entry.primary is None:
            raise ConfigError(f"{where}: `{kind}` takes no shorthand value; got {params!r}.")
        params = {entry.primary: params}
    check_keys(params, list(entry.defaults) + ["init"], f"{where} ({kind})")
    merged = {**entry.defaults, **params}
    missing = [k for k, v in merged.items() if v is None and k in ("filters", "units", "hidden")]
    if missing:
        raise ConfigError(f"{where} ({kind}): `{missing[0]}` is required, e.g. `{kind}: {{{missing[0]}: 32}}`.")
    for k in POSITIVE:
        v = merged.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 or \
                isinstance(v, (list, tuple)) and any(isinstance(x, (int, float)) and x <= 0 for x in v):
            raise ConfigError(f"{where} ({kind}): {k}={v!r} is not valid; a {k} must be a positive whole number.")
    return kind, merged


def layer_table() -> dict[str, Layer]:
    """dltool's layers, the plug-in layers and the plug-in models (dltool/plugins.py), looked up the same way."""
    models = {name: replace(e, obj=as_layer(e.load())) for name, e in plugins.entries("models").items()}
    return {**LAYERS, **plugins.entries("layers"), **models}  # type: ignore[dict-item]


def as_layer(build: Callable[..., nn.Module]) -> Callable[..., tuple[nn.Module, Shape]]:
    """A plug-in model builder (options, input_shape, num_classes) -> module, as a layer builder: its output shape
    is measured on a zero batch of two (the builder then checks it like any layer's)."""
    def layer(params: dict, shape: Shape, ctx: BuildContext) -> tuple[nn.Module, Shape]:
        module = build(params, tuple(shape), ctx.num_classes).eval()
        with torch.no_grad():
            out = module(torch.zeros(2, *shape))
        return module.train(), tuple(out.shape[1:])
    return layer


class Builder:
    """Walks a layer list once; keeps name counters and the trace."""

    def __init__(self, num_classes: int, strict: bool) -> None:
        self.num_classes = num_classes
        self.strict = strict
        self.counts: dict[str, int] = {}
        self.index = 0
        self.trace: list[LayerRecord] = []
        self.inits: dict[str, dict] = {}

    def name(self, stem: str) -> str:
        self.counts[stem] = self.counts.get(stem, 0) + 1
        return f"{stem}{self.counts[stem]}"

    def build_list(self, items: list, shape: Shape, prefix: str, depth: int, last: bool) -> tuple[OrderedDict, Shape]:
        if not isinstance(items, list):
            raise ConfigError(f"{prefix or 'model.layers'}: expected a list of layers, got {items!r}.")
        out: OrderedDict[str, nn.Module] = OrderedDict()
        for i, item in enumerate(items):
            self.index += 1
            where = f"layer {self.index}"
            kind, params = parse_item(item, where)
            is_last = last and i == len(items) - 1
            if kind in BLOCKS:
                shape = BLOCKS[kind](self, params, shape, out, prefix, depth, where, is_last)
            else:
                name, module, shape = self.build_layer(kind, params, shape, prefix, depth, where, is_last)
                out[name] = module
        return out, shape

    def build_layer(self, kind: str, params: dict, shape: Shape, prefix: str, depth: int, where: str,
                    is_last: bool) -> tuple[str, nn.Module, Shape]:
        entry = layer_table()[kind]
        init = params.pop("init", None)
        name = self.name(entry.prefix)
        ctx = BuildContext(f"{where} ({prefix}{name}: {kind}, input {fmt(shape)})", self.num_classes, self.strict,
                           is_last)
        try:
            module, expected = entry(params, shape, ctx)
        except ConfigError:
            raise  # the layer's own sentence (the shape arithmetic), as it is
        except Exception as ex:  # noqa: BLE001 - torch raises several types; sorted into two sentences below
            raise layer_error(ctx.where, params, ex) from None
        module.eval()
        try:
            x = torch.zeros(2, *shape)
            y, macs = count_macs(module, x)
        except (MemoryError, RuntimeError) as ex:
            if too_big(ex):
                raise layer_error(ctx.where, params, ex) from None
            raise ConfigError(f"{ctx.where}: cannot run on this input: {str(ex).splitlines()[0]}") from None
        got = tuple(y.shape[1:])
        assert got == tuple(expected), f"{name}: shape formula {expected} disagrees with torch {got}"
        module.train()
        if init is not None:
            self.inits[f"{prefix}{name}"] = init if isinstance(init, dict) else {"scheme": init}
        n_params = sum(p.numel() for p in module.parameters())
        self.trace.append(LayerRecord(f"{prefix}{name}", kind, shape, got, n_params, n_params, macs, depth))
        return name, module, got

    def build_repeat(self, params: Any, shape: Shape, out: OrderedDict, prefix: str, depth: int, where: str,
                     is_last: bool) -> Shape:
        if not isinstance(params, dict):
            raise ConfigError(f"{where} (repeat): write `repeat: {{n: 2, layers: [...]}}`.")
        check_keys(params, ["n", "layers"], f"{where} (repeat)")
        n = params.get("n", 1)
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where} (repeat): n={n!r} must be a positive whole number.")
        for r in range(n):
            block, shape = self.build_list(list(params.get("layers", [])), shape, prefix, depth,
                                           is_last and r == n - 1)
            out.update(block)
        return shape

    def build_residual(self, params: Any, shape: Shape, out: OrderedDict, prefix: str, depth: int, where: str,
                       is_last: bool) -> Shape:
        name = self.name(BLOCKS["residual"].prefix)
        out[name], shape = self.residual(params, shape, f"{prefix}{name}.", depth, where)
        return shape

    def build_branches(self, params: Any, shape: Shape, out: OrderedDict, prefix: str, depth: int, where: str,
                       is_last: bool) -> Shape:
        name = self.name(BLOCKS["branches"].prefix)
        out[name], shape = self.branches(params, shape, f"{prefix}{name}.", depth, where)
        return shape

    def residual(self, params: Any, shape: Shape, prefix: str, depth: int, where: str) -> tuple[nn.Module, Shape]:
        if isinstance(params, list):
            params = {"layers": params}
        if not isinstance(params, dict):
            raise ConfigError(f"{where} (residual): write `residual: {{layers: [...]}}`.")
        check_keys(params, ["layers", "projection"], f"{where} (residual)")
        block = prefix.rstrip(".")
        start = len(self.trace)
        body, out_shape = self.build_list(list(params.get("layers", [])), shape, prefix, depth + 1, False)
        shortcut = projection(shape, out_shape, f"{where} (residual block {block})",
                              params.get("projection", "auto"))
        module = Residual(body, shortcut)
        if shortcut is not None:
            sc_params = sum(p.numel() for p in shortcut.parameters())
            _, macs = count_macs(shortcut.eval(), torch.zeros(2, *shape))
            shortcut.train()
            self.trace.append(LayerRecord(f"{prefix}shortcut", "projection", shape, out_shape, sc_params,
                                          sc_params, macs, depth + 1))
        self.trace.insert(start, LayerRecord(block, "residual", shape, out_shape, 0, 0, 0, depth))
        return module, out_shape

    def branches(self, params: Any, shape: Shape, prefix: str, depth: int, where: str) -> tuple[nn.Module, Shape]:
        """Parallel paths over the same input; their outputs are concatenated on the channel axis."""
        block = prefix.rstrip(".")
        if not isinstance(params, list) or len(params) < 2:
            raise ConfigError(f"{where} (branches block {block}): write `branches: [[...], [...]]`, a list of at "
                              f"least two paths, each a layer list (an empty list passes the input through).")
        start = len(self.trace)
        paths: OrderedDict[str, nn.Module] = OrderedDict()
        shapes: list[Shape] = []
        for i, path in enumerate(params, 1):
            body, out = self.build_list(path if isinstance(path, list) else [path], shape, f"{prefix}path{i}.",
                                        depth + 1, False)
            paths[f"path{i}"] = nn.Sequential(body)
            shapes.append(out)
        for i, out in enumerate(shapes[1:], 2):
            if len(out) != len(shapes[0]) or out[1:] != shapes[0][1:]:
                raise ConfigError(f"{where} (branches block {block}): path {i} outputs {fmt(out)} but path 1 outputs "
                                  f"{fmt(shapes[0])}; the outputs are concatenated on the channel axis, so every path "
                                  f"must keep the same spatial size (fix path {i}'s strides, padding or pooling).")
        out_shape = (sum(o[0] for o in shapes), *shapes[0][1:])
        self.trace.insert(start, LayerRecord(block, "branches", shape, out_shape, 0, 0, 0, depth))
        return Branches(paths), out_shape


def projection(in_shape: Shape, out_shape: Shape, where: str, mode: str) -> nn.Module | None:
    """The residual shortcut: identity when shapes agree, else a 1x1 conv / linear projection."""
    if in_shape == out_shape and mode != "always":
        return None
    if mode == "none":
        raise ConfigError(f"{where}: the block maps {fmt(in_shape)} to {fmt(out_shape)} but projection=none; "
                          f"the shapes must agree for an identity shortcut.")
    if len(in_shape) == len(out_shape) and len(in_shape) in (2, 3, 4):  # (C, L), (C, H, W), (C, T, H, W)
        ratios = {a // b if b and a % b == 0 else 0 for a, b in zip(in_shape[1:], out_shape[1:])}
        if len(ratios) == 1 and 0 not in ratios:
            conv = {2: nn.Conv1d, 3: nn.Conv2d, 4: nn.Conv3d}[len(in_shape)]
            return conv(in_shape[0], out_shape[0], 1, stride=ratios.pop(), bias=False)
    if len(in_shape) == len(out_shape) in (1, 2) and in_shape[:-1] == out_shape[:-1]:  # (F,) or (T, F)
        return nn.Linear(in_shape[-1], out_shape[-1], bias=False)
    raise ConfigError(f"{where}: the block maps {fmt(in_shape)} to {fmt(out_shape)}, and no 1x1 projection can "
                      f"make the shortcut match (spatial sizes must shrink by one whole stride); fix the block's "
                      f"strides/padding so the shapes line up.")


def build_model(spec: ModelConfig, input_shape: Shape, num_classes: int, device: str = "cpu") -> BuiltModel:
    """Build the nn.Module described by spec.layers for inputs of `input_shape` (no batch axis); a torchvision
    backbone is built on `device` (`meta` for a summary: shapes and counts without memory or compute)."""
    if not spec.layers and not spec.backbone:
        raise ConfigError("model.layers is empty: the config names no architecture (pick one with "
                          "model=NAME, or start your own config file with `defaults: [train, _self_]`).")
    if spec.backbone:
        # through the registry's resolver: torchvision (~3 s to import) loads only for a backbone
        return resolve("dltool.models.backbones:build_backbone")(spec, tuple(input_shape), num_classes, device)
    b = Builder(num_classes, spec.strict_shapes)
    layers, out_shape = b.build_list(list(spec.layers), tuple(input_shape), "", 0, True)
    if out_shape != (num_classes,) and not (num_classes == 2 and out_shape == (1,)):
        raise ConfigError(f"model.layers: the last layer outputs {fmt(out_shape)} values per example but the data "
                          f"has {num_classes} classes; end with `fc: {{units: num_classes}}`.")
    model = Net(layers)
    return BuiltModel(model, tuple(input_shape), b.trace, b.inits)


def too_big(ex: BaseException) -> bool:
    return isinstance(ex, MemoryError) or "allocate" in str(ex)


def layer_error(where: str, params: dict, ex: BaseException) -> ConfigError:
    """A layer that cannot be built: too large for this machine's memory, or an option of the wrong kind."""
    given = ", ".join(f"{k}={v!r}" for k, v in params.items())
    if too_big(ex):
        return ConfigError(f"{where}: the layer{f' ({given})' if given else ''} or its input needs more memory than "
                           f"this machine can allocate; make the layer or the input (data.input_shape, "
                           f"data.image_size) smaller.")
    if not isinstance(ex, (ValueError, TypeError, RuntimeError)):
        raise ex
    reason = str(ex).splitlines()[0].rstrip(".") if str(ex) else type(ex).__name__
    return ConfigError(f"{where}: an option has a value of the wrong kind ({given}): {reason}.")
