"""Figures stay legible at the extremes: log axes where values span decades, subsets announced, nothing missing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from dltool.commands.sweep_report import Job, figure, parse_spaces, report
from dltool.plots import curves_figure
from dltool.plots_signals import MAX_TILES, filter_grid, update_ratios
from dltool.train.loggers import first_layer_grid
from dltool.train.run import train
from tests.conftest import make_config


def rows(losses: list[float], steps: list[int] | None = None) -> list[dict]:
    return [{"epoch": i + 1, "train_loss": v, "val_loss": v * 1.1, "train_acc": 0.5, "val_acc": 0.5,
             **({"step": steps[i]} if steps else {})} for i, v in enumerate(losses)]


def test_one_huge_epoch_puts_the_loss_on_a_log_axis():
    fig = curves_figure(rows([2000.0, 2.0, 1.0, 0.8, 0.7]), 5, "val_loss")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and "log scale" in loss_ax.get_ylabel()
    assert acc_ax.get_yscale() == "linear"
    assert curves_figure(rows([2.3, 1.0, 0.5, 0.4]), 4, "val_loss").axes[0].get_yscale() == "linear"  # 6x: linear


def test_step_mode_curves_say_step():
    fig = curves_figure(rows([2.0, 1.0, 0.5], steps=[100, 200, 300]), 2, "val_loss", unit="step")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("step")
    assert list(ax.lines[0].get_xdata()) == [100, 200, 300]
    assert "best (val_loss) step 200" in ax.get_legend_handles_labels()[1]


def test_filter_grid_announces_a_subset():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 96, 3), torch.nn.ReLU())
    grid, name, shown = first_layer_grid(model, (1, 8, 8))
    assert shown == f"{MAX_TILES} of 96 filters shown" and name == "0.weight"
    tiles = (grid.shape[0] - 1) // 4 * ((grid.shape[1] - 1) // 4)  # 3x3 tiles + 1-pixel borders: 8 x 8
    assert tiles == MAX_TILES
    assert first_layer_grid(torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3)), (1, 8, 8))[2] == ""
    assert filter_grid(torch.zeros(96, 1, 3, 3).numpy(), (1, 8, 8)).shape == grid.shape


@pytest.mark.slow
def test_a_dead_net_still_gets_update_ratios_png_saying_why(tmp_path, caplog):
    """biases at -10: every ReLU outputs 0, every weight gradient is 0, no ratio to draw -> a figure that says so."""
    with caplog.at_level(logging.WARNING):
        train(make_config("model=mlp", "init.bias=-10", "trainer.epochs=1", "trainer.loggers=[csv]",
                          "data.subset=200"), tmp_path)
    assert (tmp_path / "update_ratios.png").stat().st_size > 3000
    assert "update_ratios.png: no weight changed in any recorded epoch" in caplog.text
    assert not update_ratios([{"kind": "weight", "name": "fc1.weight", "epoch": 1, "update_ratio": 0.0}],
                             tmp_path / "u.png") and (tmp_path / "u.png").exists()


def job(name: str, lr: float, best: float, status: str = "ok") -> Job:
    return Job(name, Path(name), {"optimizer.lr": lr}, {"best_value": best}, status, "")


def test_sweep_png_log_axis_for_a_log_search_and_pruned_trials_drawn():
    spaces = parse_spaces(["optimizer.lr=tag(log, interval(1e-5, 1e-1))"])
    jobs = [job("0", 3e-3, 0.2), job("1", 2e-4, 0.5), job("2", 5e-2, 0.9, "pruned"), job("3", 1e-5, 1.1, "pruned")]
    fig = figure(jobs, spaces, "val_loss", "sweep")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "optimizer.lr (log)"
    labels = ax.get_legend_handles_labels()[1]
    assert "pruned (2; best before stopping)" in labels
    pruned = next(c for c in ax.collections if c.get_label().startswith("pruned"))
    assert sorted(map(tuple, pruned.get_offsets().tolist())) == [(1e-5, 1.1), (5e-2, 0.9)]
    assert "2 finished, 2 pruned of 4 jobs" in fig._suptitle.get_text()


def fake(sweep: Path, name: str, values: dict, best: float) -> None:
    d = sweep / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in values.items()]))
    (d / "summary.json").write_text(json.dumps({"monitor": "val_loss", "mode": "min", "best_value": best,
                                                "stop_reason": "finished all 3 epochs", "seconds": 1.0}))


def test_edge_warning_only_at_a_grids_ends_and_never_for_choice(tmp_path):
    """grid 0,1e-4,1e-2 (linear: starts at 0): 1e-4 is an interior value, not 'the low edge'; a choice() is a set
    of options, never a range to widen."""
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "regularization.l2=0,1e-4,1e-2", "trainer.batch_size=choice(16,32,64)"]}}}))
    for i, (l2, bs, best) in enumerate([(0, 16, 0.5), (1e-4, 16, 0.2), (1e-2, 64, 0.4), (1e-4, 64, 0.3)]):
        fake(tmp_path, str(i), {"regularization.l2": l2, "trainer.batch_size": bs}, best)
    out = report(tmp_path)
    assert out["best"].values == {"regularization.l2": 1e-4, "trainer.batch_size": 16} and out["warnings"] == []
    (tmp_path / "2" / "summary.json").write_text(json.dumps({"monitor": "val_loss", "mode": "min",
                                                             "best_value": 0.1, "seconds": 1.0,
                                                             "stop_reason": "finished all 3 epochs"}))
    assert [w.split(" at the ")[1][:9] for w in report(tmp_path)["warnings"]] == ["high edge"]  # l2=1e-2: the end

