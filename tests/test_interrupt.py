"""Ctrl-C (issue 22): the console script exits at once with last.pt safe; the figures of the epochs run are drawn by a
child process forked as it exits (dltool/train/deferred.py); Python callers still get them before the exception."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dltool.train import checkpoint, deferred
from dltool.train.callbacks import Callback
from dltool.train.run import train
from tests.conftest import make_config

FIGURES = ("curves.png", "update_ratios.png", "histograms.png", "filters.png")


class InterruptAt(Callback):
    """Ctrl-C at the end of epoch n (KeyboardInterrupt where Python's SIGINT handler would raise it)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, state, logs) -> None:
        if state.epoch == self.n:
            raise KeyboardInterrupt


@pytest.fixture
def detached():
    deferred.detach_at_exit(True)
    yield
    deferred.detach_at_exit(False)
    deferred._after_exit.clear()  # noqa: SLF001 - nothing queued leaks into the next test


def test_without_detaching_the_work_runs_at_once(tmp_path):
    deferred.detach_at_exit(False)
    deferred.after_exit(lambda: (tmp_path / "now").write_text("1"))
    assert (tmp_path / "now").read_text() == "1" and deferred.run_detached() is None


def test_detached_work_runs_in_a_child_in_order_after_run_detached(tmp_path, detached):
    out = tmp_path / "order"
    for k in range(3):
        deferred.after_exit(lambda k=k: out.open("a").write(f"{k} {os.getpid()}\n"))
    deferred.after_exit(lambda: 1 / 0)  # a failing job does not stop the child from exiting 0
    assert not out.exists()  # queued, not run
    pid = deferred.run_detached()
    assert pid is not None and pid != os.getpid()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lines = out.read_text().split()
    assert lines == ["0", str(pid), "1", str(pid), "2", str(pid)]  # in order, by the child, not by this process
    assert deferred.run_detached() is None  # the queue was handed over once


@pytest.mark.slow
def test_ctrl_c_exits_with_last_pt_safe_and_the_figures_follow(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dltool", "train", "trainer.epochs=300", f"hydra.run.dir={run}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)  # the pipes close when dltool exits: the child holds none of them
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"error: interrupted (Ctrl-C); the checkpoints of finished epochs are in "
                                        f"{run / 'checkpoints'}; continue with: dltool train resume={run}"]
    ck = torch.load(last, weights_only=True)
    epochs = ck["epoch"]
    assert epochs >= 1 and len(ck["history"]) == epochs
    deadline = time.monotonic() + 120
    while not all((run / f).exists() for f in FIGURES) and time.monotonic() < deadline:
        time.sleep(0.1)
    for f in FIGURES:  # complete PNGs (written atomically)
        with Image.open(run / f) as img:
            img.load()
            assert img.size[0] > 300, f
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    ea = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    while time.monotonic() < deadline:  # the curves image: the last event file, written by the child
        ea.Reload()
        if "curves" in ea.Tags()["images"]:
            break
        time.sleep(0.1)
    # the epochs run: those in last.pt, or one more when Ctrl-C came after its validation, before its last.pt
    (shown,) = [e.step for e in ea.Images("curves")]
    assert shown in (epochs, epochs + 1)
    assert [e.step for e in ea.Images("filters/conv1.weight")] == [shown]
    assert [e.step for e in ea.Scalars("val_loss")] in (list(range(1, shown + 1)), list(range(1, shown)))


@pytest.mark.slow
def test_in_process_the_figures_are_drawn_before_the_exception(tmp_path):
    """A Python caller (no console script) gets every figure before KeyboardInterrupt reaches it."""
    with pytest.raises(KeyboardInterrupt):
        train(make_config("model=mlp", "trainer.epochs=5", "trainer.loggers=[csv]"), tmp_path,
              extra_callbacks=[InterruptAt(2)])
    for f in FIGURES:
        assert (tmp_path / f).stat().st_size > 3000, f


def test_ctrl_c_during_a_checkpoint_write_takes_effect_once_the_file_is_written(tmp_path, monkeypatch):
    """SIGINT delivered inside torch.save: the checkpoint is completed and renamed into place, then KeyboardInterrupt
    (it used to surface as torch's RuntimeError 'unexpected pos' with a traceback, no file and no Ctrl-C ending)."""
    real_save = torch.save

    def interrupted_save(obj, f):
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at the next bytecode: inside torch.save
        real_save(obj, f)

    # Python's own Ctrl-C handler, as in the console script: an earlier in-process DDP launch in this test worker
    # may have left torch.distributed.elastic's handler installed, which a checkpoint write leaves alone
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(torch, "save", interrupted_save)
        state = {"model": {"w": torch.arange(100_000, dtype=torch.float32)}, "epoch": 3}
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save(state, tmp_path / "last.pt")
        assert torch.equal(torch.load(tmp_path / "last.pt", weights_only=True)["model"]["w"], state["model"]["w"])
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's handler is back
        monkeypatch.setattr(torch, "save", real_save)
        checkpoint.copy_file(tmp_path / "last.pt", tmp_path / "best.pt")  # nothing pending: no KeyboardInterrupt
        assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()
    finally:
        signal.signal(signal.SIGINT, previous)
