"""MNIST, Fashion-MNIST, CIFAR-10/100 from tiny files in their real on-disk formats, through torchvision."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from dltool.catalog import DATASETS
from dltool.config.schema import DataConfig
from dltool.data.build import build_data
from dltool.data.datasets.vision import data_root
from dltool.errors import ConfigError
from tests.conftest import run_cli
from tests.fakedata import write_cifar10, write_cifar100, write_mnist

OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",  # refused at once
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
WRITERS = {"mnist": lambda r: write_mnist(r), "fashion_mnist": lambda r: write_mnist(r, "FashionMNIST"),
           "cifar10": write_cifar10, "cifar100": write_cifar100}


def as_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> the stored uint8 layout: (N, H, W) for 1 channel, (N, H, W, C) for 3."""
    u = (x * 255).round().to(torch.uint8)
    return (u[:, 0] if u.shape[1] == 1 else u.permute(0, 2, 3, 1)).numpy()


@pytest.mark.parametrize("name", list(WRITERS))
def test_real_format_round_trip(tmp_path, name):
    written = WRITERS[name](tmp_path)
    raw = DATASETS[name](DataConfig(name=name, root=str(tmp_path), download=False))
    assert raw.layout == "image" and set(raw.splits) == {"train", "test"}
    for split in ("train", "test"):
        x, y = raw.splits[split]
        assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(as_uint8(x), written[split][0])
        np.testing.assert_array_equal(y.numpy(), written[split][1])
    expected = {"mnist": [str(i) for i in range(10)],
                "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                  "Bag", "Ankle boot"],
                }.get(name, written.get("classes"))  # cifar: the names stored in the batches' meta file
    assert expected is not None and raw.class_names == expected


def test_mnist_gz_files_are_unpacked_beside_themselves(tmp_path):
    write_mnist(tmp_path)
    DATASETS["mnist"](DataConfig(name="mnist", root=str(tmp_path), download=False))
    raw = tmp_path / "MNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + 120 * 28 * 28


def test_resize_and_grayscale(tmp_path):
    write_cifar10(tmp_path)
    raw = DATASETS["cifar10"](DataConfig(name="cifar10", root=str(tmp_path), image_size=[16, 20], grayscale=True))
    x = raw.splits["train"][0]
    assert x.shape == (100, 1, 16, 20) and 0 <= x.min() and x.max() <= 1


def test_bundle_splits_and_norm_from_train_only(tmp_path):
    write_cifar10(tmp_path)
    d = build_data(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert (len(d.train), len(d.val), len(d.test)) == (80, 20, 40)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert torch.allclose(d.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)  # train stats only ...
    assert not torch.allclose(d.test.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)  # ... applied to test


def test_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DLTOOL_DATA", raising=False)
    assert data_root(DataConfig()) == tmp_path / "cache" / "dltool" / "data"
    monkeypatch.setenv("DLTOOL_DATA", str(tmp_path / "env"))
    assert data_root(DataConfig()) == tmp_path / "env"
    assert data_root(DataConfig(root=str(tmp_path / "cfg"))) == tmp_path / "cfg"


def test_missing_files_without_download(tmp_path):
    with pytest.raises(ConfigError) as err:
        DATASETS["cifar100"](DataConfig(name="cifar100", root=str(tmp_path / "nothing"), download=False))
    msg = str(err.value)
    assert str(tmp_path / "nothing" / "cifar-100-python") in msg and "data.download=false" in msg
    assert msg.count(". ") == 0 and "\n" not in msg  # one sentence
    assert not (tmp_path / "nothing").exists()


def test_corrupt_file_is_one_sentence(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated download
    with pytest.raises(ConfigError, match="could not be read .*delete that folder"):
        DATASETS["cifar10"](DataConfig(name="cifar10", root=str(tmp_path), download=False))
    with open(batch, "wb") as f:
        pickle.dump({"no": "data"}, f)
    with pytest.raises(ConfigError, match="could not be read"):
        DATASETS["cifar10"](DataConfig(name="cifar10", root=str(tmp_path), download=False))


@pytest.mark.slow
def test_offline_download_fails_with_one_sentence_and_writes_nothing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**OFFLINE, "HOME": str(home), "XDG_CACHE_HOME": "", "DLTOOL_DATA": ""}
    r = run_cli("train", "data=mnist", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "downloading them failed" in lines[0] and str(home / ".cache" / "dltool" / "data" / "MNIST") in lines[0]
    assert not (home / ".cache" / "dltool").exists()  # no data folder (matplotlib may keep its own cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # a refused run leaves no run dir either


@pytest.mark.slow
def test_train_one_epoch_on_generated_files(tmp_path):
    """One `dltool train -m` over the four data sets (one process start, four real runs)."""
    for write in WRITERS.values():
        write(tmp_path / "data")
    r = run_cli("train", "-m", f"data={','.join(WRITERS)}", "model=mlp", "trainer.epochs=1",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                env={**OFFLINE, "DLTOOL_DATA": str(tmp_path / "data")})
    assert r.returncode == 0, r.stderr
    for i, name in enumerate(WRITERS):
        run = tmp_path / "sweep" / str(i)
        summary = json.loads((run / "summary.json").read_text())
        assert "failed" not in summary, summary
        assert summary["epochs_run"] == 1 and 0.0 <= summary["test_acc"] <= 1.0
        ck = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
        assert ck["config"]["data"]["name"] == name
        assert ck["input_shape"] == ([1, 28, 28] if "mnist" in name else [3, 32, 32])
        assert ck["norm"]["kind"] == "standardize" and ck["num_classes"] == (100 if name == "cifar100" else 10)
