"""Generated toy data: spiral, digits read row by row, the adding problem, delayed recall."""

from __future__ import annotations

import json

import pytest
import torch

from dltool.catalog import DATASETS
from dltool.config.schema import DataConfig
from dltool.data.build import build_data
from dltool.errors import ConfigError
from tests.conftest import make_config, run_cli


def test_spiral_shapes_classes_and_seed():
    raw = DATASETS["spiral"](DataConfig(name="spiral", points_per_class=50, num_classes=4))
    x, y = raw.splits["all"]
    assert x.shape == (200, 2) and x.dtype == torch.float32 and raw.layout == "features"
    assert torch.bincount(y).tolist() == [50, 50, 50, 50]
    assert x.norm(dim=1).max() <= 1.0 + 1e-6  # radius grows from 0 to 1
    again = DATASETS["spiral"](DataConfig(name="spiral", points_per_class=50, num_classes=4)).splits["all"][0]
    assert torch.equal(x, again)
    other = DATASETS["spiral"](DataConfig(name="spiral", points_per_class=50, num_classes=4, split_seed=1))
    assert not torch.equal(x, other.splits["all"][0])


def test_spiral_is_not_linearly_separable():
    """A least-squares linear classifier stays far from perfect on the spiral (the point of the data set)."""
    x, y = DATASETS["spiral"](DataConfig(name="spiral", noise=0.0)).splits["all"]
    a = torch.cat([x, torch.ones(len(x), 1)], 1)
    w = torch.linalg.lstsq(a, torch.nn.functional.one_hot(y).float()).solution
    acc = ((a @ w).argmax(1) == y).float().mean().item()
    assert acc < 0.7


def test_digits_rows_are_the_digit_images_row_by_row():
    raw = DATASETS["digits_rows"](DataConfig(name="digits_rows"))
    img = DATASETS["digits"](DataConfig()).splits["all"][0]
    x, y = raw.splits["all"]
    assert raw.layout == "sequence" and x.shape == (1797, 8, 8)
    assert torch.equal(x, img[:, 0])  # step t = row t of the image


def test_digits_rows_bundle_and_signal_layout():
    seq = build_data(DataConfig(name="digits_rows"))
    assert seq.input_shape == (8, 8) and seq.layout == "sequence" and seq.num_classes == 10
    sig = build_data(DataConfig(name="digits_rows", layout="signal", normalize="none"))
    raw = build_data(DataConfig(name="digits_rows", normalize="none"))
    assert sig.layout == "signal"
    assert torch.equal(sig.train.x, raw.train.x.transpose(1, 2))
    with pytest.raises(ConfigError, match="data.layout='signal'"):
        build_data(DataConfig(name="spiral", layout="signal"))


def test_adding_problem_labels_follow_the_marked_sum():
    raw = DATASETS["adding"](DataConfig(name="adding", length=20, num_samples=500))
    x, y = raw.splits["all"]
    assert x.shape == (500, 20, 2) and raw.layout == "sequence"
    assert torch.equal(x[:, :, 1].sum(1), torch.full((500,), 2.0))  # exactly two markers
    assert (x[:, :10, 1].sum(1) == 1).all() and (x[:, 10:, 1].sum(1) == 1).all()  # one per half
    total = (x[:, :, 0] * x[:, :, 1]).sum(1)
    assert torch.equal(y, (total > 1).long())
    assert 0.4 < y.float().mean().item() < 0.6  # balanced classes


def test_recall_class_is_the_first_symbol():
    raw = DATASETS["recall"](DataConfig(name="recall", length=15, num_samples=300, num_classes=5))
    x, y = raw.splits["all"]
    assert x.shape == (300, 15, 6)
    assert torch.equal(x[:, 0, :5].argmax(1), y) and (x[:, 0, 5] == 1).all() and (x[:, 1:, 5] == 0).all()
    assert set(y.tolist()) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("key,value", [("length", 1), ("num_samples", 3), ("points_per_class", 1)])
def test_bad_knobs_are_one_sentence(key, value):
    name = "spiral" if key == "points_per_class" else "adding"
    with pytest.raises(ConfigError, match=f"data.{key}={value} must be at least"):
        DATASETS[name](DataConfig(name=name, **{key: value}))


@pytest.mark.parametrize("name", ["spiral", "digits_rows", "adding", "recall"])
def test_configs_compose(name):
    cfg = make_config(f"data={name}")
    data = build_data(cfg.data)
    assert len(data.train) > 0 and len(data.val) > 0 and data.test is not None


@pytest.mark.slow
def test_train_one_epoch(tmp_path):
    """One `dltool train -m` over the generated data sets (one process start, four real runs)."""
    names = ["spiral", "digits_rows", "adding", "recall"]
    r = run_cli("train", "-m", f"data={','.join(names)}", "model=mlp", "trainer.epochs=1",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for i, name in enumerate(names):
        summary = json.loads((tmp_path / "sweep" / str(i) / "summary.json").read_text())
        assert "failed" not in summary, summary
        assert summary["epochs_run"] == 1 and 0.0 <= summary["test_acc"] <= 1.0
