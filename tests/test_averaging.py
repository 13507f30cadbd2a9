"""Weight averaging: trainer.ema_decay against a hand EMA of the weights after each step (batch-norm buffers
included), SWA against the mean of the epoch-end snapshots, and an exact resume with EMA on."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.metrics import accuracy_score

from dltool.train import checkpoint
from dltool.train.averaging import build_averaging
from dltool.train.callbacks import Callback
from dltool.train.loop import Setup, make_scaler, step
from dltool.train.restore import restore
from dltool.train.run import train
from tests.conftest import make_config
from tests.test_steps import Interrupt, StopAfter  # the mid-epoch interrupt the resume tests share

QUIET = ("trainer.device=cpu", "trainer.diagnostics=false", "trainer.loggers=[]", "trainer.progress=false",
         "data.subset=256")
CNN = ("model=cnn_digits", "model.dropout=0.0", *QUIET)  # two batch-norm layers: their buffers are averaged too


class Snapshots(Callback):
    """The raw weights (parameters and buffers) after every optimizer step, or at every epoch end."""

    def __init__(self, per: str = "step") -> None:
        self.per, self.taken = per, []

    def take(self, state) -> None:
        self.taken.append({k: v.detach().clone().double() for k, v in state.model.state_dict().items()})

    def on_batch_end(self, state) -> None:
        if self.per == "step":
            self.take(state)

    def on_epoch_end(self, state, logs) -> None:
        if self.per == "epoch":
            self.take(state)


def test_the_loop_step_updates_the_ema_like_a_hand_ema_batchnorm_buffers_included():
    """Fast tier: train/loop.step with a tiny Linear+BatchNorm net, 5 steps, against the formula."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    s = Setup(net, lambda out, y: out.pow(2).mean(), opt, average=build_averaging(net, opt, 0.7, None, None))
    scaler, hand = make_scaler(s), None
    for _ in range(5):
        s.loss_fn(net(torch.randn(8, 4)), None).backward()
        step(s, scaler)
        w = {k: v.detach().clone().double() for k, v in net.state_dict().items() if v.is_floating_point()}
        hand = w if hand is None else {k: 0.7 * hand[k] + 0.3 * w[k] for k in hand}
    got = s.average.module.state_dict()
    assert set(hand) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"}
    for k in hand:
        assert torch.allclose(got[k].double(), hand[k], atol=1e-7), k
    assert int(s.average.model.n_averaged) == 5


@pytest.mark.slow
def test_ema_equals_a_hand_ema_of_the_weights_after_each_step(tmp_path):
    decay, shots = 0.8, Snapshots("step")
    train(make_config(*CNN, f"trainer.ema_decay={decay}", "trainer.max_steps=6", "trainer.val_every=6",
                      "trainer.batch_size=64", "scheduler=none"), tmp_path, extra_callbacks=[shots])
    assert len(shots.taken) == 6
    hand = dict(shots.taken[0])  # torch's AveragedModel: the first update copies the weights
    for w in shots.taken[1:]:
        hand = {k: decay * hand[k] + (1 - decay) * w[k] for k in hand}
    ck = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    floats = [k for k, v in ck["model"].items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats) and any("running_var" in k for k in floats)
    for k in floats:
        assert torch.allclose(ck["model"][k].double(), hand[k], atol=1e-6), k
        assert torch.equal(ck["raw_model"][k].double(), shots.taken[-1][k]), k  # training goes on from the raw ones
    assert int(ck["average"]["n_averaged"]) == 6
    assert not torch.allclose(ck["model"][floats[0]].double(), shots.taken[-1][floats[0]])  # the EMA is not raw
    # validation and the test read the averaged weights: the run's test_acc is the EMA model's, recomputed here
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "EMA of the weights, decay 0.8" in summary["tested"]
    assert summary["test_acc"] == pytest.approx(accuracy_of(tmp_path, "best"), abs=1e-12)


