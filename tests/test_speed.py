"""Speed features: trainer.channels_last, trainer.compile, data.cache for folder data, and the bench suite's output.

No timing assertions here (speed is measured by scripts/bench.py); these check that each feature does what it says.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dltool.data.build import build_data
from dltool.data.splits import TensorSplit
from dltool.train.run import prepare, train
from dltool.train.steps import BatchStream
from tests.conftest import make_config
from tests.fakedata import write_imagefolder

ROOT = Path(__file__).resolve().parent.parent
TINY = ("model=cnn_digits", "trainer.epochs=1", "data.subset=200", "trainer.progress=false",
        "trainer.diagnostics=false", "trainer.loggers=[]", "scheduler=none")


def test_channels_last_puts_conv_weights_and_batches_in_nhwc_and_trains(tmp_path):
    cfg = make_config(*TINY, "trainer.channels_last=true")
    p = prepare(cfg)
    convs = [m for m in p.setup.model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not all(m.weight.is_contiguous() for m in convs)  # really NHWC, not a 1x1 kernel that is both
    rgb = TensorSplit(torch.randn(16, 3, 8, 8), torch.zeros(16, dtype=torch.long))  # (one channel is both layouts)
    x, _ = BatchStream(rgb, 8, torch.Generator().manual_seed(0), torch.device("cpu"), channels_last=True).next()
    assert x.stride() == (192, 1, 24, 3) and not x.is_contiguous()  # NHWC strides for (8, 3, 8, 8)
    summary = train(cfg, tmp_path / "run", prepared=p)
    assert summary["epochs_run"] == 1 and math.isfinite(summary["test_loss"])
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)  # the optimizer kept them


def test_channels_last_off_by_default_keeps_plain_layout():
    p = prepare(make_config(*TINY))
    assert all(m.weight.is_contiguous() for m in p.setup.model.modules() if isinstance(m, nn.Conv2d))
    assert not p.setup.compile and not p.setup.channels_last


def test_folder_cache_serves_later_epochs_from_memory_with_the_same_batches(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", per_class=10, size=(8, 8))
    overrides = ("data=imagefolder", f"data.root={root}", "data.num_workers=0", "data.image_size=[8,8]",
                 "data.normalize=none", "data.test_fraction=0.2")
    plain = build_data(make_config(*overrides).data, torch.device("cpu"))
    cached = build_data(make_config(*overrides, "data.cache=true").data, torch.device("cpu"))
    assert cached.train.memory is None

    def epoch(split, seed):
        return list(split.batches(4, torch.Generator().manual_seed(seed)))

    first, want = epoch(cached.train, 1), epoch(plain.train, 1)
    assert cached.train.memory is not None and cached.train.memory.shape == (len(cached.train), 3, 8, 8)
    for seed in (1, 2):  # after the first pass: from memory, the same batches as streaming from disk
        got, ref = epoch(cached.train, seed), epoch(plain.train, seed)
        assert len(got) == len(ref)
        for (x, y), (rx, ry) in zip(got, ref):
            assert torch.equal(x, rx) and torch.equal(y, ry)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, want))
    in_order = list(cached.val.batches(4))  # evaluation (no generator): in file order, also cached
    assert torch.equal(torch.cat([y for _, y in in_order]), torch.cat([y for _, y in plain.val.batches(4)]))


def test_folder_cache_refuses_what_does_not_fit_the_budget(tmp_path, caplog):
    root = write_imagefolder(tmp_path / "imgs", per_class=10, size=(8, 8))
    data = build_data(make_config("data=imagefolder", f"data.root={root}", "data.num_workers=0",
                                  "data.image_size=[64,64]", "data.cache=true", "data.memory_cap_mb=0.1").data,
                      torch.device("cpu"))
    list(data.train.batches(8, torch.Generator().manual_seed(0)))
    assert data.train.memory is None
    assert "data.memory_cap_mb=0.1" in caplog.text


@pytest.mark.slow
def test_compile_trains_and_checkpoints_the_bare_model(tmp_path):
    cfg = make_config(*TINY, "trainer.compile=true")
    p = prepare(cfg)
    summary = train(cfg, tmp_path / "run", prepared=p)
    assert summary["epochs_run"] == 1 and math.isfinite(summary["test_loss"])
    assert p.setup.net is not p.setup.model  # training went through the compiled module
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in best["model"])  # plain keys: evaluate/resume load them


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_cuda_precision_with_resident_batches_and_compile(tmp_path, precision):
    cfg = make_config(*TINY, "trainer.device=cuda", f"trainer.precision={precision}", "trainer.compile=true",
                      "trainer.channels_last=true")
    p = prepare(cfg)
    assert p.data.train.x.device.type == "cuda"  # data.on_device: batches never leave the GPU
    summary = train(cfg, tmp_path / "run", prepared=p)
    assert math.isfinite(summary["test_loss"]) and summary["test_acc"] > 0.1


@pytest.mark.slow
def test_bench_quick_prints_finite_ratios_and_a_table(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--cases", "1,3,5",
                          "--rounds", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "torch" in text and "CPU" in text
    ratios = re.findall(r"^case (\d)\b.*ratio ([0-9.]+|nan|inf)x", text, flags=re.M)
    assert {c for c, _ in ratios} >= {"1", "3"}, text
    assert all(math.isfinite(float(r)) and float(r) > 0 for _, r in ratios), text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "|" in line[1:]]
    assert len(rows) >= 2 + 3, text  # header, separator, one row per case
    assert re.search(r"start-up.*\+?-?[0-9.]+ s", text), text


@pytest.mark.slow
def test_bench_fixed_cost_cases_run_and_the_hand_job_writes_what_a_user_would(tmp_path):
    """Cases 6 (whole main job vs scripts/hand_main_job.py, CPU and peak memory) and 10 (CSV reader vs np.loadtxt)
    print finite min/median/max ratios; the hand job leaves checkpoints, metrics.csv, curves.png and its summary."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--cases", "10,6",
                          "--rounds", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    got = dict(re.findall(r"^case (10|6m?) .*?ratio ([0-9.]+)x \(ratio min", out.stdout, flags=re.M))
    assert set(got) == {"10", "6", "6m"} and all(0 < float(v) < 100 for v in got.values()), out.stdout
    subprocess.run([sys.executable, str(ROOT / "scripts" / "hand_main_job.py"), str(tmp_path / "hand"), "--epochs",
                    "2"], check=True, capture_output=True, timeout=600)
    rows = list(csv.DictReader(open(tmp_path / "hand" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    best = min(float(r["val_loss"]) for r in rows)
    summary = json.loads((tmp_path / "hand" / "summary.json").read_text())
    assert summary["best_val_loss"] == pytest.approx(best) and 0 < summary["test_acc"] <= 1
    assert (tmp_path / "hand" / "curves.png").stat().st_size > 3000
    assert (tmp_path / "hand" / "checkpoints" / "best.pt").is_file()
