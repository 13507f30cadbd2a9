"""The named experiments train to the figures README.md reports (shortened schedules, same models), and the
ones whose data cannot be downloaded here run one epoch on tiny files in the data sets' real formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dltool.train.loop import evaluate
from dltool.train.run import prepare, train
from tests.conftest import make_config, run_cli
from tests.fakedata import write_cifar10, write_mnist


def fit(tmp_path: Path, *overrides: str) -> tuple[dict, float]:
    """Train in-process; return summary.json and the best checkpoint's accuracy on the training split."""
    cfg = make_config(*overrides, "trainer.progress=false")
    p = prepare(cfg)
    summary = train(cfg, tmp_path, prepared=p)
    train_acc = evaluate(p.setup.model, p.setup.loss_fn, p.data.train, 256, p.device)["acc"]
    return summary, train_acc


@pytest.mark.slow
def test_spiral_mlp_fits_what_linear_classifiers_cannot(tmp_path: Path) -> None:
    short = ("trainer.epochs=60", "optimizer.lr=0.02")  # the README figures use the full 100 epochs at 0.01
    _, mlp = fit(tmp_path / "mlp", "experiment=spiral_mlp", *short)
    _, softmax = fit(tmp_path / "softmax", "experiment=spiral_linear", *short)
    _, svm = fit(tmp_path / "svm", "experiment=spiral_linear_svm", *short)
    assert mlp >= 0.95
    assert softmax <= 0.65 and svm <= 0.65  # straight boundaries: about half the points


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_lstm", "digits_wavenet"])
def test_row_sequence_digits_reach_90_percent(tmp_path: Path, name: str) -> None:
    summary, _ = fit(tmp_path, f"experiment={name}", "trainer.epochs=12")
    assert summary["test_acc"] >= 0.90


@pytest.mark.slow
@pytest.mark.parametrize("name,shape", [("lenet_mnist", [1, 28, 28]), ("vgg_cifar10", [3, 32, 32]),
                                        ("resnet_cifar10", [3, 32, 32]), ("inception_cifar10", [3, 32, 32])])
def test_vision_experiments_run_on_real_format_files(tmp_path: Path, name: str, shape: list[int]) -> None:
    (write_mnist if "mnist" in name else write_cifar10)(tmp_path / "data")
    cfg = make_config(f"experiment={name}", f"data.root={tmp_path / 'data'}", "data.download=false",
                      "trainer.epochs=1", "trainer.batch_size=32", "trainer.progress=false")
    assert cfg.name == name
    summary = train(cfg, tmp_path / "run")
    assert summary["epochs_run"] == 1 and 0.0 <= summary["test_acc"] <= 1.0
    ck = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert ck["params"] == summary["params"] > 0
    from dltool.train import checkpoint as ckpt_io

    assert ckpt_io.load(tmp_path / "run" / "checkpoints" / "best.pt")["input_shape"] == shape


@pytest.mark.slow
def test_spiral_linear_svm_from_the_command_line(tmp_path: Path) -> None:
    res = run_cli("train", "experiment=spiral_linear_svm", "trainer.epochs=2", "hydra.run.dir=svm", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    saved = (tmp_path / "svm" / "config.yaml").read_text()
    assert "name: spiral_linear_svm" in saved and "name: hinge" in saved and "name: linear_svm" in saved
