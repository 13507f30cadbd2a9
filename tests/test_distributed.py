"""Data-parallel training (dltool/train/distributed.py) on CPU with gloo and 2 ranks: the same step as one
process on the whole batch, resume under DDP, a killed rank ends the run in one sentence. Spawning ranks
takes seconds, so these run in the slow tier; CUDA/NCCL tests carry the gpu marker."""

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

from dltool.cli import main
from dltool.config.schema import TrainConfig
from dltool.errors import ConfigError
from dltool.train.distributed import backend_and_devices, rank_overrides
from tests.conftest import make_config, run_cli

BASE = ["model=mlp", "scheduler=none", "trainer.eval_test=false"]


def train(run_dir: Path, *overrides: str) -> None:
    with pytest.raises(SystemExit) as done:
        main(["train", *BASE, *overrides, f"hydra.run.dir={run_dir}"])
    assert done.value.code == 0


def weights(run_dir: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)["model"]


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- fast
@pytest.mark.slow
def test_devices_are_checked_before_anything_runs(monkeypatch):
    cfg: TrainConfig = make_config("trainer.devices=2", "trainer.device=cpu")
    assert backend_and_devices(cfg, 2) == "gloo"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.devices=2 but this machine has 0 CUDA device"):
            backend_and_devices(make_config("trainer.devices=2", "trainer.device=cuda"), 2)
    with pytest.raises(ConfigError, match="trainer.device='mps' is neither"):
        backend_and_devices(make_config("trainer.devices=2", "trainer.device=mps"), 2)
    with pytest.raises(ConfigError, match="model.sync_batchnorm=true needs CUDA ranks"):
        backend_and_devices(make_config("trainer.devices=2", "trainer.device=cpu", "model.sync_batchnorm=true"), 2)


def test_ranks_above_zero_of_an_external_torchrun_write_nothing(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert rank_overrides() == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert rank_overrides() == []  # rank 0 keeps the run dir
    monkeypatch.setenv("RANK", "1")
    out = rank_overrides()
    assert "hydra.output_subdir=null" in out and "hydra/job_logging=disabled" in out


# --------------------------------------------------------------------------- 2 ranks on CPU (slow)
@pytest.mark.slow
@pytest.mark.usefixtures("console_ranks")
def test_binary_task_with_the_balanced_sampler_under_two_ranks_equals_one_process(tmp_path):
    """The balanced sampler draws the same global batches under DDP, and every validation metric of the task
    (AUROC, F1, ...) comes from the outputs gathered over both ranks: the same numbers as one process."""
    task = ("data=breast_cancer", "loss=bce", "data.sampler=balanced", "trainer.epochs=2")
    train(tmp_path / "one", *task, "trainer.devices=1", "trainer.batch_size=64")
    train(tmp_path / "two", *task, "trainer.devices=2", "trainer.batch_size=32", "trainer.device=cpu")
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    for m1, m2 in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two")):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_precision", "val_recall", "val_f1",
                    "val_auroc", "val_ap"):
            assert float(m2[key]) == pytest.approx(float(m1[key]), rel=1e-5, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("average", [[], ["trainer.ema_decay=0.9"]], ids=["plain", "ema"])
@pytest.mark.usefixtures("console_ranks")
def test_two_ranks_of_32_equal_one_process_of_64(tmp_path, average):
    """With trainer.ema_decay too (issue 24): every rank averages the same synchronized weights, so the EMA that
    validation, best.pt and last.pt's "model" hold equals one process's."""
    train(tmp_path / "one", "trainer.devices=1", "trainer.batch_size=64", "trainer.epochs=1", *average)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)]
    train(tmp_path / "two", "trainer.devices=2", "trainer.batch_size=32", "trainer.epochs=1", "trainer.device=cpu",
          *average)
    # the launcher put back the handlers torch.distributed.elastic replaced: Ctrl-C is KeyboardInterrupt again here
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)] == handlers
    if average:  # the EMA is what is compared, not the raw weights
        ck = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
        assert int(ck["average"]["n_averaged"]) == 20  # one epoch: 1221 examples, 20 global batches of 64
        assert not torch.equal(ck["model"]["layers.fc1.weight"], ck["raw_model"]["layers.fc1.weight"])
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:  # same initial weights, same sample order, one step per global batch of 64
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    m1, m2 = metrics(tmp_path / "one")[0], metrics(tmp_path / "two")[0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):  # reduced over both ranks
        assert float(m2[key]) == pytest.approx(float(m1[key]), rel=1e-5, abs=1e-6), key
    def files(run: Path) -> list[str]:  # the event file's name carries host and pid
        return sorted(p.name for p in run.iterdir() if not p.name.startswith("events.out.tfevents"))

    assert not (tmp_path / "two" / "1").exists() and files(tmp_path / "two") == files(tmp_path / "one")
    assert {"checkpoints", "config.yaml", "metrics.csv", "summary.json", "train.log"} <= set(files(tmp_path / "two"))


