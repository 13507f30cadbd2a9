"""`csv`: a table with a header row; one column holds the class (data.label), the others are features.

The label column may hold numbers or strings; its distinct values, sorted, become the class names.
The features are every other column, or the ones data.features names. Every feature cell must be a
number: an empty or non-numeric cell stops with its row and column.
"""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dltool.config.schema import DataConfig
from dltool.data.datasets.arrays import data_path
from dltool.data.datasets.table_fast import cell_ends, maybe_blank, short_cells
from dltool.data.datasets.table_fast import columns as decimal_columns
from dltool.data.splits import RawData
from dltool.data.validate import check_finite_table, check_two_classes, read_csv_rows
from dltool.errors import ConfigError
from dltool.registry import unknown
from dltool.tasks import task_of


@dataclass
class Table:
    """A CSV's header and its data: the plain bytes (the fast reader) or its cells, row-major (the csv module's)."""

    header: list[str]
    body: bytes | None = None  # plain comma-separated UTF-8 lines, each ending in a newline
    ends: np.ndarray | None = None  # (rows, len(header)): where each cell of body ends (its comma or newline)
    split: list[str] | None = None  # rows * len(header) cells

    @functools.cached_property
    def lines(self) -> list[str] | None:
        return None if self.body is None else self.body.decode().split("\n")[:-1]

    @functools.cached_property
    def cells(self) -> list[str]:
        return self.split if self.split is not None else ",".join(self.lines or []).split(",")

    @property
    def rows(self) -> int:
        return len(self.ends) if self.ends is not None else len(self.cells) // len(self.header)

    def column(self, name: str) -> list[str]:
        j = self.header.index(name)
        if self.body is None or self.ends is None:
            return self.cells[j::len(self.header)]
        ends = self.ends[:, j].tolist()  # one column's cells cut out of the bytes, without splitting rows
        starts = (self.ends[:, j - 1] + 1).tolist() if j else [0, *(e + 1 for e in self.ends[:-1, -1].tolist())]
        if self.body.isascii():
            text = self.body.decode("ascii")
            return [text[a:b] for a, b in zip(starts, ends)]
        return [self.body[a:b].decode() for a, b in zip(starts, ends)]

    def distinct(self, name: str) -> tuple[list[str], np.ndarray]:
        """A column's distinct cells, as written, and each row's index into them."""
        if self.body is not None and self.ends is not None:
            found = short_cells(self.body, self.ends, self.header.index(name))
            if found is not None:
                return found
        index: dict[str, int] = {}
        inverse = [index.setdefault(v, len(index)) for v in self.column(name)]
        return list(index), np.array(inverse, dtype=np.int64)

    def row(self, i: int) -> list[str]:
        return self.cells[i * len(self.header):(i + 1) * len(self.header)]


def read_rows(path: Path) -> Table:
    """The header and the cells of a CSV file; every row as long as the header.

    Parse fast, explain slow: a file without quotes, lone carriage returns or ragged rows is kept as its bytes,
    its cells found by array operations (what the csv module would return for it, cell for cell); anything else
    goes through the csv module, which names the line of a problem.
    """
    table = split_plain(path)
    if table is not None:
        return table
    header, rows = read_csv_rows(path)
    if not header or not rows:
        raise ConfigError(f"{path} has no header row and data rows; expected a CSV with column names on line 1.")
    for i, r in enumerate(rows, start=1):
        if len(r) != len(header):
            raise ConfigError(f"{path} row {i} has {len(r)} cells but the header has {len(header)} columns.")
    return Table(header, split=[c for r in rows for c in r])


