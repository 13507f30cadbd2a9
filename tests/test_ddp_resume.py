"""Kill -9 + resume under DDP (2 gloo ranks on CPU) is bitwise: each rank's own generators (dropout) are saved
and restored, and a run killed after its last step but before its final test is finished by resume.
Spawning ranks takes seconds: the slow tier."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dltool.cli import main

# dropout makes every step draw from each rank's own generator: rank 1 restored with rank 0's stream differs
DROPOUT = ["model=mlp", "model.layers=[flatten, {fc: {units: 64}}, relu, {dropout: {p: 0.5}}, {fc: {units: 10}}]",
           "scheduler=none", "trainer.eval_test=false", "trainer.devices=2", "trainer.device=cpu",
           "trainer.batch_size=16", "trainer.patience=null", "trainer.diagnostics=false", "trainer.loggers=[csv]"]
EPOCHS = 4


def train(run_dir: Path, *overrides: str) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", *overrides, f"hydra.run.dir={run_dir}"])
    assert done.value.code in (0, None)


def resume(run_dir: Path) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", f"resume={run_dir}"])
    assert done.value.code in (0, None)


def last_epoch(run: Path) -> int:
    try:
        return int(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def kill_during(run: Path, after_epoch: int, delay: float, cwd: Path) -> int:
    """Start the run in its own session, SIGKILL the whole session (parent and ranks) `delay` s after last.pt
    holds `after_epoch`; -> the epoch last.pt holds afterwards."""
    env = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dltool", "train", *DROPOUT, f"trainer.epochs={EPOCHS}",
                             f"hydra.run.dir={run}"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while last_epoch(run) < after_epoch:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return last_epoch(run)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp_whole")
    train(root / "whole", *DROPOUT, f"trainer.epochs={EPOCHS}")
    return root / "whole"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("after_epoch,delay", [(1, 0.0), (2, 0.05)])
def test_kill_9_and_resume_under_two_ranks_is_bitwise(whole, tmp_path, after_epoch, delay):
    run = tmp_path / "cut"
    at = kill_during(run, after_epoch, delay, tmp_path)
    assert 1 <= at < EPOCHS and not (run / "summary.json").exists()
    resume(run)
    a, b = weights(whole), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), {k: (a[k] - b[k]).abs().max().item() for k in a}
    rows = lambda r: (r / "metrics.csv").read_text().splitlines()  # noqa: E731
    assert [ln.split(",")[:5] for ln in rows(run)] == [ln.split(",")[:5] for ln in rows(whole)]  # epoch..val_acc


@pytest.mark.slow
def test_each_ranks_generators_are_in_the_checkpoint(whole):
    ck = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    ranks = ck["rank_rng"]
    assert len(ranks) == 2 and set(ranks[0]) >= {"torch", "numpy", "python"}
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # seeded seed + rank: two dropout streams


@pytest.mark.slow
def test_a_run_killed_after_its_last_epoch_is_finished_by_resume(tmp_path, monkeypatch):
    """One process: summary.json (the final test) missing, as after a kill between the last step and the test."""
    monkeypatch.chdir(tmp_path)
    train(tmp_path / "run", "model=mlp", "data.subset=200", "trainer.epochs=2", "trainer.diagnostics=false")
    summary = (tmp_path / "run" / "summary.json").read_text()
    (tmp_path / "run" / "summary.json").unlink()
    resume(tmp_path / "run")
    before, after = json.loads(summary), json.loads((tmp_path / "run" / "summary.json").read_text())
    assert after["test_acc"] == before["test_acc"] and after["best_epoch"] == before["best_epoch"]
    assert after["epochs_run"] == 2
    with pytest.raises(SystemExit) as again:  # now finished: a resume without more epochs is refused
        main(["train", f"resume={tmp_path / 'run'}"])
    assert again.value.code == 2


@pytest.mark.slow
@pytest.mark.usefixtures("console_ranks")
def test_two_ranks_without_validation_and_with_memory_mapped_arrays_equal_one_process(tmp_path, monkeypatch):
    """Valid input that used to fail under DDP: val_fraction=0 with a train monitor (KeyError) and arrays larger
    than data.memory_cap_mb (AttributeError). Each now equals one process on the global batch; no torchelastic_*
    folder is left in the temp directory."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "arr").mkdir()
    np.save(tmp_path / "arr" / "x.npy", rng.normal(size=(300, 6)).astype(np.float32))
    np.save(tmp_path / "arr" / "y.npy", rng.integers(0, 3, 300))
    common = ["model=mlp", "scheduler=none", "trainer.eval_test=false", "trainer.epochs=2", "trainer.diagnostics=false",
              "trainer.loggers=[csv]", "data=arrays", f"data.path={tmp_path / 'arr'}", "data.memory_cap_mb=0",
              "data.val_fraction=0", "trainer.monitor=train_loss"]
    private = tmp_path / "tmp"  # this test's own temp directory: other processes' folders do not count
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    train(tmp_path / "one", *common, "trainer.batch_size=64")
    train(tmp_path / "two", *common, "trainer.batch_size=32", "trainer.devices=2", "trainer.device=cpu")
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    m1, m2 = [(tmp_path / r / "metrics.csv").read_text().splitlines() for r in ("one", "two")]
    assert m1[0] == m2[0] and "val_loss" not in m1[0]
    assert "data=arrays: x is larger than data.memory_cap_mb" in (tmp_path / "two" / "train.log").read_text()
    assert [p.name for p in private.iterdir() if p.name.startswith(("torchelastic_", "dltool_ranks_"))] == []
