"""trainer.max_time (a clean stop at the budget, also per sweep job), trainer.save_top_k (the k best checkpoints by
the monitored metric, with both modes) and resume=latest (which run it picks, and when it refuses)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dltool.commands.rundir import latest_run
from dltool.errors import ConfigError
from dltool.train import checkpoint
from dltool.train.callbacks import FitState, Monitor, TopK
from dltool.train.steps import parse_max_time
from tests.conftest import make_config

TINY = ("model=mlp", "trainer.eval_test=false", "data.subset=300", "trainer.patience=null")


@pytest.mark.parametrize("text, seconds", [("00:02:30:00", 9000.0), ("01:00:00:01", 86401.0), ("90", 90.0),
                                           (2.5, 2.5), (None, None)])
def test_max_time_reads_days_hours_minutes_seconds_or_seconds(text, seconds):
    assert parse_max_time(text) == seconds


@pytest.mark.parametrize("bad", ["2:30", "0", "-1", "abc", "00:00:00:00", "inf"])
def test_a_bad_max_time_is_one_sentence(bad):
    with pytest.raises(ConfigError, match="trainer.max_time=.* use DD:HH:MM:SS"):
        parse_max_time(bad)


def run_top_k(tmp_path: Path, values: list[float], k: int, mode: str) -> list[str]:
    """TopK over a scripted sequence of monitored values, writing real checkpoint files."""
    folder = tmp_path / f"k{k}_{mode}"
    folder.mkdir()
    state = FitState(torch.nn.Linear(1, 1), tmp_path)
    cb = TopK(Monitor("val_loss", mode), k, folder, checkpoint.save)
    for epoch, v in enumerate(values, start=1):
        state.epoch = epoch
        state.make_checkpoint = lambda e=epoch: {"model": {}, "config": {}, "epoch": e}
        cb.on_epoch_end(state, {"epoch": epoch, "val_loss": v})
    files = sorted(p.name for p in folder.iterdir())
    for name in files:  # each file holds its own epoch's checkpoint
        assert checkpoint.load(folder / name)["epoch"] == int(name[5:8])
    return files


VALUES = [0.9, 0.5, 0.7, 0.5, float("nan"), 0.3, 0.8]


@pytest.mark.parametrize("k, mode, kept", [
    (2, "min", ["epoch002-val_loss=0.5000.pt", "epoch006-val_loss=0.3000.pt"]),  # the tie keeps the earlier epoch
    (3, "min", ["epoch002-val_loss=0.5000.pt", "epoch004-val_loss=0.5000.pt", "epoch006-val_loss=0.3000.pt"]),
    (2, "max", ["epoch001-val_loss=0.9000.pt", "epoch007-val_loss=0.8000.pt"]),
    (1, "max", ["epoch001-val_loss=0.9000.pt"]),
    (-1, "min", [f"epoch{e:03d}-val_loss={v:.4f}.pt" for e, v in enumerate(VALUES, 1) if v == v]),  # NaN never
])
def test_save_top_k_keeps_the_k_best_in_the_monitors_mode(tmp_path, k, mode, kept):
    assert run_top_k(tmp_path, VALUES, k, mode) == sorted(kept)


@pytest.mark.slow
def test_save_top_k_in_a_run_matches_the_metrics_and_survives_a_resume(tmp_path):
    from dltool.train.run import train

    train(make_config(*TINY, "trainer.epochs=3", "trainer.save_top_k=2", "trainer.monitor=val_acc",
                      "trainer.mode=max"), tmp_path)
    train(make_config(*TINY, "trainer.epochs=5", "trainer.save_top_k=2", "trainer.monitor=val_acc",
                      "trainer.mode=max", f"resume={tmp_path}"), tmp_path)
    rows = [json.loads(json.dumps(r)) for r in checkpoint.load(tmp_path / "checkpoints" / "last.pt")["history"]]
    ranked = sorted(rows, key=lambda r: (-r["val_acc"], r["epoch"]))[:2]  # independent ranking of the history
    want = sorted(f"epoch{r['epoch']:03d}-val_acc={r['val_acc']:.4f}.pt" for r in ranked)
    have = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch*.pt"))
    assert have == want
    for name in have:
        ck = checkpoint.load(tmp_path / "checkpoints" / name)
        assert ck["epoch"] == int(name[5:8])
        assert ck["history"][-1]["val_acc"] == pytest.approx(float(name.split("=")[1][:-3]), abs=5e-5)


@pytest.mark.slow
def test_max_time_stops_cleanly_with_best_and_last_and_says_why(tmp_path):
    from dltool.train.run import train

    summary = train(make_config(*TINY, "trainer.epochs=100000", "trainer.batch_size=8", "trainer.max_time=1.5"),
                    tmp_path)
    assert summary["stopped_early"] and "trainer.max_time (1.5 s) ran out" in summary["stop_reason"]
    assert 1 <= summary["epochs_run"] < 100000
    assert {"best.pt", "last.pt"} <= {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert json.loads((tmp_path / "summary.json").read_text())["stop_reason"] == summary["stop_reason"]


@pytest.mark.slow
def test_max_time_bounds_each_job_of_a_sweep(tmp_path, cli):
    ran = cli("train", "-m", *TINY, "trainer.epochs=100000", "trainer.batch_size=8", "trainer.max_time=1",
              "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for job in ("0", "1"):
        s = json.loads((tmp_path / "sweep" / job / "summary.json").read_text())
        assert "trainer.max_time (1 s) ran out" in s["stop_reason"] and s["epochs_run"] >= 1
        assert (tmp_path / "sweep" / job / "checkpoints" / "best.pt").is_file()


def fake_outputs(tmp_path: Path) -> Path:
    """One real finished run (named mlp_digits) to copy into outputs/."""
    from dltool.train.run import train

    src = tmp_path / "src"
    train(make_config(*TINY, "trainer.epochs=1"), src)
    return src


@pytest.mark.slow
def test_resume_latest_picks_the_unfinished_run_and_refuses_when_ambiguous(tmp_path, cli):
    src = fake_outputs(tmp_path)
    out = tmp_path / "outputs"
    with pytest.raises(ConfigError, match="resume=latest: no run named 'mlp_digits'"):
        latest_run("mlp_digits", out)
    for name in ("2026-01-01_10-00-00_run", "2026-01-02_10-00-00_run", "multirun/x/0"):
        shutil.copytree(src, out / name)
    (out / "2026-01-01_10-00-00_run" / "summary.json").unlink()  # unfinished
    assert latest_run("mlp_digits", out) == out / "2026-01-01_10-00-00_run"
    with pytest.raises(ConfigError, match="resume=latest: no run named 'other'"):
        latest_run("other", out)
    (out / "multirun" / "x" / "0" / "summary.json").unlink()
    with pytest.raises(ConfigError, match="2 unfinished runs are named 'mlp_digits' .* ambiguous; name one with "
                                          "resume="):
        latest_run("mlp_digits", out)
    shutil.rmtree(out / "multirun")
    (out / "2026-01-01_10-00-00_run" / "summary.json").write_text("{}")  # all finished: the newest last.pt
    newest = out / "2026-01-02_10-00-00_run"
    (newest / "checkpoints" / "last.pt").touch()
    assert latest_run("mlp_digits", out) == newest
    ran = cli("train", "model=mlp", "trainer.epochs=2", "resume=latest")  # cli's cwd is tmp_path
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert checkpoint.load(newest / "checkpoints" / "last.pt")["epoch"] == 2
    assert checkpoint.load(out / "2026-01-01_10-00-00_run" / "checkpoints" / "last.pt")["epoch"] == 1
