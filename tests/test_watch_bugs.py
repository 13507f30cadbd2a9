"""The bugs of issue 11: onecycle with accumulation, gradcheck with an activity penalty, Ctrl-C curves,
integer epoch ticks, sanity with lr=0 / NaN step / valid JSON, one lr column per parameter group,
restore_best_weights."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from dltool.commands.gradcheck import GradcheckOptions, build_for_check, check_model
from dltool.commands.sanity import Outcome, SanityOptions, diagnose, overfit, write_outputs
from dltool.plots import learning_curves
from dltool.train.callbacks import Callback
from dltool.train.loop import group_lrs
from dltool.train.losses import build_loss
from dltool.train.optim import build_optimizer
from dltool.train.run import prepare, train
from tests.conftest import make_config

MLP = ("model=mlp", "trainer.patience=null", "trainer.loggers=[csv]", "trainer.diagnostics=false")


def test_onecycle_with_accumulation_plans_optimizer_steps(tmp_path):
    cfg = make_config(*MLP, "scheduler=onecycle", "trainer.batch_size=16", "trainer.accumulate=4", "trainer.epochs=2")
    p = prepare(cfg)
    sched = p.setup.scheduler
    assert sched.total_steps == 2 * math.ceil(p.data.train.num_batches(16) / 4)
    train(cfg, tmp_path, prepared=p)
    assert sched.last_epoch == sched.total_steps  # the whole cycle ran: it annealed
    max_lr = max(sched.optimizer.param_groups[0]["max_lr"], 1e-12)
    assert p.setup.optimizer.param_groups[0]["lr"] < max_lr / 100


def test_gradcheck_passes_with_an_activity_penalty():
    cfg = make_config("model=mlp", "regularization.activity=[{layer: relu1, l1: 0.001, l2: 0.01}]")
    opts = GradcheckOptions(max_elements=8)
    model, x, y, (penalty, _) = build_for_check(cfg, opts)
    assert penalty is not None
    results = check_model(model, build_loss(cfg.loss), x, y, opts, lambda m: penalty)
    assert all(r.passed for r in results), [(r.name, r.max_rel_error) for r in results]


class Interrupt(Callback):
    def on_epoch_end(self, state, logs) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_in_the_first_epoch_still_draws_curves(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(make_config(*MLP, "trainer.epochs=5"), tmp_path, extra_callbacks=[Interrupt()])
    assert (tmp_path / "curves.png").stat().st_size > 3000


def test_short_runs_get_integer_epoch_ticks(tmp_path, monkeypatch):
    figs: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figs.append(self))
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": .5, "val_acc": .4},
               {"epoch": 2, "train_loss": float("nan"), "val_loss": float("nan"), "train_acc": .1, "val_acc": .1}]
    with pytest.raises(FileNotFoundError):  # savefig was replaced, so the rename finds no file
        learning_curves(history, tmp_path / "c.png", 1, "val_loss")
    ax = figs[0].axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [1.0, 2.0]
    assert any("non-finite at epoch 2" in t.get_text() for t in ax.get_legend().get_texts())


def test_sanity_with_zero_lr_stops_after_one_step():
    o = overfit(make_config("model=mlp", "optimizer.lr=0"), SanityOptions(max_steps=500))
    assert not o.passed and len(o.losses) == 1
    assert "optimizer.lr=0: the optimizer never changes a weight" in " ".join(o.diagnosis)


def test_sanity_reports_the_step_after_which_the_loss_was_nan(tmp_path):
    cfg = make_config()
    o = Outcome(math.log(10), 2.3, [2.3, 5.0, float("nan")], float("nan"), 0.0)
    verdict, _ = diagnose(o, cfg, SanityOptions(), ([], []), {})
    assert "reached nan after step 2" in verdict
    o.verdict = verdict
    out = write_outputs(o, cfg, SanityOptions(out_dir=str(tmp_path)))
    record = json.loads((out / "sanity.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert record["final_loss"] is None and record["losses"] == [2.3, 5.0, None]


def test_each_parameter_group_lr_is_logged():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model, make_config().optimizer, lr_mults={"0": 0.1})
    # weight_decay=0: one group per lr multiple (layer 0 at x0.1, layer 1 at x1); one column per distinct lr; `lr`
    # is optimizer.lr (1e-3), not the first group's 0.1x
    assert group_lrs(opt) == {"lr": pytest.approx(1e-3), "lr_group0": pytest.approx(1e-4)}
    assert group_lrs(build_optimizer(model, make_config().optimizer)) == {"lr": pytest.approx(1e-3)}


@pytest.mark.slow
def test_restore_best_weights_decides_which_weights_are_tested(tmp_path):
    """60 examples, no regularization: val loss is best at epoch 4, then rises; the two settings test different
    weights."""
    common = (*MLP, "data.subset=60", "scheduler=none", "trainer.epochs=8", "trainer.batch_size=10",
              "optimizer.lr=1e-2")
    a = train(make_config(*common, "trainer.restore_best_weights=true"), tmp_path / "a")
    b = train(make_config(*common, "trainer.restore_best_weights=false"), tmp_path / "b")
    assert a["best_epoch"] == b["best_epoch"] < a["epochs_run"]
    assert a["tested"].startswith("best.pt") and b["tested"].startswith("last epoch")
    rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert a["test_loss"] != b["test_loss"]
    assert float(rows[-1]["val_loss"]) != float(rows[a["best_epoch"] - 1]["val_loss"])


def test_restore_best_weights_false_tests_the_last_epoch(tmp_path):
    s = train(make_config(*MLP, "trainer.epochs=2", "trainer.restore_best_weights=false"), tmp_path)
    assert s["tested"] == "last epoch's weights (epoch 2)" and 0 < s["test_acc"] <= 1
    assert Path(tmp_path / "checkpoints" / "best.pt").exists()