def split_plain(path: Path) -> Table | None:
    """The fast reader: None whenever the file is anything but plain comma-separated UTF-8 lines of equal length."""
    try:
        data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
        if not data.isascii():
            data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # the csv path says which byte or why
    if b'"' in data:
        return None
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
        if b"\r" in data:
            return None
    first, _, body = data.partition(b"\n")
    header = [h.strip() for h in first.decode().split(",")]
    if body and not body.endswith(b"\n"):
        body += b"\n"
    ends = cell_ends(body, len(header)) if first.strip() and body else None
    if ends is None or maybe_blank(body, ends):  # a blank row (or a row of empty cells) is skipped
        lines = [ln for ln in body.decode().split("\n") if ln.replace(",", "").strip()]
        body = "".join(ln + "\n" for ln in lines).encode()
        ends = cell_ends(body, len(header)) if first.strip() and body else None
    return None if ends is None else Table(header, body=body, ends=ends)  # None: no header, no rows or a ragged row


def numbers(path: Path, table: Table, columns: list[str], what: str = "feature") -> torch.Tensor:
    """The chosen columns as a float32 (N, F) tensor; a missing, non-numeric or non-finite cell names its row and
    column (features and targets alike).

    Parse fast, explain slow: plain decimal cells are read from the bytes by array operations
    (dltool/data/datasets/table_fast.py, equal to float() then float32, cell for cell), the others by float();
    a file with many other cells (exponents everywhere) goes to numpy's C tokenizer (which accepts a subset of
    what float() accepts: no `1_000`, no non-ASCII digits); what it refuses goes through float() column by
    column, and only when float() refuses a cell is the table walked again, in reading order, to name the first
    bad one. Cells are parsed as float64 and rounded once to float32, as float() then a float32 tensor would.
    """
    where = [table.header.index(c) for c in columns]
    x = None
    if table.body is not None and table.ends is not None:
        x = decimal_columns(table.body, table.ends, where)
        if x is None:
            try:
                x = np.loadtxt(table.lines, delimiter=",", usecols=where, dtype=np.float64, comments=None, ndmin=2)
            except ValueError:
                x = None
    if x is None:
        x = np.empty((table.rows, len(columns)), dtype=np.float64)
        try:
            for j, c in enumerate(columns):
                x[:, j] = np.fromiter(map(float, table.column(c)), dtype=np.float64, count=table.rows)
        except ValueError:
            raise bad_cell(path, table, columns, what) from None
    out = torch.from_numpy(x.astype(np.float32, copy=False))
    check_finite_table(path, out, columns)  # NaN/inf named by row and column
    return out  # (N, F)


def bad_cell(path: Path, table: Table, columns: list[str], what: str) -> ConfigError:
    """The first cell float() refuses, in reading order, as one sentence with its row, line and column."""
    where = [table.header.index(c) for c in columns]
    for i in range(table.rows):
        r = table.row(i)
        for c in where:
            try:
                float(r[c])
            except ValueError:
                kind = "missing" if not r[c].strip() else "not a number"
                fix = "fix the cell, or leave the column out with data.features=[...]" if what == "feature" else \
                    "fix the cell"
                return ConfigError(f"{path} row {i + 1} (line {i + 2}), column {table.header[c]!r}: "
                                   f"{r[c].strip()!r} is {kind}; every {what} cell must be a number ({fix}).")
    raise AssertionError("bad_cell called on a table whose cells all parse")


def feature_columns(header: list[str], labels: list[str], chosen: list[str] | None) -> list[str]:
    if chosen is None:
        return [h for h in header if h not in labels]
    for c in chosen:
        if c not in header or c in labels:
            raise unknown("data.features", c, [h for h in header if h not in labels])
    return list(chosen)


def class_labels(path: Path, column: tuple[list[str], np.ndarray], name: str) -> tuple[torch.Tensor, list[str]]:
    """Labels as class indices; class names are the distinct values, sorted (numerically when all are numbers).

    `column`: the column's distinct cells as written and each row's index into them (Table.distinct)."""
    raw, inverse = column
    values = [v.strip() for v in raw]
    if "" in values:
        missing = int(np.flatnonzero(np.isin(inverse, [i for i, v in enumerate(values) if not v]))[0])
        raise ConfigError(f"{path} row {missing + 1} (line {missing + 2}), column {name!r}: the label is missing.")
    distinct = set(values)
    try:
        names = sorted(distinct, key=float)
    except ValueError:
        names = sorted(distinct)
    index = {v: i for i, v in enumerate(names)}
    return torch.from_numpy(np.array([index[v] for v in values], dtype=np.int64)[inverse]), names


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


