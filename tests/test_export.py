"""`dltool export`: each format runs outside PyTorch's model code and gives PyTorch's outputs, any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from dltool.cli import main
from dltool.commands.export import real_inputs
from dltool.data.normalize import apply_norm
from dltool.errors import ConfigError
from dltool.models.export import convert
from dltool.train.restore import restore
from tests.conftest import copy_of_default_run


@pytest.fixture(scope="module")
def run_dir(default_run_3, tmp_path_factory) -> Path:
    """A short default run on the embedded digits (trained in-process): a copy of the session's three-epoch run."""
    return copy_of_default_run(default_run_3, tmp_path_factory, "export")


def export(run: Path, capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(["export", str(run), *args])
    out = capsys.readouterr()
    return int(ex.value.code or 0), out.out, out.err


def run_file(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    """The written file run the way its users would run it (no dltool code)."""
    if fmt == "onnx":
        sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(sess.run(["logits"], {"input": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x).detach()
    return torch.export.load(str(path)).module()(x).detach()


@pytest.mark.parametrize("fmt,suffix", [pytest.param("onnx", ".onnx", marks=pytest.mark.slow),
                                        ("torchscript", ".ts.pt"), ("exported", ".pt2")])
def test_export_matches_pytorch_at_batch_1_and_7(run_dir: Path, capsys, fmt: str, suffix: str) -> None:
    code, out, err = export(run_dir, capsys, "--format", fmt)
    assert code == 0, err
    path = run_dir / "export" / f"model{suffix}"
    info = json.loads(path.with_name(path.name + ".json").read_text())
    assert info["input"]["shape"] == ["batch", 1, 8, 8] and info["input"]["layout"] == "image"
    assert info["output"]["shape"] == ["batch", 10] and info["class_names"] == [str(i) for i in range(10)]
    assert info["normalization"]["kind"] == "standardize" and not info["normalization"]["in_graph"]
    assert len(info["normalization"]["mean"]) == 1 and info["normalization"]["std"][0] > 0
    assert info["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert info["opset"] == (18 if fmt == "onnx" else None)
    check = info["verification"]
    assert check["passed"] and check["batch_sizes"] == [1, 7, 64] and check["worst"] <= 1e-5
    assert "passed: outputs equal PyTorch's within 1e-05" in out and "batch of 7" in out
    assert ("torch deprecates TorchScript" in err) == (fmt == "torchscript")  # said, not filtered away
    r = restore(str(run_dir))
    x, _ = real_inputs(r, 20)
    for n in (1, 7, 20):
        with torch.no_grad():
            want = r.model(x[:n])
        got = run_file(fmt, path, x[:n].contiguous())
        assert got.shape == (n, 10)
        assert torch.allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_with_normalization_takes_raw_inputs(run_dir: Path, capsys) -> None:
    out_dir = run_dir.parent / "raw_export"
    code, out, err = export(run_dir, capsys, "--format=exported", "--with-normalization", "--out", str(out_dir))
    assert code == 0, err
    info = json.loads((out_dir / "model_with_norm.pt2.json").read_text())
    assert info["normalization"]["in_graph"] and info["input"]["expects"].startswith("raw")
    r = restore(str(run_dir))
    x_norm, x_raw = real_inputs(r, 7)
    assert x_raw.min() >= 0 and x_raw.max() <= 16 and not torch.allclose(x_raw, x_norm)  # digits: raw pixels 0..16
    assert torch.allclose(apply_norm(x_raw, r.ckpt["norm"]), x_norm, atol=1e-6)
    got = run_file("exported", out_dir / "model_with_norm.pt2", x_raw)
    with torch.no_grad():
        assert torch.allclose(got, r.model(x_norm), atol=1e-5, rtol=0)


class ToNumpy(nn.Module):
    """A layer that leaves PyTorch: no exporter can follow it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.maximum(x.detach().numpy(), 0))


def test_a_layer_that_cannot_be_exported_is_named(run_dir: Path) -> None:
    r = restore(str(run_dir))
    r.model.layers.relu2 = ToNumpy()
    x, _ = real_inputs(r, 4)
    with pytest.raises(ConfigError) as ex:
        convert(r.model, x[:2], "exported")
    msg = str(ex.value)
    assert msg.startswith("layer relu2 (ToNumpy) cannot be exported to a torch.export program: ")
    assert msg.count(". ") == 0 and "\n" not in msg


def test_bad_options_get_one_sentence_and_write_nothing(run_dir: Path, capsys, tmp_path: Path) -> None:
    code, _, err = export(run_dir, capsys, "--format", "tflite", "--out", str(tmp_path / "x"))
    assert code == 2 and "--format 'tflite' is not known; valid: onnx, torchscript, exported" in err
    code, _, err = export(tmp_path / "missing", capsys)
    assert code == 2 and "neither a run directory nor a checkpoint file" in err
    assert not (tmp_path / "x").exists()
    code, out, _ = export(run_dir, capsys, "--help")
    assert code == 0 and "usage: dltool export RUN_DIR" in out
