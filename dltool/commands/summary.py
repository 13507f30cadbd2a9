"""`dltool summary`: the layer table (output shape, parameters, memory, mult-adds) for a config."""

from __future__ import annotations

from dltool.config.schema import TrainConfig
from dltool.console import console, table
from dltool.data.build import build_data
from dltool.models.builder import build_model
from dltool.models.finetune import apply
from dltool.models.summary import COLUMNS, rows


def summary_task(cfg: TrainConfig) -> int:
    """`dltool summary`: build the model for the configured data set and print the layer table."""
    data = build_data(cfg.data, "cpu")
    built = build_model(cfg.model, data.input_shape, data.num_classes)
    apply(built, cfg.model)  # so the table shows what is frozen and what learns more slowly
    console.print(table(f"{cfg.model.name} on {cfg.data.name} (input {'x'.join(map(str, data.input_shape))}, "
                        f"{data.num_classes} classes)", COLUMNS, rows(built)))
    return 0
