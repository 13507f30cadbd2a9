"""`dltool recipe`: the search ranges, the first failing stage with its key, a stopped recipe continued with
resume=, the first stages for the other tasks, and the whole recipe on digits end to end (each stage's output
present and equal to what the stage's own command gives)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.datasets import make_multilabel_classification

from dltool.commands.recipe import (
    RecipeOptions,
    Stage,
    coarse_space,
    fine_space,
    stage_init_loss,
    stage_lr_find,
    stage_overfit,
    sweep_args,
)
from tests.conftest import make_config, run_cli

TINY = ("model=mlp", "trainer.device=cpu", "recipe.coarse_trials=2", "recipe.coarse_epochs=1",
        "recipe.fine_trials=2", "recipe.fine_epochs=2", "recipe.final_epochs=3", "recipe.fine_keep=2")


def test_fine_ranges_span_the_best_coarse_trials_twice_beyond_on_log_scales():
    coarse = {"optimizer.lr": [1e-4, 1e-1, True], "model.dropout": [0.0, 0.6, False]}
    best = [{"optimizer.lr": 0.004, "model.dropout": 0.05}, {"optimizer.lr": 0.01, "model.dropout": 0.3}]
    assert fine_space(best, coarse) == {"optimizer.lr": [0.002, 0.02, True],
                                        "model.dropout": [0.0, pytest.approx(0.4), False]}
    args = sweep_args(fine_space(best, coarse), 4, 6, Path("/x/5_fine"))
    assert "optimizer.lr=tag(log, interval(0.002, 0.02))" in args and "hydra.sweeper.n_trials=4" in args
    assert "hydra.sweeper.pruner.n_warmup_steps=3" in args and "hydra.sweeper.pruner.n_startup_trials=2" in args
    assert "model.dropout=interval(0, 0.4)" in args and "trainer.epochs=6" in args
    assert "hydra/sweeper/pruner=median" in args and args[0] == "-m"


def test_the_coarse_space_centres_the_lr_on_the_suggestion_and_reads_dropout_only_where_the_model_does():
    opts = RecipeOptions()
    assert coarse_space(make_config("model=mlp"), 0.01, opts) == {
        "optimizer.lr": [pytest.approx(0.001), pytest.approx(0.1), True], "regularization.l2": [1e-6, 1e-2, True]}
    cnn = coarse_space(make_config("model=cnn_digits", "scheduler=onecycle"), 0.01, opts)
    assert list(cnn) == ["scheduler.max_lr", "regularization.l2", "model.dropout"]  # onecycle's peak, like lr-find


def test_a_failed_stage_names_the_key_found_in_its_diagnosis():
    st = Stage("2_overfit").failed(["the loss is stuck", "optimizer.lr=0: the optimizer never changes a weight"])
    assert not st.passed and st.key == "optimizer.lr"


@pytest.mark.slow
def test_the_recipe_stops_at_the_first_failing_stage_with_its_diagnosis_and_key(cli, tmp_path):
    ran = cli("recipe", *TINY, "optimizer.lr=0", "recipe.out_dir=r")
    assert ran.returncode == 1
    state = json.loads((tmp_path / "r" / "recipe_state.json").read_text())
    assert [(s["name"], s["passed"]) for s in state["stages"]] == [("1_init_loss", True), ("2_overfit", False)]
    assert state["stages"][1]["key"] == "optimizer.lr"
    md = (tmp_path / "r" / "recipe.md").read_text()
    assert "## Stopped at 2_overfit" in md and "the config key to change: `optimizer.lr`" in md
    assert not (tmp_path / "r" / "3_lr_find").exists() and (tmp_path / "r" / "recipe.png").is_file()


def multilabel_args(folder: Path) -> tuple[str, ...]:
    x, y = make_multilabel_classification(n_samples=400, n_features=20, n_classes=5, n_labels=2, random_state=0)
    np.savez(folder / "ml.npz", x=x.astype(np.float32), y=y.astype(np.float32))
    return ("data=arrays", f"data.path={folder / 'ml.npz'}", "data.task=multilabel", "loss=bce", "model=mlp")


@pytest.mark.slow
@pytest.mark.parametrize("task,expected", [
    ("regression", 1.0),  # standardized targets, outputs ~ 0: mse 1
    ("binary", float(np.log(2))),  # one sigmoid: ln 2
    ("multilabel", float(np.log(2))),  # one sigmoid per label: ln 2 each (mean over labels)
])
def test_the_first_stages_work_for_regression_binary_and_multilabel(task, expected, tmp_path):
    args = {"regression": ("data=diabetes", "loss=mse", "model=mlp"),
            "binary": ("data=breast_cancer", "loss=bce", "model=mlp")}.get(task) or multilabel_args(tmp_path)
    cfg = make_config(*args, "trainer.device=cpu")
    first = stage_init_loss(cfg, tmp_path / "1")
    assert first.passed and first.passes_on["expected"] == pytest.approx(expected)
    record = json.loads((tmp_path / "1" / "sanity.json").read_text())
    assert record["init_loss"] == pytest.approx(first.passes_on["init_loss"])
    assert abs(first.passes_on["init_loss"] - expected) / expected < 0.5
    assert stage_overfit(cfg, tmp_path / "2").passed
    lr = stage_lr_find(cfg, tmp_path / "3")
    saved = json.loads((tmp_path / "3" / "lr_find.json").read_text())
    assert lr.passed and lr.passes_on["suggested_lr"] == saved["suggested_lr"] == saved["min_loss_lr"] / 10


def fingerprint(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_recipe_stopped_by_its_budget_continues_with_resume_and_skips_finished_stages(cli, tmp_path):
    ran = cli("recipe", *TINY, "recipe.out_dir=r", "recipe.time_budget=0.01")  # stage 1 runs, then it is spent
    assert ran.returncode == 1
    r = tmp_path / "r"
    state = json.loads((r / "recipe_state.json").read_text())
    assert [(s["name"], s["passed"]) for s in state["stages"]] == [("1_init_loss", True), ("2_overfit", False)]
    assert state["stages"][1]["key"] == "recipe.time_budget"
    before = fingerprint(r / "1_init_loss")
    (r / "2_overfit").mkdir()  # as a killed attempt leaves it
    (r / "2_overfit" / "partial.txt").write_text("x")
    ran = cli("recipe", "resume=r", "recipe.time_budget=3600")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    state = json.loads((r / "recipe_state.json").read_text())
    assert [s["name"] for s in state["stages"]] == ["1_init_loss", "2_overfit", "3_lr_find", "4_coarse", "5_fine",
                                                    "6_final", "7_evaluate"]
    assert all(s["passed"] for s in state["stages"])
    assert fingerprint(r / "1_init_loss") == before  # skipped, not run again
    assert (r / "2_overfit.incomplete" / "partial.txt").read_text() == "x"  # kept aside, the stage ran afresh
    assert state["args"] == ["model=mlp", "trainer.device=cpu"]


@pytest.mark.slow
def test_the_digits_recipe_end_to_end_agrees_with_each_command_run_on_its_own(cli, tmp_path):
    assert cli("recipe", *TINY, "recipe.out_dir=r").returncode == 0
    r = tmp_path / "r"
    state = {s["name"]: s for s in json.loads((r / "recipe_state.json").read_text())["stages"]}
    assert list(state) == ["1_init_loss", "2_overfit", "3_lr_find", "4_coarse", "5_fine", "6_final", "7_evaluate"]
    # stages 2 and 3 give what the commands give on their own
    assert cli("overfit-sanity-check", "model=mlp", "trainer.device=cpu", "sanity.out_dir=alone_s").returncode == 0
    alone = json.loads((tmp_path / "alone_s" / "sanity.json").read_text())
    assert alone["losses"] == json.loads((r / "2_overfit" / "sanity.json").read_text())["losses"]
    assert cli("lr-find", "model=mlp", "trainer.device=cpu", "lr_find.out_dir=alone_l").returncode == 0
    alone = json.loads((tmp_path / "alone_l" / "lr_find.json").read_text())
    suggested = json.loads((r / "3_lr_find" / "lr_find.json").read_text())["suggested_lr"]
    assert alone["suggested_lr"] == suggested == state["3_lr_find"]["passes_on"]["suggested_lr"]
    # the coarse search drew its lrs around the suggestion (/10 .. x10); sweep-report reads its dir
    lrs = [float(row["optimizer.lr"]) for row in csv.DictReader(open(r / "4_coarse" / "sweep.csv"))]
    assert len(lrs) == 2 and all(suggested / 10 <= lr <= suggested * 10 for lr in lrs)
    assert cli("sweep-report", str(r / "5_fine")).returncode == 0
    # the final run trains the fine search's winner and its test accuracy is what evaluate measures
    best = state["5_fine"]["passes_on"]["best"]
    final_cfg = yaml.safe_load((r / "6_final" / "config.yaml").read_text())
    assert final_cfg["optimizer"]["lr"] == pytest.approx(float(best["optimizer.lr"]))
    assert final_cfg["trainer"]["epochs"] == 3
    summary = json.loads((r / "6_final" / "summary.json").read_text())
    evaluated = json.loads((r / "6_final" / "eval.json").read_text())
    assert summary["test_acc"] == pytest.approx(evaluated["acc"], abs=1e-12)
    assert state["7_evaluate"]["passes_on"]["test_acc"] == pytest.approx(evaluated["acc"])
    md = (r / "recipe.md").read_text()
    assert f"test_acc: **{summary['test_acc']:.4f}**" in md and f"suggested lr **{suggested:.3g}**" in md
    assert torch.load(r / "6_final" / "checkpoints" / "best.pt", weights_only=True)["epoch"] >= 1


@pytest.mark.slow
def test_the_default_digits_recipe_passes_every_stage_within_its_budget(cli, tmp_path):
    """The recipe as a user starts it, default budgets (minutes on 2 CPU cores; README "The recipe" has the times)."""
    assert cli("recipe", "recipe.out_dir=r").returncode == 0
    stages = json.loads((tmp_path / "r" / "recipe_state.json").read_text())["stages"]
    assert len(stages) == 7 and all(s["passed"] for s in stages)
    assert sum(s["seconds"] for s in stages) < 1800  # recipe.time_budget's default
    summary = json.loads((tmp_path / "r" / "6_final" / "summary.json").read_text())
    assert summary["test_acc"] > 0.95


@pytest.mark.slow
def test_a_recipe_killed_in_its_final_training_resumes_that_run_and_skips_the_rest(tmp_path, cli):
    """The real console command, killed with SIGKILL once the final run wrote last.pt, then `resume=` (in-process)."""
    args = [a for a in TINY if not a.startswith("recipe.final_epochs")] + ["recipe.final_epochs=60",
                                                                           "trainer.patience=null", "recipe.out_dir=r"]
    env = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dltool", "recipe", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "r" / "6_final" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file() and not (tmp_path / "r" / "6_final" / "summary.json").exists()
    before = fingerprint(tmp_path / "r" / "4_coarse")
    done = cli("recipe", "resume=r")
    assert done.returncode == 0, done.stdout + done.stderr
    state = json.loads((tmp_path / "r" / "recipe_state.json").read_text())
    assert len(state["stages"]) == 7 and all(s["passed"] for s in state["stages"])
    assert fingerprint(tmp_path / "r" / "4_coarse") == before  # finished stages were not run again
    assert not (tmp_path / "r" / "6_final.incomplete").exists()  # the final run itself was continued
    assert "resumed from" in (tmp_path / "r" / "6_final" / "train.log").read_text()
    assert json.loads((tmp_path / "r" / "6_final" / "summary.json").read_text())["epochs_run"] == 60


@pytest.mark.slow
@pytest.mark.usefixtures("console_ranks")
def test_the_recipe_runs_its_searches_and_final_training_on_two_ddp_ranks(cli, tmp_path):
    """trainer.devices=2 (2 gloo CPU ranks): stages 4-6 train data-parallel, each rank half of every epoch's
    20 batches (10 optimizer steps per epoch); stages 1-3 run in this process as the commands do on their own."""
    assert cli("recipe", *TINY, "trainer.devices=2", "recipe.out_dir=r").returncode == 0
    r = tmp_path / "r"
    assert all(s["passed"] for s in json.loads((r / "recipe_state.json").read_text())["stages"])
    assert json.loads((r / "6_final" / "summary.json").read_text())["steps_run"] == 3 * 10
    assert json.loads((r / "4_coarse" / "0" / "summary.json").read_text())["steps_run"] == 10


@pytest.mark.slow
def test_the_recipe_searches_through_the_submitit_launcher(tmp_path):
    """`hydra/launcher=submitit_local` (submitit's LocalExecutor: the submitit_slurm launcher's code path without
    a cluster) runs the search stages' trials as submitit jobs; the recipe reads their run dirs as it does the
    basic launcher's and finishes every stage."""
    done = run_cli("recipe", *TINY, "recipe.out_dir=r", "hydra/launcher=submitit_local", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    r = tmp_path / "r"
    state = json.loads((r / "recipe_state.json").read_text())
    assert len(state["stages"]) == 7 and all(s["passed"] for s in state["stages"])
    for stage in ("4_coarse", "5_fine"):
        assert (r / stage / ".submitit").is_dir()  # the trials ran as submitit jobs
        hydra = yaml.safe_load((r / stage / "0" / ".hydra" / "hydra.yaml").read_text())
        assert hydra["hydra"]["runtime"]["choices"]["hydra/launcher"] == "submitit_local"
        assert all((r / stage / job / "summary.json").is_file() for job in ("0", "1"))
    assert json.loads((r / "6_final" / "summary.json").read_text())["epochs_run"] == 3
