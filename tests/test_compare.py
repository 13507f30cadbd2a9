"""`dltool compare`: on two real tiny runs, the differing keys, the final metrics from their own files, the overlay
PNG in a directory of its own, and the compared runs left untouched."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ARGS = ("model=mlp", "trainer.epochs=2", "data.subset=200", "trainer.diagnostics=false", "trainer.loggers=[csv]")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_compare_two_runs(tmp_path, cli):
    assert cli("train", *ARGS, "hydra.run.dir=a").returncode == 0
    assert cli("train", *ARGS, "optimizer.lr=0.01", "trainer.batch_size=32", "hydra.run.dir=b").returncode == 0
    before = {r: digest(tmp_path / r) for r in ("a", "b")}
    ran = cli("compare", "a", "b")
    assert ran.returncode == 0, ran.stderr
    out_dirs = list((tmp_path / "outputs" / "compare").iterdir())
    assert len(out_dirs) == 1
    res = json.loads((out_dirs[0] / "compare.json").read_text())
    assert res["differing_keys"] == {"optimizer.lr": [0.001, 0.01], "trainer.batch_size": [64, 32]}
    for r in ("a", "b"):
        s = json.loads((tmp_path / r / "summary.json").read_text())
        last = list(csv.DictReader(open(tmp_path / r / "metrics.csv")))[-1]
        f = res["final"][r]
        assert f["best_value"] == s["best_value"] and f["test_acc"] == s["test_acc"] and f["epochs_run"] == 2
        assert f["last val_acc"] == float(last["val_acc"]) and f["last train_loss"] == float(last["train_loss"])
        assert f"{s['test_acc']:.4f}" in ran.stdout
    assert "optimizer.lr" in ran.stdout and "trainer.batch_size" in ran.stdout
    with Image.open(out_dirs[0] / "curves.png") as im:
        assert im.size[0] > 600 and im.size[1] > 300
    assert {r: digest(tmp_path / r) for r in ("a", "b")} == before  # nothing written into the compared runs
    again = subprocess.run([sys.executable, "-m", "dltool", "compare", "a", "b", "--out", "mine"], cwd=tmp_path,
                           capture_output=True, text=True)  # the real console command, end to end
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "mine" / "compare.json").read_text())["differing_keys"] == res["differing_keys"]
