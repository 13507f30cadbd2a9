"""Checks every data reader runs before a run directory is written: readable files, shapes, finite values,
a sane label range and at least two classes; each failure is one ConfigError naming the file, array, row or column.

The label checks take the labels themselves and are only called for class targets, so a reader of regression
or multi-label targets skips them (call check_finite / check_examples on those targets instead).
"""

from __future__ import annotations

import csv
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dltool.errors import ConfigError

MAX_CLASSES = 100_000  # a label above this is a column of ids or a corrupt file, not a class number
FINITE_CHUNK = 1 << 20  # values checked at a time (memory-mapped arrays are read chunk by chunk)
# what numpy/zipfile raise for a truncated, corrupt or empty .npy/.npz (EOFError: a 0-byte file)
NPY_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError)


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """A .npy file, or one sentence: empty (0 bytes), truncated, not a .npy, or holding Python objects."""
    if path.stat().st_size == 0:
        raise ConfigError(f"{path} is empty (0 bytes); it was never written completely. Save it again with "
                          f"np.save.")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except NPY_ERRORS as ex:
        raise ConfigError(f"{path} cannot be read as a .npy array: it is truncated, corrupt or not a .npy file "
                          f"({type(ex).__name__}: {first_line(ex)}).") from None


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz file, each read in full now (a truncated member fails here, not mid-run)."""
    if path.stat().st_size == 0:
        raise ConfigError(f"data.path={str(path)!r} is empty (0 bytes); save it again with np.savez.")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except NPY_ERRORS as ex:
        raise ConfigError(f"data.path={str(path)!r} cannot be read as a .npz file: it is truncated, corrupt or not "
                          f"a .npz ({type(ex).__name__}: {first_line(ex)}).") from None


def first_line(ex: BaseException) -> str:
    text = (str(ex).strip().splitlines() or [""])[0]
    return text[:120] + (" ..." if len(text) > 120 else "")


def check_examples(name: str, x: Any) -> None:
    """x is an array of examples: at least one dimension (N, ...) with N >= 1 and every example non-empty."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < 2:
        kind = "a scalar" if not shape else f"a 1-D array of shape {shape}"
        raise ConfigError(f"{name} is {kind}; it must hold one example per row: (N, F) features, (N, T, F) "
                          f"sequences, (N, C, L) signals or (N, C, H, W) images.")
    if shape[0] == 0 or 0 in shape[1:]:
        raise ConfigError(f"{name} has shape {shape}: it holds no values; give at least one non-empty example.")


def check_finite(name: str, x: Any) -> None:
    """Every value finite; the first NaN/inf named with its example index and position (chunked for memmaps)."""
    if getattr(x, "dtype", None) is None or np.dtype(x.dtype).kind != "f":
        return
    flat_rows = int(np.prod(x.shape[1:]))
    step = max(1, FINITE_CHUNK // max(flat_rows, 1))
    for start in range(0, len(x), step):
        block = np.asarray(x[start:start + step])
        bad = ~np.isfinite(block)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            value = block[pos]
            raise ConfigError(f"{name} holds {value} at example {start + pos[0]} (index {(start + pos[0],) + pos[1:]})"
                              f"; inputs must be finite numbers: fill or drop the missing values first.")


def check_label_range(name: str, y: np.ndarray | torch.Tensor, names: list[str] | None) -> None:
    """Integer class labels: >= 0, and below the number of class names (or MAX_CLASSES without names)."""
    y = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    if not len(y):
        return
    low, top = int(y.min()), int(y.max())
    limit = len(names) if names is not None else MAX_CLASSES
    if low < 0 or top >= limit:
        what = f"there are {len(names)} class names" if names is not None else \
            f"more than {MAX_CLASSES} classes is not a class label (an id column?)"
        raise ConfigError(f"{name} holds labels from {low} to {top}, but {what}; labels must be class numbers "
                          f"0..K-1{f' with K <= {limit}' if names is None else ''}.")


def check_two_classes(name: str, labels: list[torch.Tensor], names: list[str]) -> None:
    """A classifier needs examples of at least two classes (one class: nothing to tell apart)."""
    present = set()
    for y in labels:
        present |= set(torch.unique(y).tolist())
    if len(present) < 2:
        only = names[int(next(iter(present)))] if present and int(next(iter(present))) < len(names) else "?"
        raise ConfigError(f"{name} holds examples of {len(present)} class ({only!r}); a classifier needs at least "
                          f"two classes.")


def read_text_lines(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file (class_names.txt), or one sentence."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as ex:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {ex.object[ex.start]:#04x} at offset {ex.start})"
                          f"; save it as UTF-8.") from None
    except OSError as ex:
        raise ConfigError(f"{what} {path} cannot be read ({ex.strerror or type(ex).__name__}).") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, non-blank rows) of a UTF-8 CSV; non-UTF-8 bytes and overlong fields get one sentence."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = [r for r in reader if any(c.strip() for c in r)]
    except UnicodeDecodeError as ex:
        raise ConfigError(f"{path} is not UTF-8 text (byte {ex.object[ex.start]:#04x} at offset {ex.start}); save the "
                          f"CSV as UTF-8.") from None
    except csv.Error as ex:
        raise ConfigError(f"{path} line {reader.line_num}: {first_line(ex)} (a cell longer than "
                          f"{csv.field_size_limit()} characters, or an unclosed quote); a CSV cell holds one number "
                          f"or one label.") from None
    return header, rows


def check_finite_table(path: Path, x: torch.Tensor, columns: list[str]) -> None:
    """A table's features: the first NaN/inf named with its row (line) and column."""
    bad = ~torch.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ConfigError(f"{path} row {i + 1} (line {i + 2}), column {columns[j]!r}: {x[i, j].item()} is not a "
                          f"finite number; fill or drop the missing values first.")


def open_image(path: Path, mode: str) -> Image.Image:
    """Decode an image in full (a truncated JPEG fails here), refusing decompression bombs; converted to mode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as ex:
        raise ConfigError(f"{path} is refused: {first_line(ex)} (a decompression bomb, or an image far larger than "
                          f"any this model takes).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as ex:
        raise ConfigError(f"cannot read image {path}: it is truncated, corrupt or not an image "
                          f"({first_line(ex)}).") from None
