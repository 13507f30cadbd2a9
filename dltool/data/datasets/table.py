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
from dltool.tasks import task_of


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV file; every row as long as the header."""
    header, rows = read_csv_rows(path)
    if not header or not rows:
        raise ConfigError(f"{path} has no header row and data rows; expected a CSV with column names on line 1.")
    for i, r in enumerate(rows, start=1):
        if len(r) != len(header):
            raise ConfigError(f"{path} row {i} has {len(r)} cells but the header has {len(header)} columns.")
    return header, rows


def numbers(path: Path, header: list[str], rows: list[list[str]], columns: list[str],
            what: str = "feature") -> torch.Tensor:
    """The chosen columns as a float32 (N, F) tensor; a missing, non-numeric or non-finite cell names its row and
    column (features and targets alike)."""
    where = [header.index(c) for c in columns]
    out = torch.empty(len(rows), len(where), dtype=torch.float32)
    for i, r in enumerate(rows):
        for j, c in enumerate(where):
            try:
                out[i, j] = float(r[c])
            except ValueError:
                kind = "missing" if not r[c].strip() else "not a number"
                fix = "fix the cell, or leave the column out with data.features=[...]" if what == "feature" else \
                    "fix the cell"
                raise ConfigError(f"{path} row {i + 1} (line {i + 2}), column {header[c]!r}: {r[c].strip()!r} is "
                                  f"{kind}; every {what} cell must be a number ({fix}).") from None
    check_finite_table(path, out, [header[c] for c in where])  # NaN/inf named by row and column
    return out  # (N, F)


def feature_columns(header: list[str], labels: list[str], chosen: list[str] | None) -> list[str]:
    if chosen is None:
        return [h for h in header if h not in labels]
    for c in chosen:
        if c not in header or c in labels:
            raise unknown("data.features", c, [h for h in header if h not in labels])
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


def label_columns(label: object, header: list[str], task: str) -> list[str]:
    """data.label as a list of columns: one for classification and binary, one or more otherwise."""
    if label is None or label == "???" or label == "" or label == []:
        raise ConfigError(f"data.label is not set; data=csv needs the target column(s), one of: {', '.join(header)}.")
    labels = [str(c) for c in label] if isinstance(label, (list, tuple)) else [str(label)]
    for c in labels:
        if c not in header:
            raise unknown("data.label", c, header)
    if len(labels) > 1 and task in ("classification", "binary"):
        raise ConfigError(f"data.label={labels} names {len(labels)} columns but data.task={task} reads one; for "
                          f"several 0/1 label columns use data.task=multilabel, for several numbers "
                          f"data.task=regression.")
    return labels


def binary_labels(path: Path, rows: list[list[str]], column: int, name: str) -> torch.Tensor:
    """A 0/1 (or true/false) column as float (N, 1); anything else is one sentence (no guessing which is positive)."""
    values = [r[column].strip().lower() for r in rows]
    table = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0}
    bad = next((i for i, v in enumerate(values) if v not in table), None)
    if bad is not None:
        raise ConfigError(f"{path} row {bad + 1} (line {bad + 2}), column {name!r}: {rows[bad][column].strip()!r} "
                          f"is not 0/1; data.task=binary needs 0 or 1 (true/false) per row, so that which value is "
                          f"positive is never guessed (or use data.task=classification).")
    return torch.tensor([[table[v]] for v in values])


def tag_labels(path: Path, rows: list[list[str]], column: int, name: str, sep: str) -> tuple[torch.Tensor, list[str]]:
    """One column of delimited tags (cat|dog) as a 0/1 matrix (N, K); the tags, sorted, are the label names."""
    tags = [[t.strip() for t in r[column].split(sep) if t.strip()] for r in rows]
    empty = next((i for i, t in enumerate(tags) if not t), None)
    if empty is not None:
        raise ConfigError(f"{path} row {empty + 1} (line {empty + 2}), column {name!r}: no tag; every row of a "
                          f"tag column needs at least one tag separated by data.label_separator={sep!r} "
                          f"(e.g. cat{sep}dog).")
    names = sorted({t for ts in tags for t in ts})
    index = {n: i for i, n in enumerate(names)}
    y = torch.zeros(len(rows), len(names))
    for i, ts in enumerate(tags):
        y[i, [index[t] for t in ts]] = 1.0
    return y, names


def targets(path: Path, header: list[str], rows: list[list[str]], cfg: DataConfig,
            labels: list[str]) -> tuple[torch.Tensor, list[str]]:
    """The targets of data.task from the label column(s), with their names."""
    task = cfg.task
    if task == "classification":
        return class_labels(path, rows, header.index(labels[0]), labels[0])
    if task == "binary":
        return binary_labels(path, rows, header.index(labels[0]), labels[0]), labels
    if task == "regression":
        return numbers(path, header, rows, labels, "target"), labels
    if len(labels) == 1:
        return tag_labels(path, rows, header.index(labels[0]), labels[0], cfg.label_separator)
    y = numbers(path, header, rows, labels, "label")
    if not bool(((y == 0) | (y == 1)).all()):
        i, j = [int(v) for v in torch.nonzero((y != 0) & (y != 1))[0]]
        raise ConfigError(f"{path} row {i + 1} (line {i + 2}), column {labels[j]!r}: {float(y[i, j]):g} is not "
                          f"0/1; data.task=multilabel with several label columns needs 0 or 1 in each.")
    return y, labels


def load_csv(cfg: DataConfig) -> RawData:
    path = data_path(cfg, "a .csv file with a header row")
    header, rows = read_rows(path)
    task_of(cfg.task)
    labels = label_columns(cfg.label, header, cfg.task)
    columns = feature_columns(header, labels, cfg.features)
    if not columns:
        raise ConfigError(f"{path} has no feature columns besides data.label={cfg.label!r}.")
    x = numbers(path, header, rows, columns)
    y, names = targets(path, header, rows, cfg, labels)
    if cfg.task == "classification":
        check_two_classes(f"{path} column data.label={labels[0]!r}", [y], names)
    if cfg.layout not in (None, "features"):
        raise ConfigError(f"data.layout={cfg.layout!r} does not fit a table; valid: features (or null).")
    return RawData({"all": (x, y)}, names, "features", columns, cfg.task)


def read_feature_rows(path: Path, columns: list[str]) -> torch.Tensor:
    """predict: the training feature columns of a CSV (other columns, the label too, are ignored)."""
    header, rows = read_rows(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ConfigError(f"{path} lacks the feature columns {missing} this model was trained on; "
                          f"it needs: {', '.join(columns)}.")
    return numbers(path, header, rows, columns)