def binary_labels(path: Path, column: list[str], name: str) -> torch.Tensor:
    """A 0/1 (or true/false) column as float (N, 1); anything else is one sentence (no guessing which is positive)."""
    values = [v.strip().lower() for v in column]
    table = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0}
    bad = next((i for i, v in enumerate(values) if v not in table), None)
    if bad is not None:
        raise ConfigError(f"{path} row {bad + 1} (line {bad + 2}), column {name!r}: {column[bad].strip()!r} "
                          f"is not 0/1; data.task=binary needs 0 or 1 (true/false) per row, so that which value is "
                          f"positive is never guessed (or use data.task=classification).")
    return torch.tensor([[table[v]] for v in values])


def tag_labels(path: Path, column: list[str], name: str, sep: str) -> tuple[torch.Tensor, list[str]]:
    """One column of delimited tags (cat|dog) as a 0/1 matrix (N, K); the tags, sorted, are the label names."""
    tags = [[t.strip() for t in v.split(sep) if t.strip()] for v in column]
    empty = next((i for i, t in enumerate(tags) if not t), None)
    if empty is not None:
        raise ConfigError(f"{path} row {empty + 1} (line {empty + 2}), column {name!r}: no tag; every row of a "
                          f"tag column needs at least one tag separated by data.label_separator={sep!r} "
                          f"(e.g. cat{sep}dog).")
    names = sorted({t for ts in tags for t in ts})
    index = {n: i for i, n in enumerate(names)}
    y = torch.zeros(len(column), len(names))
    for i, ts in enumerate(tags):
        y[i, [index[t] for t in ts]] = 1.0
    return y, names


def targets(path: Path, table: Table, cfg: DataConfig,
            labels: list[str]) -> tuple[torch.Tensor, list[str]]:
    """The targets of data.task from the label column(s), with their names."""
    task = cfg.task
    if task == "classification":
        return class_labels(path, table.distinct(labels[0]), labels[0])
    if task == "binary":
        return binary_labels(path, table.column(labels[0]), labels[0]), labels
    if task == "regression":
        return numbers(path, table, labels, "target"), labels
    if len(labels) == 1:
        return tag_labels(path, table.column(labels[0]), labels[0], cfg.label_separator)
    y = numbers(path, table, labels, "label")
    if not bool(((y == 0) | (y == 1)).all()):
        i, j = [int(v) for v in torch.nonzero((y != 0) & (y != 1))[0]]
        raise ConfigError(f"{path} row {i + 1} (line {i + 2}), column {labels[j]!r}: {float(y[i, j]):g} is not "
                          f"0/1; data.task=multilabel with several label columns needs 0 or 1 in each.")
    return y, labels


def load_csv(cfg: DataConfig) -> RawData:
    path = data_path(cfg, "a .csv file with a header row")
    table = read_rows(path)
    task_of(cfg.task)
    labels = label_columns(cfg.label, table.header, cfg.task)
    columns = feature_columns(table.header, labels, cfg.features)
    if not columns:
        raise ConfigError(f"{path} has no feature columns besides data.label={cfg.label!r}.")
    x = numbers(path, table, columns)
    y, names = targets(path, table, cfg, labels)
    if cfg.task == "classification":
        check_two_classes(f"{path} column data.label={labels[0]!r}", [y], names)
    if cfg.layout not in (None, "features"):
        raise ConfigError(f"data.layout={cfg.layout!r} does not fit a table; valid: features (or null).")
    return RawData({"all": (x, y)}, names, "features", columns, cfg.task)


def read_feature_rows(path: Path, columns: list[str]) -> torch.Tensor:
    """predict: the training feature columns of a CSV (other columns, the label too, are ignored)."""
    table = read_rows(path)
    missing = [c for c in columns if c not in table.header]
    if missing:
        raise ConfigError(f"{path} lacks the feature columns {missing} this model was trained on; "
                          f"it needs: {', '.join(columns)}.")
    return numbers(path, table, columns)
