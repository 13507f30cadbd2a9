"""Fine-tuning: start from pretrained weights, freeze some layers, train the pretrained part more slowly.

Applied once after the model is built and initialized (so the initializer never overwrites pretrained
weights):
1. load pretrained tensors: a torchvision backbone's weights (model.weights) and/or a previous dltool
   run's checkpoint (model.init_from: a run dir -> its checkpoints/best.pt, or a .pt file). Tensors are
   matched by layer name and shape; layers listed in model.reinit, and layers whose shape changed (a new
   number of classes), keep their fresh initialization.
2. freeze (requires_grad=False): the first N layers with parameters, named layers, or `pretrained`
   (everything that was loaded). Frozen batch-norm layers also keep their running statistics (they run
   in eval mode), so a frozen layer computes exactly what it computed before.
3. lr multipliers: model.pretrained_lr_mult scales the learning rate of the loaded, still trainable layers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.builder import BuiltModel
from dltool.models.params import is_norm, is_under, layer_of, short_name
from dltool.registry import unknown
from dltool.train import checkpoint as ckpt_io

log = logging.getLogger(__name__)


def under(key: str, name: str) -> bool:
    """State-dict key `key` belongs to the layer `name` (or a layer inside it)."""
    return is_under(layer_of(key), name)


def apply(built: BuiltModel, spec: ModelConfig) -> dict[str, float]:
    """Load pretrained weights, freeze, and return the lr multipliers {module name: factor} for the optimizer."""
    loaded = load_pretrained(built, spec)
    freeze(built, spec, loaded)
    built.lr_mults = lr_mults(built, spec, loaded)
    return built.lr_mults


def checkpoint_path(init_from: str) -> Path:
    src = Path(init_from)
    return src / "checkpoints" / "best.pt" if src.is_dir() else src


def load_pretrained(built: BuiltModel, spec: ModelConfig) -> set[str]:
    """Copy backbone weights and/or init_from tensors into the model; return the state-dict keys loaded."""
    names = layer_names(built)
    for name in spec.reinit:
        if name not in names:
            raise unknown("model.reinit entry", name, names)
    own = built.model.state_dict()
    taken = {k: v for k, v in built.pretrained.items() if not any(under(k, n) for n in spec.reinit)}
    if spec.init_from:
        taken.update(from_checkpoint(spec, own))
    if not taken:
        return set()
    own.update(taken)
    built.model.load_state_dict(own)
    return set(taken)


def from_checkpoint(spec: ModelConfig, own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors that fit this model (same name and shape, not in reinit)."""
    path = checkpoint_path(spec.init_from)
    state = ckpt_io.load(path)["model"]
    taken, changed = {}, set()
    for k, v in state.items():
        if k not in own or any(under(k, n) for n in spec.reinit):
            continue
        if own[k].shape == v.shape:
            taken[k] = v
        else:
            changed.add(layer_of(k))
    if not taken:
        raise ConfigError(f"model.init_from={spec.init_from}: none of the {len(state)} tensors in {path} matches "
                          f"a layer of this model by name and shape; it was trained with another architecture.")
    for layer in sorted(changed):
        log.warning("init_from: layer %s changed shape since %s, so it keeps its fresh initialization", layer, path)
    log.info("init_from: loaded %d of %d tensors from %s", len(taken), len(own), path)
    return taken


def layer_names(built: BuiltModel) -> list[str]:
    """Summary rows that hold parameters (blocks such as res1 included): the names freeze/reinit accept."""
    keys = [k for k, _ in built.model.named_parameters()]
    return [r.name for r in built.trace if any(under(k, r.name) for k in keys)]


def freeze(built: BuiltModel, spec: ModelConfig, loaded: set[str]) -> None:
    """requires_grad=False for the chosen layers; frozen norm layers run in eval mode."""
    chosen = frozen_names(built, spec, loaded)
    if not chosen:
        return
    params = dict(built.model.named_parameters())
    for k, p in params.items():
        if k in chosen or any(under(k, n) for n in chosen):
            p.requires_grad_(False)
    for m in built.model.modules():
        ps = list(m.parameters(recurse=False))
        if is_norm(m) and ps and not any(p.requires_grad for p in ps):
            m.register_forward_pre_hook(_keep_eval)


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.train(False)  # use (and keep) the stored running statistics, whatever model.train() said


def frozen_names(built: BuiltModel, spec: ModelConfig, loaded: set[str]) -> set[str]:
    """freeze: N (the first N layers with parameters) | [names] | pretrained -> layer names or state keys."""
    f = spec.freeze
    if f is None or f == [] or f == 0:
        return set()
    if f == "pretrained":
        if not loaded:
            raise ConfigError("model.freeze=pretrained but nothing is pretrained; set model.init_from (a run dir) "
                              "or model.weights (a torchvision backbone), or name the layers to freeze.")
        return set(loaded)
    top = [r.name for r in built.trace if r.depth == 0 and r.name in layer_names(built)]
    if isinstance(f, int) and not isinstance(f, bool):
        if not 0 <= f <= len(top):
            raise ConfigError(f"model.freeze={f} must be between 0 and {len(top)}, the number of layers with "
                              f"parameters ({', '.join(top)}).")
        return set(top[:f])
    if isinstance(f, str):
        f = [f]
    if not isinstance(f, list):
        raise ConfigError(f"model.freeze={f!r} must be a number of layers, a list of layer names or `pretrained`.")
    names = layer_names(built)
    for n in f:
        if n not in names:
            raise unknown("model.freeze entry", n, names)
    return set(f)


def lr_mults(built: BuiltModel, spec: ModelConfig, loaded: set[str]) -> dict[str, float]:
    """{module name (as in named_modules, minus `layers.`): pretrained_lr_mult} for loaded trainable layers."""
    mult = spec.pretrained_lr_mult
    if mult == 1.0:
        return {}
    if mult <= 0:
        raise ConfigError(f"model.pretrained_lr_mult={mult} must be positive; to stop a layer from learning, "
                          f"freeze it (model.freeze).")
    if not loaded:
        raise ConfigError(f"model.pretrained_lr_mult={mult} but nothing is pretrained; set model.init_from (a run "
                          f"dir) or model.weights (a torchvision backbone), or leave it at 1.0.")
    out = {}
    for mname, module in built.model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad and f"{mname}.{pname}" in loaded:
                out[short_name(mname)] = mult
    return out
