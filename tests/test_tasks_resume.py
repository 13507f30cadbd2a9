"""Kill -9 + resume stays bitwise for a regression run and for a balanced-sampler run: a real `dltool train`
process is killed with SIGKILL once it has written a last.pt mid-run, resumed with `resume=RUN`, and its final
weights and every metrics row equal an uninterrupted run's."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dltool.train import checkpoint

COMMON = ("trainer.threads=1", "trainer.diagnostics=false", "trainer.loggers=[csv]", "trainer.checkpoint_every=5",
          "trainer.val_every=100", "trainer.patience=null", "model=mlp")
RUNS = {
    "regression": ("data=diabetes", "loss=mse", "trainer.batch_size=16", "trainer.max_steps=1500", *COMMON),
    "balanced_sampler": ("data.sampler=balanced", "data.subset=400", "trainer.batch_size=16",
                         "trainer.max_steps=1200", *COMMON),
}


def env() -> dict:
    return {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "160"}


def kill_mid_run(keys: tuple[str, ...], run: Path, cwd: Path, after_step: int = 40) -> int:
    """Start `dltool train`, SIGKILL it once its last.pt is past `after_step` (and before the end); the step."""
    proc = subprocess.Popen([sys.executable, "-m", "dltool", "train", *keys, f"hydra.run.dir={run}"], cwd=cwd,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, deadline = run / "checkpoints" / "last.pt", time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.exists():
                try:
                    step = checkpoint.load(last)["progress"]["step"]
                except Exception:  # noqa: BLE001 - caught between the temp file and the rename: look again
                    step = 0
                if step >= after_step:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return step
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError(f"the run ended (exit {proc.returncode}) before it could be killed mid-run")


def rows(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "metrics.csv")))


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(RUNS))
def test_kill_9_and_resume_is_bitwise(kind, tmp_path, cli):
    """Only the killed run is a process of its own; the uninterrupted run and the resume run in this one."""
    keys = RUNS[kind]
    straight = cli("train", *keys, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    step = kill_mid_run(keys, killed, tmp_path)
    total = int(next(k for k in keys if k.startswith("trainer.max_steps=")).split("=")[1])
    assert 0 < step < total and not (killed / "summary.json").exists()
    resumed = cli("train", f"resume={killed}")  # the run's own config.yaml
    assert resumed.returncode == 0, resumed.stderr
    a = checkpoint.load(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = checkpoint.load(killed / "checkpoints" / "last.pt")
    assert a["progress"]["step"] == b["progress"]["step"] == total
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert rows(tmp_path / "straight") == [{**r, "time": s["time"]} for r, s in
                                           zip(rows(killed), rows(tmp_path / "straight"))]
    if kind == "regression":
        assert "val_r2" in rows(killed)[0] and torch.equal(a["target_norm"]["mean"], b["target_norm"]["mean"])
