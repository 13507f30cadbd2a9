"""The CSV reader's fast path: cells found, numbers and short labels read from the file's bytes by array
operations, with no Python call per cell.

Numbers. A cell of the form `[+-]digits[.digits]` of at most 24 bytes (how most CSV writers, and Python's repr, write a
number) is read from the file's bytes all at once: its digits, the dot left out, make an integer M below 10**19,
and its value is M / 10**k (k digits after the dot) in float64. M -> float64 and the division each round once, so
that double is within 3 units in the last place of float(cell); rounded to float32 it therefore equals
float32(float(cell)) -- what the reader promises -- unless it lies within 16 units of a float32 rounding boundary
(one cell in ~10**7). Those cells, and every cell of another form (an exponent, spaces, nan, `1_000`, non-ASCII
digits, an empty cell), go through float() one by one. Values are identical to float() then float32, not close.

Labels. A column whose cells are at most 8 bytes is read as one integer per cell and its distinct values found
with np.unique (the Python strings are made only for them).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WIDTH = 24  # bytes of a cell read at once: up to three 8-byte words; a sign, a dot and 22 digits at most
BLOCK = 1 << 13  # cells parsed together (their arrays stay in the CPU's caches: ~2x faster than all at once)
SHIFTS = [np.array([8 * (n - 1 - j) for j in range(n)]) for n in range(4)]  # a word's byte in a cell's bits
U = np.uint64
# a byte of 8 bits (one per window column, first column highest) -> a word with 0xFF in those columns' bytes
BYTES = np.array([sum(0xFF << (8 * i) for i in range(8) if b >> (7 - i) & 1) for b in range(256)], U)
P10 = 10.0 ** np.arange(23)  # exact doubles up to 10**22
P10U = np.array([10**i for i in range(20)], U)
TIE = 1 << 28  # a double's low 29 bits at the midpoint between two float32


def cell_ends(body: bytes, ncols: int) -> np.ndarray | None:
    """(rows, ncols) offsets in `body` (data lines, each ending in a newline) of each cell's closing comma or
    newline; None for a ragged row."""
    u = np.frombuffer(body, np.uint8)
    ends = np.flatnonzero((u == 44) | (u == 10))
    newline = u[ends] == 10
    rows = len(ends) // ncols
    if not rows or rows * ncols != len(ends) or not newline[ncols - 1::ncols].all() \
            or int(np.count_nonzero(newline)) != rows:
        return None
    return ends.reshape(rows, ncols)


def maybe_blank(body: bytes, ends: np.ndarray) -> bool:
    """Whether a row starts with a newline, comma, space or tab: maybe blank (the csv module's reader skips those)."""
    first = np.frombuffer(body, np.uint8)[np.concatenate([[0], ends[:-1, -1] + 1])]
    return bool(np.isin(first, [10, 44, 32, 9]).any())


def columns(body: bytes, ends: np.ndarray, where: list[int]) -> np.ndarray | None:
    """The cells of columns `where` as float32 (rows, len(where)), each equal to float32(float(cell)).

    None when a cell float() refuses (the caller explains it) or when too many cells need float() one by one
    (the caller has a faster general parser for such files). Blocks of rows, so that no per-cell array of the
    whole table is made besides `ends` and the result."""
    if len(body) < WIDTH:
        return None
    u, rows, chosen = np.frombuffer(body, np.uint8), len(ends), np.array(where)
    row_start = np.concatenate([[0], ends[:-1, -1] + 1])
    out, ok = np.empty((rows, len(where)), np.float32), np.empty((rows, len(where)), bool)
    step = max(1, BLOCK // len(where))  # rows per block
    for r in range(0, rows, step):
        e = ends[r:r + step][:, chosen]
        s = np.where(chosen == 0, row_start[r:r + step, None], ends[r:r + step][:, np.maximum(chosen - 1, 0)] + 1)
        values, good = _plain(u, s.ravel(), e.ravel())
        out[r:r + step], ok[r:r + step] = values.reshape(e.shape), good.reshape(e.shape)
    odd = np.flatnonzero(~ok)
    if len(odd) > max(16, ok.size // 16):
        return None
    row, j = odd // len(where), chosen[odd % len(where)]
    s, e = np.where(j == 0, row_start[row], ends[row, np.maximum(j - 1, 0)] + 1), ends[row, j]
    try:
        out.ravel()[odd] = np.array([float(body[a:b].decode()) for a, b in zip(s.tolist(), e.tolist())],
                                    dtype=np.float64).astype(np.float32)
    except ValueError:
        return None
    return out


def _bits(mask: np.ndarray) -> np.ndarray:
    """A (cells, 8 * words) bool mask as one integer per cell: bit p is the column at distance p from the end."""
    b = np.packbits(mask.ravel()).reshape(len(mask), -1).astype(np.int64)
    out = b[:, 0]
    for j in range(1, b.shape[1]):
        out = out << 8 | b[:, j]
    return out


def _eight_digits(words: np.ndarray) -> np.ndarray:
    """Eight digit values, one per byte (first byte most significant), as their number (SWAR, as fast_float does)."""
    words = (words * U(2561)) >> U(8)
    words = ((words & U(0x00FF00FF00FF00FF)) * U(6553601)) >> U(16)
    return ((words & U(0x0000FFFF0000FFFF)) * U(42949672960001)) >> U(32)


def _plain(u: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values of the cells u[s:e] and where they are exact enough for float32 (False: use float())."""
    length = e - s
    words = min(3, max(1, -(-int(length.max()) // 8)))  # 8-byte words per cell: fewer for short cells
    width = 8 * words
    # (cells, width): the bytes up to each cell's end (not for a cell that ends in the first `width` bytes)
    window = sliding_window_view(u, width)[np.maximum(e - width, 0)]
    inside = (np.int64(1) << np.minimum(length, width)) - 1  # bits of the columns that belong to the cell
    digits = _bits(window - np.uint8(48) < 10) & inside
    keep = BYTES[(digits[:, None] >> SHIFTS[words]) & 255]  # 0xFF at the cell's digits, 0 elsewhere
    chunks = _eight_digits(window.view("<u8") & U(0x0F0F0F0F0F0F0F0F) & keep)  # the digits, a dot read as 0
    first = u[s]
    signed = (first == 43) | (first == 45)
    # what is neither a digit nor the leading sign: a valid cell has at most one such byte, and it is a dot
    dots = inside & ~digits & ~(signed.astype(np.int64) << np.clip(length - 1, 0, width))
    ndots = np.bitwise_count(dots)
    k = np.bitwise_count(np.maximum(dots - 1, 0)).astype(np.int64)  # digits after the dot (dots: 1 << k)
    ok = ((ndots == 0) | ((ndots == 1) & (u[e - 1 - k] == 46))) & (length > signed + ndots) \
        & (length <= width) & (k <= 22) & (e >= width) & ((words < 3) | (chunks[:, 0] < 900))  # below 9 * 10**18
    a = chunks[:, -1]  # q * 10**(k+1) + r, with a dot
    for j in range(2, words + 1):
        a = a + chunks[:, -j] * U(10 ** (8 * j - 8))
    cut, scale = P10U[np.minimum(k + ndots, 19)], P10U[np.minimum(k, 19)]
    m = a - a // cut * (cut - scale)  # q * 10**k + r: the dot's 0 taken out
    values = m.astype(np.float64) / P10[np.minimum(k, 22)]
    np.negative(values, out=values, where=first == 45)
    low = (values.view(U) & U((1 << 29) - 1)).astype(np.int64)
    return values, ok & (np.abs(low - TIE) > 16)


def short_cells(body: bytes, ends: np.ndarray, j: int) -> tuple[list[str], np.ndarray] | None:
    """Column j's distinct cells (as written, unsorted) and each row's index into them; None when a cell is longer
    than 8 bytes (or the file holds a NUL byte, which would make two cells one)."""
    e = ends[:, j]
    s = ends[:, j - 1] + 1 if j else np.concatenate([[0], ends[:-1, -1] + 1])
    length = e - s
    if len(body) < 8 or int(length.max()) > 8 or b"\0" in body:
        return None
    word = sliding_window_view(np.frombuffer(body, np.uint8), 8)[np.maximum(e - 8, 0)].copy().view("<u8")[:, 0]
    keys = np.where(length > 0, word >> (U(8) * (U(8) - np.maximum(length, 1).astype(U))), U(0))
    for i in np.flatnonzero(e < 8).tolist():  # a cell in the file's first 8 bytes
        keys[i] = int.from_bytes(body[s[i]:e[i]], "little")
    distinct, inverse = np.unique(keys, return_inverse=True)
    return [int(k).to_bytes(8, "little").rstrip(b"\0").decode() for k in distinct.tolist()], inverse
