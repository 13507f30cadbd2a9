"""CUDA-only paths: fp16 autocast with GradScaler, data held on the GPU, a CUDA run evaluated on the CPU.

Marked `gpu`: tests/conftest.py skips them where torch.cuda.is_available() is False; on a GPU machine they run
with the default tier.
"""

import json

import pytest
import torch

from dltool.commands.evaluate import OPTIONS, run_evaluate
from dltool.data.build import build_data
from dltool.train import checkpoint
from dltool.train.loop import autocast, make_scaler, train_one_epoch
from dltool.train.run import prepare, train
from tests.conftest import make_config

pytestmark = pytest.mark.gpu

CUDA_MLP = ("model=mlp", "trainer.device=cuda", "trainer.epochs=4")


def test_fp16_trains_with_an_enabled_grad_scaler(tmp_path, caplog):
    cfg = make_config(*CUDA_MLP, "trainer.precision=16")
    p = prepare(cfg)
    assert p.device.type == "cuda" and p.setup.precision == "16"  # no fallback to bf16 on a GPU
    assert make_scaler(p.setup).is_enabled()
    with autocast(p.device, "16"):
        assert p.setup.model(p.data.train.x[:8]).dtype == torch.float16  # the forward pass really runs in fp16
    summary = train(cfg, tmp_path, prepared=p)
    assert "needs a CUDA device" not in caplog.text
    assert not summary["diverged"] and summary["test_acc"] > 0.85
    weights = checkpoint.load(tmp_path / "checkpoints" / "best.pt")["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())  # master weights fp32


def test_grad_scaler_skips_an_overflowing_step_and_lowers_its_scale():
    p = prepare(make_config(*CUDA_MLP, "trainer.precision=16"))
    s = p.setup
    # a scale this large turns the fp16 gradients into inf: the scaler must skip the step and lower the scale
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 60)
    before = {k: v.detach().clone() for k, v in s.model.named_parameters()}
    x, y = p.data.train.x[:64], p.data.train.y[:64]
    train_one_epoch(s, iter([(x, y)]), 1, torch.Generator().manual_seed(0), scaler)
    assert scaler.get_scale() < 2.0 ** 60
    for k, v in s.model.named_parameters():
        assert torch.equal(v, before[k]), f"{k} changed although the step overflowed"
    # with the default scale the same batch updates every parameter
    train_one_epoch(s, iter([(x, y)]), 1, torch.Generator().manual_seed(0), make_scaler(s))
    for k, v in s.model.named_parameters():
        assert not torch.equal(v, before[k]), f"{k} did not change in a normal fp16 step"


def test_data_lives_on_the_gpu_and_a_cuda_run_evaluates_on_the_cpu(tmp_path):
    cfg = make_config(*CUDA_MLP)
    data = build_data(cfg.data, torch.device("cuda"))
    assert data.train.x.device.type == "cuda" and data.val.y.device.type == "cuda"
    x, y = next(iter(data.train.batches(32, torch.Generator().manual_seed(0))))
    assert x.device.type == "cuda" and y.device.type == "cuda" and x.shape == (32, 1, 8, 8)
    off = build_data(make_config(*CUDA_MLP, "data.on_device=false").data, torch.device("cuda"))
    assert off.train.x.device.type == "cpu"  # on_device=false keeps it in host memory
    summary = train(cfg, tmp_path)
    assert summary["test_acc"] > 0.85
    result = run_evaluate(str(tmp_path), {**OPTIONS, "device": "cpu"}, {})
    assert result["acc"] == pytest.approx(summary["test_acc"], abs=1.5 / 360)  # same weights, another device
    assert json.loads((tmp_path / "eval.json").read_text())["examples"] == 360
