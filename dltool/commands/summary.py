"""`dltool summary`: the layer table (output shape, parameters, memory, mult-adds) for a config."""

from __future__ import annotations

from dltool.config.schema import DataConfig, TrainConfig
from dltool.console import console, table
from dltool.data.build import build_data
from dltool.data.declared import declared
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.models.finetune import apply
from dltool.models.summary import COLUMNS, rows


def shape_and_classes(cfg: DataConfig) -> tuple[tuple[int, ...], int, str]:
    """data.input_shape + data.num_classes describe the input without loading anything, so does a built-in data
    set's declared shape (dltool/data/declared.py); else load the data set."""
    if cfg.input_shape is None:
        known = declared(cfg)
        if known is not None:
            return known[0], known[1], cfg.name
        data = build_data(cfg, "cpu")
        return data.input_shape, data.num_classes, cfg.name
    shape = tuple(cfg.input_shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"data.input_shape={list(shape)} must list positive sizes of one example, "
                          f"e.g. [3, 224, 224].")
    if cfg.num_classes is None or cfg.num_classes < 1:
        raise ConfigError(f"data.input_shape={list(shape)} needs data.num_classes=K too (the number of classes), "
                          f"e.g. data.num_classes=1000.")
    return shape, cfg.num_classes, "no data set"


def summary_task(cfg: TrainConfig) -> int:
    """`dltool summary`: build the model for the data set (or data.input_shape) and print the layer table."""
    shape, num_classes, where = shape_and_classes(cfg.data)
    built = build_model(cfg.model, shape, num_classes, device="meta")  # a backbone on meta: counted, not computed
    apply(built, cfg.model)  # so the table shows what is frozen and what learns more slowly
    console.print(table(f"{cfg.model.name} on {where} (input {'x'.join(map(str, shape))}, "
                        f"{num_classes} classes)", COLUMNS, rows(built)))
    return 0
