"""Preemption (dltool/train/preempt.py): real SIGTERM/SIGUSR1 to real training processes, then a resume that is
bitwise equal to an uninterrupted run; 2 gloo ranks stop together with rank 0 writing last.pt."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dltool.cli import main
from dltool.train import checkpoint
from dltool.train.callbacks import Callback
from dltool.train.preempt import PREEMPTED, Preempted
from dltool.train.run import prepare, train
from tests.conftest import make_config

SMALL = ("model=mlp", "trainer.patience=null", "trainer.batch_size=16", "model.layers.4={dropout: 0.2}",
         "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.8")
ENV = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "160"}


class SignalAt(Callback):
    """Sends a real signal to this process after the n-th training batch (counted over the whole run)."""

    def __init__(self, n: int, sig: int) -> None:
        self.n, self.sig, self.seen = n, sig, 0

    def on_batch_end(self, state) -> None:
        self.seen += 1
        if self.seen == self.n:
            os.kill(os.getpid(), self.sig)


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f)]  # time: wall clock


def same_weights(a: Path, b: Path) -> None:
    wa, wb = (checkpoint.load(r / "checkpoints" / "last.pt")["model"] for r in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("accumulate, sent_after, stops_after", [(1, 10, 10), (3, 10, 12)])
def test_a_signal_mid_epoch_saves_the_exact_position_and_the_resume_is_bitwise_equal(
        tmp_path, accumulate, sent_after, stops_after):
    extra = (*SMALL, f"trainer.accumulate={accumulate}", "trainer.eval_test=false")
    whole = make_config(*extra, "trainer.epochs=2")
    train(whole, tmp_path / "whole")
    batches = prepare(whole).data.train.num_batches(16)  # per epoch
    cut = tmp_path / "cut"
    with pytest.raises(Preempted) as stopped:
        train(make_config(*extra, "trainer.epochs=2"), cut,
              extra_callbacks=[SignalAt(batches + sent_after, signal.SIGUSR1)])
    assert stopped.value.name == "SIGUSR1"
    ck = checkpoint.load(cut / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1 and ck["progress"]["done"] == 1
    assert ck["progress"]["partial"]["batches"] == stops_after  # finished the optimizer step under way, no more
    assert ck["progress"]["partial"]["seen"] == 16 * stops_after
    assert (cut / "preempted.json").is_file() and len(rows(cut)) == 1
    summary = train(make_config(*extra, "trainer.epochs=2", f"resume={cut}"), cut)
    same_weights(tmp_path / "whole", cut)
    assert rows(cut) == rows(tmp_path / "whole")  # train_loss/acc of the cut epoch too: the sums were carried
    assert summary["preemptions"][0]["signal"] == "SIGUSR1"
    assert summary["preemptions"][0]["batches_into_next"] == stops_after
    assert not (cut / "preempted.json").exists()


def start(run: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dltool", "train", *args, f"hydra.run.dir={run}"], cwd=run.parent,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_epochs(proc: subprocess.Popen, run: Path, n: int) -> None:
    deadline = time.time() + 300
    while not (run / "metrics.csv").is_file() or len((run / "metrics.csv").read_text().splitlines()) < n + 1:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_dltool_train_gets_a_signal_exits_75_and_resumes_bitwise(tmp_path, sig):
    args = (*SMALL, "trainer.batch_size=8", "trainer.epochs=4")
    run = tmp_path / "cut"
    proc = start(run, *args)
    wait_for_epochs(proc, run, 2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED, out
    line = [ln for ln in out.splitlines() if "preempted" in ln]
    assert line == [f"warning: preempted by {sig.name}: last.pt holds the state after the last finished step; "
                    f"continue with: dltool train resume={run}"]
    assert "Traceback" not in out
    with pytest.raises(SystemExit) as done:
        main(["train", f"resume={run}"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        main(["train", *args, f"hydra.run.dir={tmp_path / 'whole'}"])
    assert done.value.code == 0
    same_weights(tmp_path / "whole", run)
    assert rows(run) == rows(tmp_path / "whole")


@pytest.mark.slow
@pytest.mark.usefixtures("console_ranks")  # the in-process resume and whole run fork their ranks
def test_two_gloo_ranks_stop_together_rank0_saves_and_the_resume_is_bitwise(tmp_path):
    args = ("model=mlp", "scheduler=none", "trainer.eval_test=false", "trainer.patience=null", "trainer.batch_size=4",
            "trainer.epochs=5", "trainer.devices=2", "trainer.device=cpu")
    run = tmp_path / "cut"
    proc = start(run, *args)
    wait_for_epochs(proc, run, 2)
    time.sleep(0.1)  # into epoch 3's training (an epoch takes about a second here)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED, out
    cut = checkpoint.load(run / "checkpoints" / "last.pt")["progress"]["partial"]
    assert cut["batches"] > 0 and [r["seen"] for r in cut["ranks"]] == [4 * cut["batches"]] * 2  # each rank's sums
    assert f"preempted by SIGTERM: last.pt holds the state after the last finished step; continue with: dltool " \
           f"train resume={run}" in out.replace("\n", "")
    assert "Traceback" not in out and "death signal" not in out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no temp files
    with pytest.raises(SystemExit) as done:
        main(["train", f"resume={run}"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        main(["train", *args, f"hydra.run.dir={tmp_path / 'whole'}"])
    assert done.value.code == 0
    same_weights(tmp_path / "whole", run)
    assert rows(run) == rows(tmp_path / "whole")


def submitit_tasks(folder: Path) -> list[int]:
    """The job processes submitit's local executor started (`python -m submitit.core._submit FOLDER/...`)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode() if d.name.isdigit() else ""
        except OSError:
            continue
        if "submitit.core._submit" in cmd and str(folder) in cmd:
            out.append(int(d.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the submitit job process through /proc")
def test_a_submitit_job_requeues_itself_on_its_signal_and_continues_from_last_pt(tmp_path):
    """submitit's LocalExecutor runs the real requeue code: its SIGUSR2 handler calls the launcher's checkpoint(),
    dumps the DelayedSubmission and exits 144; the controller starts the job again, which resumes from last.pt."""
    args = ("model=mlp", "trainer.patience=null", "trainer.batch_size=8", "trainer.epochs=4", "trainer.eval_test=false")
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "dltool", "train", "-m", *args, "trainer.seed=0",
                             "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = sweep / "0"
    wait_for_epochs(proc, job, 2)
    tasks = submitit_tasks(sweep)
    assert len(tasks) == 1
    os.kill(tasks[0], signal.SIGUSR2)  # what the controller (or SLURM's --signal) sends before the time limit
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    log = (job / "train.log").read_text()
    assert "Requeued job" in log and "requeued after a preemption: continuing from" in log
    assert len(submitit_tasks(sweep)) == 0
    summary = json.loads((job / "summary.json").read_text())
    assert [p["signal"] for p in summary["preemptions"]] == ["SIGUSR2"] and summary["epochs_run"] == 4
    with pytest.raises(SystemExit) as done:
        main(["train", *args, f"hydra.run.dir={tmp_path / 'whole'}"])
    assert done.value.code == 0
    same_weights(tmp_path / "whole", job)
    assert rows(job) == rows(tmp_path / "whole")
