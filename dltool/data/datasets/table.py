"""`csv`: a table with a header row; one column holds the class (data.label), the others are features.

The label column may hold numbers or strings; its distinct values, sorted, become the class names.
The features are every other column, or the ones data.features names. Every feature cell must be a
number: an empty or non-numeric cell stops with its row and column.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dltool.config.schema import DataConfig
from dltool.data.datasets.arrays import data_path
from dltool.data.splits import RawData
from dltool.data.validate import check_finite_table, check_two_classes, read_csv_rows
from dltool.errors import ConfigError
from dltool.registry import unknown


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV file; every row as long as the header."""
    header, rows = read_csv_rows(path)
    if not header or not rows:
        raise ConfigError(f"{path} has no header row and data rows; expected a CSV with column names on line 1.")
    for i, r in enumerate(rows, start=1):
        if len(r) != len(header):
            raise ConfigError(f"{path} row {i} has {len(r)} cells but the header has {len(header)} columns.")
    return header, rows


def numbers(path: Path, header: list[str], rows: list[list[str]], columns: list[str]) -> torch.Tensor:
    """The chosen columns as a float32 (N, F) tensor; a missing or non-numeric cell names its row and column."""
    where = [header.index(c) for c in columns]
    out = torch.empty(len(rows), len(where), dtype=torch.float32)
    for i, r in enumerate(rows):
        for j, c in enumerate(where):
            try:
                out[i, j] = float(r[c])
            except ValueError:
                raise ConfigError(f"{path} row {i + 1} (line {i + 2}), column {header[c]!r}: {r[c].strip()!r} is "
                                  f"{'missing' if not r[c].strip() else 'not a number'}; every feature cell must be "
                                  f"a number (fix the cell, or leave the column out with data.features=[...]).") \
                    from None
    check_finite_table(path, out, [header[c] for c in where])
    return out  # (N, F)


def feature_columns(header: list[str], label: str, chosen: list[str] | None) -> list[str]:
    if chosen is None:
        return [h for h in header if h != label]
    for c in chosen:
        if c not in header or c == label:
            raise unknown("data.features", c, [h for h in header if h != label])
    return list(chosen)


def class_labels(path: Path, rows: list[list[str]], column: int, name: str) -> tuple[torch.Tensor, list[str]]:
    """Labels as class indices; class names are the distinct values, sorted (numerically when all are numbers)."""
    values = [r[column].strip() for r in rows]
    missing = next((i for i, v in enumerate(values) if not v), None)
    if missing is not None:
        raise ConfigError(f"{path} row {missing + 1} (line {missing + 2}), column {name!r}: the label is missing.")
    distinct = set(values)
    try:
        names = sorted(distinct, key=float)
    except ValueError:
        names = sorted(distinct)
    index = {v: i for i, v in enumerate(names)}
    return torch.tensor([index[v] for v in values], dtype=torch.int64), names


def load_csv(cfg: DataConfig) -> RawData:
    path = data_path(cfg, "a .csv file with a header row")
    header, rows = read_rows(path)
    if not cfg.label:
        raise ConfigError(f"data.label is not set; data=csv needs the name of the class column, one of: "
                          f"{', '.join(header)}.")
    if cfg.label not in header:
        raise unknown("data.label", cfg.label, header)
    columns = feature_columns(header, cfg.label, cfg.features)
    if not columns:
        raise ConfigError(f"{path} has no feature columns besides data.label={cfg.label!r}.")
    x = numbers(path, header, rows, columns)
    y, names = class_labels(path, rows, header.index(cfg.label), cfg.label)
    check_two_classes(f"{path} column data.label={cfg.label!r}", [y], names)
    if cfg.layout not in (None, "features"):
        raise ConfigError(f"data.layout={cfg.layout!r} does not fit a table; valid: features (or null).")
    return RawData({"all": (x, y)}, names, "features", columns)


def read_feature_rows(path: Path, columns: list[str]) -> torch.Tensor:
    """predict: the training feature columns of a CSV (other columns, the label too, are ignored)."""
    header, rows = read_rows(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ConfigError(f"{path} lacks the feature columns {missing} this model was trained on; "
                          f"it needs: {', '.join(columns)}.")
    return numbers(path, header, rows, columns)
