"""Your own data: data=arrays (.npz, .npy folders, memory-mapped streaming) and data=csv, on files the tests write."""

import csv

import numpy as np
import pytest
import torch

from dltool.commands.predict import OPTIONS, run_predict
from dltool.data.build import build_data
from dltool.data.datasets.arrays import ArraySplit
from dltool.data.splits import TensorSplit
from dltool.errors import ConfigError
from dltool.train import checkpoint
from dltool.train.run import prepare, train
from tests.conftest import make_config

FAST = ("model=mlp", "trainer.device=cpu", "trainer.patience=null", "trainer.batch_size=32")


def blobs(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well separated 3-D blobs (float64), labels 'left' / 'right'."""
    rng = np.random.default_rng(seed)
    y = np.array(["left", "right"])[np.arange(n) % 2]
    x = rng.normal(size=(n, 3)) * 0.5 + np.where(y == "left", -2.0, 2.0)[:, None]
    return x, y


def write_csv(path, x, y, bad=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f1", "f2", "f3", "kind"])
        for i, (row, label) in enumerate(zip(x, y)):
            cells = [repr(float(v)) for v in row]
            if bad is not None and i == bad[0]:
                cells[bad[1]] = bad[2]
            w.writerow([*cells, label])


def test_npz_with_string_labels_keeps_float_values_and_stratifies(tmp_path):
    x, y = blobs()
    x[0, 0] = 0.123456789
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = build_data(make_config("data=arrays", f"data.path={tmp_path / 'd.npz'}", "data.normalize=none").data)
    assert data.class_names == ["left", "right"] and data.layout == "features" and data.input_shape == (3,)
    assert len(data.test) == 48 and len(data.val) == 29 and len(data.train) == 163
    assert abs(torch.bincount(data.test.y)[0].item() - 24) <= 1  # stratified
    every = torch.cat([data.train.x, data.val.x, data.test.x])
    assert every.dtype == torch.float32 and torch.isclose(every, torch.tensor(0.123456789)).any()  # not 8-bit


def test_given_val_and_test_arrays_are_used_as_they_are(tmp_path):
    x, y = blobs(300)
    labels = (y == "right").astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x[:200], y=labels[:200], x_val=x[200:250], y_val=labels[200:250],
             x_test=x[250:], y_test=labels[250:], class_names=np.array(["L", "R"]))
    data = build_data(make_config("data=arrays", f"data.path={tmp_path / 'd.npz'}").data)
    assert (len(data.train), len(data.val), len(data.test)) == (200, 50, 50)
    assert data.class_names == ["L", "R"]


@pytest.mark.parametrize("shape,layout,expected", [((60, 2, 6, 5), None, "image"), ((60, 7, 3), None, "sequence"),
                                                  ((60, 3, 7), "signal", "signal")])
def test_layout_follows_the_shape(tmp_path, shape, layout, expected):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=shape), y=np.arange(60) % 3)
    over = [f"data.layout={layout}"] if layout else []
    data = build_data(make_config("data=arrays", f"data.path={tmp_path / 'd.npz'}", *over).data)
    assert data.layout == expected and data.input_shape == shape[1:] and data.num_classes == 3


def test_layout_that_does_not_fit_is_one_sentence(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 4)), y=np.arange(20) % 2)
    with pytest.raises(ConfigError, match="data.layout='image' does not fit x of shape"):
        build_data(make_config("data=arrays", f"data.path={tmp_path / 'd.npz'}", "data.layout=image").data)


def test_large_npy_is_memory_mapped_and_streams_the_same_batches(tmp_path):
    x, y = blobs(400)
    (tmp_path / "big").mkdir()
    np.save(tmp_path / "big" / "x.npy", x.astype(np.float32))  # 4.8 kB: above the 1 kB cap below
    np.save(tmp_path / "big" / "y.npy", y)
    common = ("data=arrays", f"data.path={tmp_path / 'big'}")
    mem = build_data(make_config(*common).data)
    big = build_data(make_config(*common, "data.memory_cap_mb=0.001").data)
    assert isinstance(mem.train, TensorSplit) and isinstance(big.train, ArraySplit)
    assert isinstance(big.train.x, np.memmap)
    assert torch.allclose(big.norm["mean"], mem.norm["mean"], atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for (xa, ya), (xb, yb) in zip(mem.train.batches(64, g1), big.train.batches(64, g2)):
        assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-5)
    assert big.train.num_batches(64) == 5  # never more than one batch of rows read at once


@pytest.mark.slow
def test_streamed_arrays_train_like_in_memory_ones(tmp_path):
    x, y = blobs(300)
    (tmp_path / "big").mkdir()
    np.save(tmp_path / "big" / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "big" / "y.npy", y)
    keys = ("data=arrays", f"data.path={tmp_path / 'big'}", *FAST, "trainer.epochs=2", "scheduler=none")
    a = train(make_config(*keys), tmp_path / "mem")
    b = train(make_config(*keys, "data.memory_cap_mb=0.001"), tmp_path / "stream")
    assert b["test_acc"] == a["test_acc"] > 0.95
    wa = checkpoint.load(tmp_path / "mem" / "checkpoints" / "last.pt")["model"]
    wb = checkpoint.load(tmp_path / "stream" / "checkpoints" / "last.pt")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)


@pytest.mark.slow
def test_csv_with_string_labels_trains_and_predicts_rows(tmp_path):
    x, y = blobs()
    write_csv(tmp_path / "t.csv", x, y)
    keys = ("data=csv", f"data.path={tmp_path / 't.csv'}", "data.label=kind", *FAST, "trainer.epochs=3")
    summary = train(make_config(*keys), tmp_path / "run")
    assert summary["test_acc"] > 0.95
    ck = checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert ck["class_names"] == ["left", "right"] and ck["feature_names"] == ["f1", "f2", "f3"]
    write_csv(tmp_path / "rows.csv", x[:4], y[:4])
    res = run_predict(str(tmp_path / "run"), [str(tmp_path / "rows.csv")], dict(OPTIONS, device="cpu"))
    assert [top[0][0] for top in res["top"]] == list(y[:4]) and len(res["labels"]) == 4


def test_csv_features_choose_columns(tmp_path):
    x, y = blobs(60)
    write_csv(tmp_path / "t.csv", x, y)
    data = build_data(make_config("data=csv", f"data.path={tmp_path / 't.csv'}", "data.label=kind",
                                  "data.features=[f3,f1]").data)
    assert data.input_shape == (2,)
    with pytest.raises(ConfigError, match="data.features"):
        build_data(make_config("data=csv", f"data.path={tmp_path / 't.csv'}", "data.label=kind",
                               "data.features=[f9]").data)


@pytest.mark.parametrize("cell,word", [("abc", "not a number"), ("", "missing")])
def test_csv_bad_cell_names_row_and_column(tmp_path, cell, word):
    x, y = blobs(30)
    write_csv(tmp_path / "t.csv", x, y, bad=(6, 1, cell))
    with pytest.raises(ConfigError, match=rf"row 7 \(line 8\), column 'f2': '{cell}' is {word}"):
        build_data(make_config("data=csv", f"data.path={tmp_path / 't.csv'}", "data.label=kind").data)


@pytest.mark.slow
def test_no_validation_and_no_test_split_trains_on_everything(tmp_path):
    x, y = blobs(100)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    keys = ("data=arrays", f"data.path={tmp_path / 'd.npz'}", "data.val_fraction=0", "data.test_fraction=0", *FAST)
    data = build_data(make_config(*keys).data)
    assert len(data.train) == 100 and data.val is None and data.test is None
    with pytest.raises(ConfigError, match="trainer.monitor='val_loss' needs a validation split"):
        prepare(make_config(*keys))
    summary = train(make_config(*keys, "trainer.monitor=train_loss", "trainer.epochs=4"), tmp_path / "run")
    assert summary["best_value"] < 0.5 and "test_acc" not in summary


def test_csv_fast_reader_matches_loadtxt_and_the_csv_module(tmp_path):
    """The plain-text fast path, numpy's tokenizer, float()'s fallback and the csv module's path give the same table."""
    from dltool.data.datasets.table import numbers, read_rows

    x, y = blobs(500)
    write_csv(tmp_path / "plain.csv", x, y)
    plain = read_rows(tmp_path / "plain.csv")
    assert plain.body is not None  # the fast reader took it
    got = numbers(tmp_path / "plain.csv", plain, ["f1", "f2", "f3"])
    ref = np.loadtxt(tmp_path / "plain.csv", delimiter=",", skiprows=1, usecols=[0, 1, 2])
    assert np.array_equal(got.numpy(), ref.astype(np.float32))
    assert plain.column("kind") == list(y)
    text = (tmp_path / "plain.csv").read_text().splitlines()
    # quotes send the file through the csv module; `1_000` is refused by numpy's tokenizer, taken by float();
    # blank lines and a row of empty cells are skipped as the csv module's reader always skipped them
    quoted = [text[0], '"1_000",2,3,"left"', "", " , ,,", *text[1:], "   "]
    (tmp_path / "quoted.csv").write_text("\n".join(quoted) + "\n")
    (tmp_path / "odd.csv").write_text("\n".join([text[0], "1_000,2,3,left", "", " , ,,", *text[1:]]) + "\n")
    for name in ("quoted.csv", "odd.csv"):
        table = read_rows(tmp_path / name)
        assert (table.body is None) == (name == "quoted.csv") and table.rows == 501
        values = numbers(tmp_path / name, table, ["f1", "f2", "f3"]).numpy()
        assert values[0].tolist() == [1000.0, 2.0, 3.0] and np.array_equal(values[1:], ref.astype(np.float32))
        assert table.column("kind") == ["left", *y]


@pytest.mark.parametrize("quoted", [False, True])
def test_csv_bad_cell_deep_in_a_large_table_is_still_one_sentence(tmp_path, quoted):
    """Parse fast, explain slow: the first bad cell of 20,000 rows is named by row, line and column, on both readers."""
    x, y = blobs(20000)
    write_csv(tmp_path / "t.csv", x, y, bad=(15000, 2, '"7.5kg"' if quoted else "7.5kg"))
    if quoted:
        text = (tmp_path / "t.csv").read_text().replace('"""7.5kg"""', '"7.5kg"')
        (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ConfigError) as ex:
        build_data(make_config("data=csv", f"data.path={tmp_path / 't.csv'}", "data.label=kind").data)
    assert str(ex.value) == (f"{tmp_path / 't.csv'} row 15001 (line 15002), column 'f3': '7.5kg' is not a number; "
                             f"every feature cell must be a number (fix the cell, or leave the column out with "
                             f"data.features=[...]).")