@pytest.mark.slow
def test_forked_ranks_train_exactly_as_spawned_ones(tmp_path):
    """The console script forks CPU ranks from what it built once (prepare_once); a Python caller spawns them.
    Both give bitwise the same weights and metrics, and train.log says which it was. The forked run is the real
    console command (a process of its own, so no earlier test's torch threads keep it from forking)."""
    two = ["trainer.devices=2", "trainer.batch_size=32", "trainer.epochs=2", "trainer.device=cpu"]
    train(tmp_path / "spawned", *two)
    ran = run_cli("train", *BASE, *two, f"hydra.run.dir={tmp_path / 'forked'}", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    spawned, forked = weights(tmp_path / "spawned"), weights(tmp_path / "forked")
    for k in spawned:
        assert torch.equal(spawned[k], forked[k]), k
    def numbers(run: Path) -> list[dict]:  # every column but the epoch's wall time
        return [{k: v for k, v in row.items() if k != "time"} for row in metrics(run)]

    assert numbers(tmp_path / "forked") == numbers(tmp_path / "spawned") and len(numbers(tmp_path / "forked")) == 2
    assert "starting 2 data-parallel ranks (gloo, spawned)" in (tmp_path / "spawned" / "train.log").read_text()
    assert "starting 2 data-parallel ranks (gloo, forked: data, model and optimizer built once here)" in \
        (tmp_path / "forked" / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("console_ranks")
def test_resume_under_two_ranks_equals_an_uninterrupted_run(tmp_path):
    two = ["trainer.devices=2", "trainer.device=cpu", "trainer.batch_size=32"]
    train(tmp_path / "whole", *two, "trainer.epochs=3")
    train(tmp_path / "cut", *two, "trainer.epochs=2")
    with pytest.raises(SystemExit) as done:
        main(["train", f"resume={tmp_path / 'cut'}", "trainer.epochs=3"])
    assert done.value.code == 0
    whole, cut = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    for k in whole:  # same ranks, same order, same reductions: bitwise equal
        assert torch.equal(whole[k], cut[k]), k
    assert [r["val_loss"] for r in metrics(tmp_path / "cut")] == [r["val_loss"] for r in metrics(tmp_path / "whole")]


def spawned_children(pid: int) -> list[int]:
    """The rank processes the launcher started (forked CPU ranks, or spawned: multiprocessing spawn_main), in start
    order; not multiprocessing's helper processes."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "resource_tracker" not in cmdline and "forkserver" not in cmdline:
            out.append(int(child))
    return sorted(out)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank processes through /proc")
def test_a_killed_rank_ends_the_run_with_one_sentence(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
    proc = subprocess.Popen([sys.executable, "-m", "dltool", "train", *BASE, "trainer.devices=2", "trainer.device=cpu",
                             "trainer.epochs=500", "trainer.patience=null", f"hydra.run.dir={run}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.pt").exists():  # training is under way
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.5)
    ranks = spawned_children(proc.pid)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)  # no hang: the launcher stops rank 0 and says why
    assert proc.returncode != 0
    assert f"rank 1 of 2 (pid {ranks[1]}) was killed by SIGKILL, so the other ranks were stopped; continue with: " \
           f"dltool train resume={run} trainer.devices=2" in out.replace("\n", "")
    assert "Traceback" not in out
    assert not Path(f"/proc/{ranks[0]}").exists() or "zombie" in Path(f"/proc/{ranks[0]}/status").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_with_nccl_equal_one_gpu(tmp_path):
    train(tmp_path / "one", "trainer.devices=1", "trainer.device=cuda", "trainer.batch_size=64", "trainer.epochs=1")
    train(tmp_path / "two", "trainer.devices=2", "trainer.batch_size=32", "trainer.epochs=1")
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)


def test_slurm_tasks_become_ranks_and_the_multi_node_launcher_composes(monkeypatch):
    from dltool.commands.sweep import compose_full
    from dltool.train.distributed import external

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "")  # recorded, so the values slurm_ranks() sets are removed after the test
        monkeypatch.delenv(k)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    assert external()
    assert [os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")] == \
        ["5", "8", "1", "4", "10.0.0.7"]
    monkeypatch.undo()
    assert "RANK" not in os.environ and not external()  # nothing leaks into the next test
    la = compose_full("train", None, ["hydra/launcher=slurm_ddp", "hydra.launcher.nodes=4",
                                      "hydra.sweep.dir=/x/s"]).hydra.launcher
    assert la._target_.endswith("SlurmLauncher")
    assert (la.nodes, la.tasks_per_node, la.gpus_per_node, la.timeout_min) == (4, 4, 4, 60)
