"""The loop end to end from Python: resume equivalence, divergence, checkpoint contents, accumulation."""

import csv

import pytest
import torch

from dltool.train import checkpoint
from dltool.train.run import train
from tests.conftest import make_config

SMALL = ("model=mlp", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.7", "trainer.patience=null",
         "model.layers.4={dropout: 0.2}")


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = make_config(*SMALL, "trainer.epochs=4")
    train(straight, tmp_path / "straight")
    first = make_config(*SMALL, "trainer.epochs=2")
    train(first, tmp_path / "resumed")
    again = make_config(*SMALL, "trainer.epochs=4", f"resume={tmp_path / 'resumed'}")
    train(again, tmp_path / "resumed")
    a = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = list(csv.DictReader(open(tmp_path / "straight" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "resumed" / "metrics.csv")))
    assert [r["val_loss"] for r in rows_a] == [r["val_loss"] for r in rows_b]


@pytest.mark.slow
def test_checkpoint_is_self_contained(tmp_path):
    summary = train(make_config("trainer.epochs=2"), tmp_path)
    ck = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "config", "norm", "class_names", "rng"} <= set(ck)
    assert ck["class_names"] == [str(i) for i in range(10)]
    assert ck["config"]["model"]["layers"] and ck["norm"]["kind"] == "standardize"
    assert ck["norm"]["mean"].shape == (1,) and ck["input_shape"] == [1, 8, 8]
    assert summary["best_epoch"] == ck["epoch"]


def test_normalization_uses_training_split_statistics_only(tmp_path):
    from dltool.data.build import build_data

    data = build_data(make_config().data)
    train_x = data.train.x
    assert train_x.mean().abs().item() < 1e-5 and abs(train_x.std().item() - 1) < 1e-3
    assert data.test.x.mean().abs().item() > 1e-4  # test stats differ: they were not used


# the lr grows tenfold each epoch (0.5, 5, 50, ...): finite epochs first, then a NaN loss at epoch 4
# the output layer at full kaiming scale (its own init: not the small default, dltool.models.init.OUTPUT_GAIN), so
# the scores blow up to inf/NaN as the lr grows instead of the ReLUs dying quietly first
GROWING_LR = ("model=mlp", "optimizer=sgd", "optimizer.lr=0.5", "scheduler=step", "scheduler.step_size=1",
              "scheduler.gamma=10", "trainer.epochs=10",
              "model.layers=[flatten,{fc: 128},relu,{fc: 64},relu,"
              "{fc: {units: num_classes, init: {scheme: kaiming_normal}}}]")


def test_divergence_stops_and_keeps_best_checkpoint(tmp_path):
    summary = train(make_config(*GROWING_LR), tmp_path)
    assert summary["diverged"] and summary["epochs_run"] == 4 and 1 <= summary["best_epoch"] <= 3
    assert summary["stop_reason"].startswith("train_loss became nan at epoch 4")
    assert "learning rate is too high" in summary["stop_reason"]
    ck = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert ck["epoch"] == summary["best_epoch"]  # a finite epoch's weights, not the diverged ones
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    """Two batches of 32 accumulated == one batch of 64 (no dropout/BN, plain SGD, one epoch, ordered)."""
    common = ("model=mlp", "optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=false",
              "scheduler=none", "trainer.epochs=1", "data.subset=64")
    a = make_config(*common, "trainer.batch_size=64")
    b = make_config(*common, "trainer.batch_size=32", "trainer.accumulate=2")
    train(a, tmp_path / "a")
    train(b, tmp_path / "b")
    wa = checkpoint.load(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    wb = checkpoint.load(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


@pytest.mark.slow
def test_bf16_precision_runs_on_cpu(tmp_path):
    summary = train(make_config("model=mlp", "trainer.epochs=3", "trainer.precision=bf16"), tmp_path)
    assert summary["test_acc"] > 0.8
