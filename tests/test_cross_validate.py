"""K-fold cross-validation: folds partition train+val (test untouched), K runs, mean +- std, sweep objective."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from dltool.cli import main
from dltool.config.schema import DataConfig
from dltool.data.datasets.embedded import load_digits
from dltool.data.splits import make_splits
from dltool.errors import ConfigError
from tests.conftest import run_cli


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


def test_folds_partition_train_plus_val_and_leave_test_alone() -> None:
    raw = load_digits(DataConfig())
    plain = make_splits(raw, DataConfig())
    pool = rows(plain["train"][0]) | rows(plain["val"][0])
    vals = []
    for k in range(1, 6):
        s = make_splits(raw, DataConfig(folds=5, fold=k))
        assert torch.equal(s["test"][0], plain["test"][0])  # the test split never moves
        assert rows(s["train"][0]) | rows(s["val"][0]) == pool and not rows(s["train"][0]) & rows(s["val"][0])
        pool_counts = torch.bincount(torch.cat([plain["train"][1], plain["val"][1]]), minlength=10)
        assert ((torch.bincount(s["val"][1], minlength=10) - pool_counts / 5).abs() <= 1).all()  # stratified
        vals.append(rows(s["val"][0]))
    assert sum(len(v) for v in vals) == len(pool) and set().union(*vals) == pool  # every example validates once
    again = make_splits(raw, DataConfig(folds=5, fold=2))
    assert torch.equal(again["val"][1], make_splits(raw, DataConfig(folds=5, fold=2))["val"][1])  # seeded


@pytest.mark.parametrize("folds,fold,message", [
    (5, 0, "data.fold=0 must be one of 1..5"), (1, 1, "data.folds=1 must be at least 2"),
    (None, 2, "data.fold=2 needs data.folds")])
def test_bad_fold_keys_get_one_sentence(folds, fold, message) -> None:
    with pytest.raises(ConfigError, match=message):
        make_splits(load_digits(DataConfig()), DataConfig(folds=folds, fold=fold))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(list(args))
    out = capsys.readouterr()
    return int(ex.value.code or 0), out.out, out.err


@pytest.mark.slow
def test_cross_validate_end_to_end(tmp_path: Path, capsys) -> None:
    parent = tmp_path / "cv"
    code, out, err = cli(capsys, "cross-validate", "data.folds=3", "trainer.epochs=2", f"hydra.run.dir={parent}")
    assert code == 0, err
    cv = json.loads((parent / "cv.json").read_text())
    assert cv["folds"] == 3 and cv["monitor"] == "val_loss" and [r["fold"] for r in cv["per_fold"]] == [1, 2, 3]
    for r in cv["per_fold"]:
        fold_dir = parent / f"fold_{r['fold']}"
        s = json.loads((fold_dir / "summary.json").read_text())
        assert r["best_value"] == s["best_value"] and r["test_acc"] == s["test_acc"] > 0.5
        stored = yaml.safe_load((fold_dir / "config.yaml").read_text())["data"]
        assert (stored["folds"], stored["fold"]) == (3, r["fold"])
        assert (fold_dir / "checkpoints" / "best.pt").is_file()
        log = (fold_dir / "train.log").read_text()  # each fold is a run dir with its own train.log
        assert f"in {fold_dir}:" in log and f"best val_loss={s['best_value']:.4f} at epoch {s['best_epoch']}" in log
    values = [r["best_value"] for r in cv["per_fold"]]
    assert len(set(values)) == 3  # different folds, different validation sets
    assert cv["mean"] == pytest.approx(statistics.fmean(values))
    assert cv["std"] == pytest.approx(statistics.stdev(values))
    tests = [r["test_acc"] for r in cv["per_fold"]]
    assert cv["test_acc_mean"] == pytest.approx(statistics.fmean(tests))
    table = list(csv.reader(open(parent / "cv.csv")))
    assert table[0][:4] == ["fold", "best_val_loss", "best_epoch", "test_acc"] and [t[0] for t in table[1:]] == \
        ["1", "2", "3", "mean", "std"]
    summary = json.loads((parent / "summary.json").read_text())
    assert summary["best_value"] == cv["mean"] and summary["folds"] == 3
    assert "3-fold cross-validation" in out and "mean +- std" in out and f"{cv['mean']:.4f}" in out


def test_cross_validate_refuses_without_folds(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "cross-validate", "trainer.epochs=1")
    assert code == 2 and "data.folds=None: cross-validation needs data.folds=K with K >= 2" in err
    code, _, err = cli(capsys, "cross-validate", "data.folds=3", "data.fold=2")
    assert code == 2 and "data.fold=2 picks one fold" in err
    assert not (tmp_path / "outputs").exists()
    code, out, _ = cli(capsys, "cross-validate", "--help")
    assert code == 0 and "usage: dltool cross-validate" in out


@pytest.mark.slow
def test_sweep_job_objective_is_the_mean_over_folds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli("train", "-m", "optimizer.lr=1e-3,3e-3", "data.folds=2", "trainer.epochs=1",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for job in ("0", "1"):
        cv = json.loads((sweep / job / "cv.json").read_text())
        assert cv["mean"] == pytest.approx(statistics.fmean(r["best_value"] for r in cv["per_fold"]))
        assert json.loads((sweep / job / "summary.json").read_text())["best_value"] == cv["mean"]
        assert f"best val_loss={cv['mean']:.4f}" in proc.stdout
    assert (sweep / "sweep.csv").is_file()
