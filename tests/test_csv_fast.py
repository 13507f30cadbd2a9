"""The CSV reader's fast path (dltool/data/datasets/table_fast.py): every number equals float() then float32, bit
for bit, and every label equals the csv module's cell; a bad cell still gets its one sentence."""

import csv

import numpy as np
import pytest

from dltool.data.datasets import table_fast
from dltool.data.datasets.table import class_labels, numbers, read_rows
from dltool.errors import ConfigError


def float32_ties(rng, n: int) -> list[str]:
    """Decimals at and next to the midpoint between two neighbouring float32 (where float64 -> float32 rounds
    either way): the cells the fast path must hand to float()."""
    a = rng.normal(size=n).astype(np.float32)
    mid = (a.astype(np.float64) + np.nextafter(a, np.float32(np.inf)).astype(np.float64)) / 2
    near = [mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf)]
    return [repr(float(v)) for v in np.stack(near, 1).ravel()]


def cells(rng, n: int) -> list[str]:
    """Numbers as programs and people write them: mostly plain decimals, a few in forms only float() reads."""
    plain = [
        lambda: repr(float(rng.normal())),  # 17 significant digits, the odd exponent (1.2e-05)
        lambda: repr(float(rng.normal() * 10.0 ** rng.integers(-3, 12))),
        lambda: f"{rng.normal() * 1000:.{rng.integers(0, 9)}f}",
        lambda: str(rng.integers(-10**12, 10**12)),
        lambda: "+" + f"{abs(rng.normal()):.6f}",
        lambda: "." + str(rng.integers(0, 10**6)).zfill(6),
        lambda: str(rng.integers(0, 1000)) + ".",
        lambda: rng.choice(["-0", "0.0", "-0.000", "0", "00012.500"]),
        lambda: "".join(rng.choice(list("0123456789"), rng.integers(12, 18))) + "." + str(rng.integers(0, 9)),
        lambda: "0." + "0" * int(rng.integers(0, 4)) + "".join(rng.choice(list("0123456789"), 16)),
    ]
    odd = [
        lambda: f" {rng.normal():.4f} ",  # float() strips spaces
        lambda: "1_000",  # float() takes underscores
        lambda: f"{rng.normal():.3e}",
        lambda: "9" * 30,  # longer than a window
        lambda: "1" + "0" * 20 + ".5",  # above 9 * 10**18 as an integer
    ]
    ties = float32_ties(rng, n // 150)
    out = [str(plain[rng.integers(len(plain))]()) for _ in range(n - n // 50 - len(ties))]
    out += [str(odd[rng.integers(len(odd))]()) for _ in range(n // 50)] + ties
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_fast_numbers_equal_float_then_float32_bit_for_bit(tmp_path, newline):
    rng = np.random.default_rng(7)
    rows, cols = 4000, 5  # 20,000 cells: three blocks of table_fast.BLOCK
    grid = np.array(cells(rng, rows * cols), dtype=object).reshape(rows, cols)
    labels = rng.choice(["a", "b"], rows)
    path = tmp_path / "t.csv"
    lines = ["f0,f1,f2,f3,f4,kind", *(",".join([*r, k]) for r, k in zip(grid.tolist(), labels))]
    path.write_bytes((newline.join(lines) + newline).encode())
    expected = np.array([[float(c) for c in r] for r in grid.tolist()]).astype(np.float32)
    table = read_rows(path)
    assert table.body is not None and table.rows == rows
    fast = table_fast.columns(table.body, table.ends, [0, 1, 2, 3, 4])
    assert fast is not None  # the array path took the file (not numpy's tokenizer)
    assert np.array_equal(fast.view(np.uint32), expected.view(np.uint32))  # -0.0 too
    got = numbers(path, table, ["f4", "f0", "f2"]).numpy()
    assert np.array_equal(got.view(np.uint32), expected[:, [4, 0, 2]].view(np.uint32))
    assert table.column("kind") == list(labels) and table.column("f3") == list(grid[:, 3])


def test_blocks_of_short_and_long_cells_read_with_one_two_or_three_words(tmp_path):
    """Each block of cells is read with as many 8-byte words as its longest cell needs."""
    rng = np.random.default_rng(9)
    n = table_fast.BLOCK
    column = [*map(str, rng.integers(0, 256, n)), *(f"{v:.9f}" for v in rng.normal(size=n) * 1e4),
              *map(repr, rng.normal(size=n).tolist()), *map(str, rng.integers(-99, 99, 100))]
    path = tmp_path / "t.csv"
    path.write_text("x,y\n" + "".join(f"{c},{i % 3}\n" for i, c in enumerate(column)))
    table = read_rows(path)
    fast = table_fast.columns(table.body, table.ends, [0])
    expected = np.array([float(c) for c in column]).astype(np.float32)[:, None]
    assert fast is not None and np.array_equal(fast.view(np.uint32), expected.view(np.uint32))


def test_a_file_of_exponents_goes_to_numpys_tokenizer_with_the_same_values(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3)) * 10.0 ** rng.integers(-20, 20, size=(400, 3))
    path = tmp_path / "t.csv"
    path.write_text("a,b,c,y\n" + "".join(f"{p:.8e},{float(q)!r},{r:.3E},{i % 2}\n" for i, (p, q, r) in enumerate(x)))
    table = read_rows(path)
    assert table_fast.columns(table.body, table.ends, [0, 1, 2]) is None  # too many cells for float() one by one
    expected = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[0, 1, 2], dtype=np.float32)
    got = numbers(path, table, ["a", "b", "c"]).numpy()
    assert np.array_equal(got, expected)
    assert np.array_equal(got, np.array([[float(f"{p:.8e}"), q, float(f"{r:.3E}")] for p, q, r in x],
                                        dtype=np.float64).astype(np.float32))


@pytest.mark.parametrize("cell", ["1.2.3", "--1", "1e", "-", ".", "", "7kg", "1-2", "+-3", "0x1f", "\u0661.5x"])
def test_a_bad_cell_in_a_plain_file_gets_the_per_cell_sentence(tmp_path, cell):
    rng = np.random.default_rng(1)
    grid = [[repr(float(v)) for v in r] for r in rng.normal(size=(3000, 4))]
    grid[2345][2] = cell
    path = tmp_path / "t.csv"
    path.write_text("f0,f1,f2,f3,kind\n" + "".join(",".join([*r, "x" if i % 2 else "y"]) + "\n"
                                                  for i, r in enumerate(grid)))
    table = read_rows(path)
    assert table.body is not None
    with pytest.raises(ConfigError) as ex:
        numbers(path, table, ["f0", "f1", "f2", "f3"])
    kind = "missing" if not cell else "not a number"
    assert str(ex.value) == (f"{path} row 2346 (line 2347), column 'f2': {cell!r} is {kind}; every feature cell "
                             f"must be a number (fix the cell, or leave the column out with data.features=[...]).")


def reference_labels(path, name):
    """Class indices and names from the csv module's cells, the rule written out again: stripped, sorted
    (numerically when every name is a number)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    values = [r[name].strip() for r in rows]
    try:
        names = sorted(set(values), key=float)
    except ValueError:
        names = sorted(set(values))
    return [names.index(v) for v in values], names


@pytest.mark.parametrize("words", [["2", "10", "1.5", "-1"], ["cat", " cat", "dog ", "ému"],
                                   ["Iris-versicolor", "Iris-setosa", "x"], ["a", "bb", "12345678"]])
def test_labels_read_from_the_bytes_equal_the_csv_modules(tmp_path, words):
    rng = np.random.default_rng(5)
    column = [words[i] for i in rng.integers(len(words), size=500)]
    path = tmp_path / "t.csv"
    path.write_text("label,f\n" + "".join(f"{w},{i}\n" for i, w in enumerate(column)), encoding="utf-8")
    table = read_rows(path)
    short = table_fast.short_cells(table.body, table.ends, 0)
    assert (short is not None) == all(len(w.encode()) <= 8 for w in words)
    y, names = class_labels(path, table.distinct("label"), "label")
    want_y, want_names = reference_labels(path, "label")
    assert names == want_names and y.tolist() == want_y
    assert table.column("label") == column


def test_a_missing_label_is_named_by_its_row_on_both_label_paths(tmp_path):
    for word in ("cat", "a-long-class-name"):
        path = tmp_path / f"{len(word)}.csv"
        path.write_text("f,label\n" + "".join(f"{i},{word if i != 6 else '  '}\n" for i in range(20)))
        table = read_rows(path)
        with pytest.raises(ConfigError) as ex:
            class_labels(path, table.distinct("label"), "label")
        assert str(ex.value) == f"{path} row 7 (line 8), column 'label': the label is missing."


def test_a_ragged_row_is_named_by_the_csv_modules_reader(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,x\n3,4,y\n5,6,7,z\n8,9,x\n")
    assert table_fast.cell_ends(path.read_bytes().split(b"\n", 1)[1], 3) is None
    with pytest.raises(ConfigError, match=r"row 3 has 4 cells but the header has 3 columns\.$"):
        read_rows(path)


def test_every_cell_the_array_path_takes_is_one_float_reads_to_the_same_float32():
    """Random strings over digits, dots, signs, 'e', spaces, 'x' and '_': whatever the array path accepts, float()
    accepts too and rounds to the same float32 (the rest is left to float(), which then names a bad cell)."""
    rng = np.random.default_rng(2)
    alphabet = list("0123456789" * 4 + ".+-e x_")
    strings = ["".join(rng.choice(alphabet, rng.integers(0, 27))) for _ in range(30000)]
    body = ("9" * 30 + "\n" + "\n".join(strings) + "\n").encode()  # a long first cell: every window is full
    ends = table_fast.cell_ends(body, 1)
    values, ok = table_fast._plain(np.frombuffer(body, np.uint8), np.concatenate([[0], ends[:-1, 0] + 1]), ends[:, 0])
    taken = [(s, v) for s, v, o in zip(["9" * 30, *strings], values, ok) if o]
    assert len(taken) > 5000
    assert all(np.float32(float(s)).view(np.uint32) == np.float32(v).view(np.uint32) for s, v in taken)
