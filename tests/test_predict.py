"""`dltool predict`: images and tensors are classified exactly as the model classifies the training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dltool.catalog import DATASETS
from dltool.commands.predict import run_predict
from dltool.data.normalize import apply_norm
from dltool.data.splits import make_splits
from dltool.train.metrics import probabilities
from dltool.train.restore import restore
from tests.conftest import copy_of_default_run, make_config, run_cli

OPTS = {"topk": 3, "checkpoint": "best", "device": "cpu", "invert": False, "batch_size": 256}


@pytest.fixture(scope="module")
def run(default_run_3, tmp_path_factory) -> Path:
    """A three-epoch default run, trained in-process (no Hydra needed below the CLI): a copy of the session's."""
    return copy_of_default_run(default_run_3, tmp_path_factory, "predict")


@pytest.fixture(scope="module")
def raw_test() -> tuple[torch.Tensor, torch.Tensor]:
    """The raw (unnormalized) test images of the default split: (N, 1, 8, 8) in [0, 1]."""
    cfg = make_config().data
    return make_splits(DATASETS["digits"](cfg), cfg)["test"]


def direct_probs(run: Path, x: torch.Tensor) -> torch.Tensor:
    r = restore(str(run), "best", "cpu")
    with torch.no_grad():
        return probabilities("classification", r.model(apply_norm(x, r.ckpt["norm"])))


def test_png_files_match_the_model_on_the_test_split(run: Path, raw_test, tmp_path: Path) -> None:
    x, _ = raw_test
    files = []
    for i in range(6):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.round(x[i, 0].numpy() * 255).astype(np.uint8)).save(path)
        files.append(str(path))
    res = run_predict(str(run), files, OPTS)
    expected = direct_probs(run, torch.round(x[:6] * 255) / 255)  # what an 8-bit PNG can hold
    assert res["labels"] == files
    for i, top in enumerate(res["top"]):
        assert top[0][0] == str(int(expected[i].argmax()))
        assert top[0][1] == pytest.approx(float(expected[i].max()), abs=1e-5)
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and len(top) == 3


def test_npy_batch_and_pt_example_are_exact(run: Path, raw_test, tmp_path: Path) -> None:
    x, _ = raw_test
    np.save(tmp_path / "batch.npy", x[10:15].numpy())
    torch.save(x[20].clone(), tmp_path / "one.pt")
    res = run_predict(str(run), [str(tmp_path / "batch.npy"), str(tmp_path / "one.pt")], {**OPTS, "topk": 10})
    expected = direct_probs(run, torch.cat([x[10:15], x[20:21]]))
    assert res["labels"][0].endswith("batch.npy[0]") and res["labels"][5].endswith("one.pt")
    for i, top in enumerate(res["top"]):
        probs = {int(name): p for name, p in top}
        assert [probs[c] for c in range(10)] == pytest.approx(expected[i].tolist(), abs=1e-6)


def test_larger_rgb_image_is_converted(run: Path, tmp_path: Path) -> None:
    img = Image.new("RGB", (32, 32), (0, 0, 0))
    img.paste((255, 255, 255), (12, 0, 20, 32))  # a bright vertical bar, like a "1"
    img.save(tmp_path / "bar.jpg")
    plain = run_predict(str(run), [str(tmp_path / "bar.jpg")], OPTS)["top"][0]
    inverted = run_predict(str(run), [str(tmp_path / "bar.jpg")], {**OPTS, "invert": True})["top"][0]
    assert plain != inverted and {name for name, _ in plain} <= {str(i) for i in range(10)}


def test_cli_prints_top_k_and_refuses_bad_inputs(run: Path, raw_test, tmp_path: Path, cli) -> None:
    x, _ = raw_test
    np.save(tmp_path / "two.npy", x[:2].numpy())
    proc = cli("predict", str(run), str(tmp_path / "two.npy"), "topk=2")
    assert proc.returncode == 0, proc.stderr
    assert "two.npy[0]" in proc.stdout and "two.npy[1]" in proc.stdout and "2nd" in proc.stdout
    assert "3rd" not in proc.stdout
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5), dtype=np.float32))
    proc = cli("predict", str(run), str(tmp_path / "wrong.npy"))
    assert proc.returncode == 2 and "has shape 3x5; this model takes 1x8x8" in proc.stderr


@pytest.mark.slow
def test_predict_console_command_end_to_end(run: Path, raw_test, tmp_path: Path) -> None:
    """The real `python -m dltool predict` in a new process."""
    np.save(tmp_path / "one.npy", raw_test[0][:1].numpy())
    proc = run_cli("predict", str(run), str(tmp_path / "one.npy"), "topk=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "one.npy" in proc.stdout and "Traceback" not in proc.stderr
