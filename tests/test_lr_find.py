"""`dltool lr-find`: exponential lr range, the 4x-minimum stop, the suggestion, its files; nothing else written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dltool.cli import main
from dltool.commands.lr_find import LrFindOptions, suggest
from dltool.train.run import train
from tests.conftest import make_config


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(list(args))
    out = capsys.readouterr()
    return int(ex.value.code or 0), out.out, out.err


def test_lr_find_writes_curve_and_suggestion_only(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "lr-find", "lr_find.steps=30", "lr_find.end=1", "model=mlp")
    assert code == 0, err
    (folder,) = (tmp_path / "outputs" / "lr_find").iterdir()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["lr_find.json", "lr_find.png"]
    assert (folder / "lr_find.png").stat().st_size > 10_000
    rec = json.loads((folder / "lr_find.json").read_text())
    lrs = rec["lrs"]
    assert lrs[0] == pytest.approx(1e-7) and rec["steps_run"] == len(lrs) <= 30
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([(1 / 1e-7) ** (1 / 29)] * len(ratios))  # exponential: a constant ratio
    assert rec["suggested_lr"] == pytest.approx(rec["min_loss_lr"] / 10)
    assert rec["min_loss"] == min(rec["smoothed_losses"])
    assert rec["override"] == f"optimizer.lr={rec['suggested_lr']:.3g}"
    assert f"train with: dltool train model=mlp {rec['override']}" in out


@pytest.mark.slow
def test_stops_when_smoothed_loss_exceeds_four_times_its_minimum(tmp_path: Path, capsys) -> None:
    code, out, err = cli(capsys, "lr-find", "lr_find.end=1e4", "lr_find.steps=60", "optimizer.name=sgd",
                         "model=mlp", f"lr_find.out_dir={tmp_path}")
    assert code == 0, err
    rec = json.loads((tmp_path / "lr_find.json").read_text())
    sm = rec["smoothed_losses"]
    assert rec["steps_run"] < 60 and "exceeded 4x its minimum" in rec["stop_reason"]
    assert not math.isfinite(sm[-1]) or sm[-1] > 4 * min(sm[:-1])
    assert all(v <= 4 * min(sm[:i + 1]) for i, v in enumerate(sm[:-1]))  # it did not run past the rule


def test_suggestion_on_a_scripted_curve() -> None:
    lrs = [10 ** (-7 + i * 0.1) for i in range(80)]
    smoothed = [2.3 - 2 * math.exp(-((i - 60) / 12) ** 2) if i <= 60 else 0.3 + 0.2 * (i - 60) for i in range(80)]
    best = suggest({"lrs": lrs, "smoothed": smoothed}, LrFindOptions())
    assert best["min_loss_lr"] == pytest.approx(lrs[60]) and best["suggested_lr"] == pytest.approx(lrs[60] / 10)
    assert lrs[40] < best["steepest_lr"] < lrs[60]


def test_bad_option_gets_one_sentence(capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "lr-find", "lr_find.start=1", "lr_find.end=0.1", f"lr_find.out_dir={tmp_path / 'x'}")
    assert code == 2 and "lr_find.start=1 and lr_find.end=0.1: need 0 < start < end" in err
    code, _, err = cli(capsys, "lr-find", "lr_find.stpes=10")
    assert code == 2 and "stpes" in err and "steps" in err
    assert not (tmp_path / "x").exists()
    code, out, _ = cli(capsys, "lr-find", "--help")
    assert code == 0 and "usage: dltool lr-find" in out


@pytest.mark.slow
def test_suggested_lr_trains_the_default_config_at_least_as_well(tmp_path: Path, capsys) -> None:
    code, out, err = cli(capsys, "lr-find", f"lr_find.out_dir={tmp_path / 'lr'}")
    assert code == 0, err
    lr = json.loads((tmp_path / "lr" / "lr_find.json").read_text())["suggested_lr"]
    default = train(make_config(), tmp_path / "default")
    tuned = train(make_config(f"optimizer.lr={lr:.3g}"), tmp_path / "tuned")
    # at least as well, up to one test example of 360 (the default init's small output layer moved both runs by one)
    assert tuned["test_acc"] >= default["test_acc"] - 1 / 360 and default["test_acc"] > 0.95
