"""summary.json's provenance checked against independent computations: git run by the test, hashlib over the
arrays the run trained on, the versions and host as Python reports them."""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pytest
import torch

from dltool.train.run import prepare
from tests.conftest import make_config

ARGS = ("model=mlp", "trainer.epochs=1", "data.subset=200", "trainer.eval_test=false", "trainer.diagnostics=false")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def sha_of_splits(cfg) -> str:
    """The fingerprint recomputed by hand: per split, its name, then dtype|shape| and the raw bytes of x and y."""
    data = prepare(cfg).data
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        if split is None:
            continue
        h.update(name.encode() + b"|")
        for t in (split.x, split.y):
            h.update(f"{t.dtype}|{tuple(t.shape)}|".encode() + t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_summary_records_versions_host_command_git_times_and_a_data_fingerprint(tmp_path, cli):
    git(tmp_path, "init", "-q")
    (tmp_path / "notes.txt").write_text("v1\n")
    git(tmp_path, "add", "notes.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    ran = cli("train", *ARGS, "hydra.run.dir=clean")
    assert ran.returncode == 0, ran.stderr
    p = json.loads((tmp_path / "clean" / "summary.json").read_text())["provenance"]
    assert p["git"] == {"commit": git(tmp_path, "rev-parse", "HEAD"), "dirty": False}
    assert p["command"] == "dltool train " + " ".join(ARGS) + " hydra.run.dir=clean"
    assert p["python"] == platform.python_version() and p["torch"] == torch.__version__
    assert p["torchvision"] == metadata.version("torchvision") and p["dltool"] == metadata.version("dltool")
    assert p["host"] == socket.gethostname() and p["device"] == "cpu" and len(p["device_names"]) == 1
    assert p["cuda"] == (torch.version.cuda if torch.cuda.is_available() else None)
    start, end = (datetime.strptime(p[k], "%Y-%m-%dT%H:%M:%S%z") for k in ("started", "ended"))
    assert 0 <= (end - start).total_seconds() < 600
    assert p["data_fingerprint"] == sha_of_splits(make_config(*ARGS))
    (tmp_path / "notes.txt").write_text("v2\n")  # an edited tracked file: dirty
    assert cli("train", *ARGS, "hydra.run.dir=dirty").returncode == 0
    q = json.loads((tmp_path / "dirty" / "summary.json").read_text())["provenance"]
    assert q["git"]["dirty"] is True and q["data_fingerprint"] == p["data_fingerprint"]
    assert cli("train", *ARGS, "data.subset=150", "hydra.run.dir=other").returncode == 0
    r = json.loads((tmp_path / "other" / "summary.json").read_text())["provenance"]
    assert r["data_fingerprint"] == sha_of_splits(make_config(*ARGS, "data.subset=150")) != p["data_fingerprint"]


def test_outside_a_git_repository_commit_and_dirty_are_null(tmp_path):
    from dltool.train.provenance import git_state

    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # /tmp is no repository
