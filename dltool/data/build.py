"""build_data: load a data set by name, split it, normalize with training statistics, place it on the device."""

from __future__ import annotations

import torch

from dltool import plugins
from dltool.catalog import DATASETS
from dltool.config.schema import DataConfig
from dltool.data.normalize import apply_norm, fit_norm
from dltool.data.splits import DataBundle, RawData, TensorSplit, make_splits, relayout
from dltool.data.targets import fit_target_norm, sampler_weights, standardize_targets
from dltool.errors import ConfigError
from dltool.registry import lookup


def load(cfg: DataConfig) -> RawData | DataBundle:
    """The data set data.name as its loader returns it: all examples (RawData) or streamed splits (DataBundle)."""
    own = plugins.get("datasets", cfg.name)
    if own is not None:  # a plug-in data set: its options (checked and filled when the config was validated)
        return own.obj(dict(cfg.options or {}), cfg)
    return lookup(DATASETS, cfg.name, "data.name")(cfg)


def build_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataBundle:
    """Load, split (stratified, seeded), normalize with train statistics and place on the device."""
    loaded = load(cfg)
    if isinstance(loaded, DataBundle):  # streamed data: the loader built its own splits and stats
        return loaded
    raw = relayout(loaded, cfg.layout)
    s = make_splits(raw, cfg)
    norm = fit_norm(s["train"][0], cfg.normalize, raw.layout, cfg)
    target_norm = fit_target_norm(s["train"][1]) if raw.task == "regression" else None
    dev = torch.device(device) if cfg.on_device else torch.device("cpu")

    def place(pair: tuple[torch.Tensor, torch.Tensor]) -> TensorSplit:
        x, y = pair
        return TensorSplit(apply_norm(x, norm).contiguous().to(dev), standardize_targets(y, target_norm).to(dev))

    train = place(s["train"])
    train.sampler = sampler_weights(cfg.sampler, raw.task, s["train"][1])
    num_classes = len(raw.class_names) if raw.task == "classification" else int(s["train"][1].shape[1])
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise ConfigError(f"data.num_classes={cfg.num_classes} but the data set {cfg.name!r} has {num_classes} "
                          f"classes; remove the key or set it to {num_classes}.")
    if cfg.input_shape is not None and tuple(cfg.input_shape) != tuple(train.x.shape[1:]):
        raise ConfigError(f"data.input_shape={list(cfg.input_shape)} but the data set {cfg.name!r} gives "
                          f"{list(train.x.shape[1:])} per example; remove the key (it is for `dltool summary`).")
    layout = "features" if norm.get("kind") == "pca" else raw.layout  # PCA turns images into vectors
    return DataBundle(train, place(s["val"]) if "val" in s else None, place(s["test"]) if "test" in s else None,
                      tuple(train.x.shape[1:]), num_classes, raw.class_names, norm, layout, raw.feature_names,
                      raw.task, target_norm)