def accuracy_of(run_dir, which: str) -> float:
    """Test accuracy of a checkpoint's "model" weights, counted with scikit-learn (the data rebuilt as in training)."""
    from dltool.data.build import build_data

    r = restore(str(run_dir), which)
    data = build_data(r.cfg.data, r.device)
    x = torch.cat([b for b, _ in data.test.batches(256)])
    y = torch.cat([t for _, t in data.test.batches(256)])
    with torch.no_grad():
        pred = r.model(x).argmax(1)
    return accuracy_score(y.numpy(), pred.numpy())


@pytest.mark.slow
def test_swa_is_the_mean_of_the_epoch_end_weights_and_is_what_the_run_tests(tmp_path):
    shots = Snapshots("epoch")
    summary = train(make_config(*CNN, "trainer.epochs=4", "trainer.swa_start=2", "trainer.swa_lr=0.002",
                                "trainer.patience=null"), tmp_path, extra_callbacks=[shots])
    assert summary["swa_epochs"] == [2, 4] and summary["swa_n_averaged"] == 3
    swa = checkpoint.load(tmp_path / "checkpoints" / "swa.pt")
    params = [k for k in swa["model"] if "running" not in k and "num_batches" not in k]
    for k in params:
        mean = sum(s[k] for s in shots.taken[1:]) / 3
        assert torch.allclose(swa["model"][k].double(), mean, atol=1e-6), k
    raw = checkpoint.load(tmp_path / "checkpoints" / "last.pt")["model"]
    bn = next(k for k in swa["model"] if k.endswith("running_mean"))
    assert not torch.allclose(swa["model"][bn], raw[bn])  # update_bn recomputed them for the averaged weights
    assert summary["tested"].startswith("swa.pt (mean of the weights at the end of epochs 2-4")
    assert summary["test_acc"] == pytest.approx(accuracy_of(tmp_path, "swa"), abs=1e-12)
    lrs = [row["lr"] for row in summary_history(tmp_path)]
    assert lrs[2:] == [pytest.approx(0.002)] * 2  # SWALR: swa_lr from the epoch after swa_start


def summary_history(run_dir) -> list[dict]:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["history"]


@pytest.mark.slow
@pytest.mark.parametrize("average", ["trainer.ema_decay=0.9", "trainer.swa_start=2",
                                     "augment.mixup_alpha=0.2,augment.cutmix_alpha=1.0"])
def test_resume_with_weight_averaging_or_mixing_is_bitwise(tmp_path, average):
    keys = (*CNN, *average.split(","), "trainer.epochs=3", "trainer.patience=null", "trainer.batch_size=64")
    train(make_config(*keys), tmp_path / "straight")
    with pytest.raises(Interrupt):  # 4 batches per epoch: stopped in epoch 3, last.pt holds epoch 2's end
        train(make_config(*keys), tmp_path / "resumed", extra_callbacks=[StopAfter(10)])
    train(make_config(*keys, f"resume={tmp_path / 'resumed'}"), tmp_path / "resumed")
    for name in ("last.pt", "best.pt") + (("swa.pt",) if "swa" in average else ()):
        a = checkpoint.load(tmp_path / "straight" / "checkpoints" / name)
        b = checkpoint.load(tmp_path / "resumed" / "checkpoints" / name)
        for part in ("model", "raw_model", "average"):
            assert (part in a) == (part in b)
            for k in a.get(part, {}):
                assert torch.equal(a[part][k], b[part][k]), (name, part, k)
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("straight", "resumed"))
    assert sa["test_acc"] == sb["test_acc"] and sa["test_loss"] == sb["test_loss"]
    ha, hb = (checkpoint.load(tmp_path / d / "checkpoints" / "last.pt")["history"] for d in ("straight", "resumed"))
    assert [(r["train_loss"], r["train_acc"]) for r in ha] == [(r["train_loss"], r["train_acc"]) for r in hb]
