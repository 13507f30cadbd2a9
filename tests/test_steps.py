"""Step-based training: trainer.max_steps, val_every, checkpoint_every, and bitwise resume between validations."""

import csv

import pytest
import torch

from dltool.errors import ConfigError
from dltool.train import checkpoint
from dltool.train.callbacks import Callback
from dltool.train.run import prepare, train
from dltool.train.steps import Plan
from tests.conftest import make_config

SMALL = ("model=mlp", "scheduler=cosine", "trainer.patience=null", "model.layers.4={dropout: 0.2}",
         "trainer.batch_size=64", "trainer.device=cpu")


class Interrupt(Exception):
    pass


class StopAfter(Callback):
    """Raises after n batches, like a Ctrl-C in the middle of an interval."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_batch_end(self, state) -> None:
        self.n -= 1
        if self.n == 0:
            raise Interrupt


def test_plan_pauses_at_validation_checkpoint_and_end():
    plan = Plan("step", 24, 10, 4, 1)
    stops, done = [], 0
    while done < plan.total:
        done = plan.next_stop(done)
        stops.append((done, plan.is_validation(done), plan.is_checkpoint(done)))
    assert stops == [(4, False, True), (8, False, True), (10, True, False), (12, False, True), (16, False, True),
                     (20, True, True), (24, True, True)]
    assert plan.points == 3


@pytest.mark.slow
def test_max_steps_validates_every_val_every_steps(tmp_path):
    summary = train(make_config(*SMALL, "trainer.max_steps=50", "trainer.val_every=20"), tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [20, 40, 50]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # validation points
    assert summary["steps_run"] == 50 and summary["stop_reason"] == "finished all 50 steps"
    ck = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert ck["progress"]["step"] == 50 and ck["progress"]["done"] == 50


@pytest.mark.slow
def test_val_every_epochs_keeps_one_row_per_validation(tmp_path):
    train(make_config(*SMALL, "trainer.epochs=5", "trainer.val_every=2"), tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [2, 4, 5]


@pytest.mark.slow
def test_resume_between_validation_points_is_bitwise_exact(tmp_path):
    keys = (*SMALL, "trainer.max_steps=24", "trainer.val_every=10", "trainer.checkpoint_every=4")
    train(make_config(*keys), tmp_path / "straight")
    with pytest.raises(Interrupt):  # 14 batches: last.pt holds step 12, mid-interval and mid-epoch
        train(make_config(*keys), tmp_path / "resumed", extra_callbacks=[StopAfter(14)])
    ck = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert ck["progress"]["step"] == 12 and ck["progress"]["interval"]["chunks"] == 1
    train(make_config(*keys, f"resume={tmp_path / 'resumed'}"), tmp_path / "resumed")
    a = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = list(csv.DictReader(open(tmp_path / "straight" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "resumed" / "metrics.csv")))
    assert [(r["train_loss"], r["val_loss"]) for r in rows_a] == [(r["train_loss"], r["val_loss"]) for r in rows_b]
    assert len(rows_a) == 3


def test_bad_interval_is_one_sentence():
    with pytest.raises(ConfigError, match="trainer.val_every=0 must be at least 1"):
        prepare(make_config(*SMALL, "trainer.max_steps=10", "trainer.val_every=0"))
