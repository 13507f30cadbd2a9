"""Rebuild a trained model from a run directory or a single checkpoint file (evaluate, predict).

A run dir supplies config.yaml and checkpoints/<name>.pt; a checkpoint file carries its own config.
Nothing here needs Hydra: the stored config is plain data validated against the same schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dltool import plugins
from dltool.config.compose import read_yaml
from dltool.config.schema import TrainConfig, to_dict, validate
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.registry import check_keys
from dltool.train import checkpoint as ckpt_io
from dltool.train.infer import pick_device


@dataclass
class Restored:
    """A trained model ready for inference, with what it was trained on."""

    cfg: TrainConfig
    ckpt: dict
    model: torch.nn.Module  # in eval mode, on `device`
    device: torch.device
    path: Path  # the checkpoint file read
    out_dir: Path  # where reports go: the run dir (or the checkpoint's folder)


def parse_options(args: list[str], defaults: dict[str, Any], command: str) -> tuple[list[str], dict, dict]:
    """-> (positional args, options with defaults filled in, `data.KEY=value` overrides of the stored config)."""
    positional, options, data = [], dict(defaults), {}
    for a in args:
        if "=" not in a:
            positional.append(a)
            continue
        key, value = a.split("=", 1)
        parsed = yaml.safe_load(value) if value else None
        if key.startswith("data."):
            data[key.removeprefix("data.")] = parsed
            continue
        check_keys({key: parsed}, list(defaults) + ["data.KEY"], f"dltool {command}")
        options[key] = typed_option(key, parsed, defaults[key], command)
    return positional, options, data


def typed_option(key: str, value: Any, default: Any, command: str) -> Any:
    """A counted option (topk, batch_size) is a whole number >= 1, a switch true/false, a name a string;
    threshold stays as written (a number or `tune`, checked by evaluate)."""
    if key == "threshold":
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"dltool {command}: {key}={value!r} is not valid; use true or false.")
        return value
    if isinstance(default, int) or key == "batch_size":
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"dltool {command}: {key}={value!r} is not valid; use a whole number >= 1, "
                              f"e.g. {key}={default or 64}.")
        return value
    return str(value)


def find_checkpoint(target: str, which: str) -> tuple[Path, Path]:
    """(checkpoint file, output dir) for a run dir + checkpoint name (best, last, or a file name) or a file."""
    path = Path(target)
    if path.is_file():
        out = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, out
    if not path.is_dir():
        raise ConfigError(f"{target} is neither a run directory nor a checkpoint file.")
    folder = path / "checkpoints"
    name = str(which) if str(which).endswith(".pt") else f"{which}.pt"
    ckpt = folder / name
    if not ckpt.is_file():
        have = sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
        found = (f"it has: {', '.join(have)}" if have
                 else "it holds no checkpoint (did the training run finish an epoch?)")
        raise ConfigError(f"run directory {target} has no checkpoints/{name}; {found}.")
    return ckpt, path


def stored_config(ckpt: dict, run_dir: Path | None, data_overrides: dict) -> TrainConfig:
    """The run dir's config.yaml (else the checkpoint's own config), with data.* overrides laid over it.

    Read as data (safe YAML, the schema); keys an older dltool stored for variants not in use are dropped.
    """
    cfg_file = run_dir / "config.yaml" if run_dir is not None else None
    if cfg_file is not None and cfg_file.is_file():
        raw = read_yaml(cfg_file, "the stored config")
    else:
        raw = ckpt["config"]
    if not isinstance(raw, dict):
        raise ConfigError("the checkpoint's stored config is not a mapping of keys; it was not written by dltool.")
    raw = to_dict(validate(raw, stored=True))
    raw["data"] = {**dict(raw.get("data") or {}), **data_overrides}
    return validate(raw)


def describe_mismatch(ex: RuntimeError) -> str:
    """torch's state-dict mismatch report as one short clause: the first differing tensor or key."""
    text = str(ex).replace("layers.", "")
    m = re.search(r"size mismatch for ([\w.]+): copying a param with shape torch.Size\(\[([\d, ]*)\]\) from "
                  r"checkpoint, the shape in current model is torch.Size\(\[([\d, ]*)\]\)", text)
    if m:
        name, a, b = m.group(1), *(g.replace(", ", "x") or "scalar" for g in m.groups()[1:])
        return f"{name} is {a} in the checkpoint but {b} in the config"
    m = re.search(r"(Missing|Unexpected) key\(s\) in state_dict: (.+)", text)
    if m:
        keys = [k.strip().strip('"') for k in m.group(2).rstrip(". ").split(", ")]
        where = ("the config's model has tensors the checkpoint lacks" if m.group(1) == "Missing"
                 else "the checkpoint has tensors the config's model lacks")
        return f"{where}: {', '.join(keys[:4])}{f' and {len(keys) - 4} more' if len(keys) > 4 else ''}"
    return next((ln.strip() for ln in text.splitlines()[1:] if ln.strip()), text.splitlines()[0]).rstrip(".")


def restore(target: str, which: str = "best", device: str = "cpu", data_overrides: dict | None = None) -> Restored:
    """Load the checkpoint, rebuild the model from the stored config and put the weights in (eval mode)."""
    path, out_dir = find_checkpoint(target, which)
    plugins.require(out_dir if Path(target).is_dir() else None, f"the run {out_dir}")
    dev = pick_device(device)
    ckpt = ckpt_io.load(path, "cpu")
    run_dir = out_dir if Path(target).is_dir() else None
    cfg = stored_config(ckpt, run_dir, data_overrides or {})
    shape, num_classes = tuple(ckpt["input_shape"]), int(ckpt["num_classes"])
    has_config = run_dir is not None and (run_dir / "config.yaml").is_file()
    where = f"{run_dir / 'config.yaml'}" if has_config else "its config"
    try:
        built = build_model(cfg.model, shape, num_classes)
    except ConfigError as ex:
        raise ConfigError(f"the model in {where} cannot be built for checkpoint {path}: {ex}") from None
    try:
        built.model.load_state_dict(ckpt["model"])
    except RuntimeError as ex:
        raise ConfigError(f"checkpoint {path} does not match the architecture in {where} (model.layers): "
                          f"{describe_mismatch(ex)}.") from None
    model = built.model.to(dev).eval()
    return Restored(cfg, ckpt, model, dev, path, out_dir)
