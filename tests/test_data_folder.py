"""imagefolder: scanning, corrupt files, splits, streamed DataLoader vs in-memory, augmentation in workers."""

from __future__ import annotations

import json

import pytest
import torch

from dltool.config.schema import DataConfig
from dltool.data.augment import attach
from dltool.data.build import build_data
from dltool.data.datasets.folder import FolderSplit
from dltool.data.splits import TensorSplit
from dltool.errors import ConfigError
from tests.conftest import run_cli
from tests.fakedata import write_imagefolder


def cfg(root, **kw) -> DataConfig:
    return DataConfig(**{"name": "imagefolder", "root": str(root), "image_size": [16, 16], "on_device": False, **kw})


def test_streamed_splits_shapes_and_stats(tmp_path):
    write_imagefolder(tmp_path / "img", per_class=20)
    d = build_data(cfg(tmp_path / "img"))
    assert isinstance(d.train, FolderSplit) and d.class_names == ["cat", "dog", "fox"]
    assert (len(d.train), len(d.val), len(d.test)) == (40, 8, 12)  # 60 -> 20% test -> 15% of 48 (ceil) val
    assert torch.bincount(torch.tensor(d.test.dataset.labels)).tolist() == [4, 4, 4]  # stratified
    x, y = next(iter(d.train.batches(64, torch.Generator().manual_seed(0))))
    assert x.shape == (40, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)  # standardized with train stats
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    assert d.train.num_batches(16) == 3 and d.input_shape == (3, 16, 16)


def test_streamed_equals_in_memory(tmp_path):
    write_imagefolder(tmp_path / "img")
    streamed = build_data(cfg(tmp_path / "img", grayscale=True))
    memory = build_data(cfg(tmp_path / "img", grayscale=True, on_device=True))
    assert isinstance(memory.train, TensorSplit) and memory.input_shape == (1, 16, 16)
    xs = torch.cat([x for x, _ in streamed.test.batches(5)])
    assert torch.allclose(xs, memory.test.x, atol=1e-5)
    assert torch.allclose(streamed.norm["std"], memory.norm["std"], atol=1e-4)


def test_shuffle_follows_the_generator_and_workers_agree(tmp_path):
    write_imagefolder(tmp_path / "img")
    plain = build_data(cfg(tmp_path / "img", num_workers=0))
    workers = build_data(cfg(tmp_path / "img", num_workers=1))
    assert workers.train.loader(8).persistent_workers and workers.train.workers == 1
    ys = [torch.cat([y for _, y in d.train.batches(8, torch.Generator().manual_seed(3))]) for d in (plain, workers)]
    assert torch.equal(ys[0], ys[1])
    assert not torch.equal(ys[0], torch.cat([y for _, y in plain.train.batches(8, torch.Generator().manual_seed(4))]))
    assert torch.equal(torch.cat([y for _, y in plain.train.batches(8)]), torch.tensor(plain.train.dataset.labels))


def test_separate_val_and_test_folders(tmp_path):
    write_imagefolder(tmp_path / "train", per_class=10)
    write_imagefolder(tmp_path / "val", per_class=3, seed=1)
    write_imagefolder(tmp_path / "test", classes=("cat", "fox"), per_class=2, seed=2)
    d = build_data(cfg(tmp_path / "train", val_dir=str(tmp_path / "val"), test_dir=str(tmp_path / "test")))
    assert (len(d.train), len(d.val), len(d.test)) == (30, 9, 4)
    assert d.test.dataset.labels == [0, 0, 2, 2]  # labels follow the training folder's class list
    write_imagefolder(tmp_path / "odd", classes=("cat", "wolf"), per_class=1)
    with pytest.raises(ConfigError, match=r"data.val_dir=.* has class folders \['wolf'\]"):
        build_data(cfg(tmp_path / "train", val_dir=str(tmp_path / "odd")))


def test_corrupt_image_error_or_skip(tmp_path):
    write_imagefolder(tmp_path / "img")
    bad = tmp_path / "img" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ConfigError, match=f"{bad} is not a readable image .*data.bad_images=skip"):
        build_data(cfg(tmp_path / "img"))
    d = build_data(cfg(tmp_path / "img", bad_images="skip"))
    assert len(d.train) + len(d.val) + len(d.test) == 36
    assert all(bad not in s.dataset.files for s in (d.train, d.val, d.test))


@pytest.mark.parametrize("kw,match", [
    ({"root": None}, "data.root is not set"),
    ({"root": "/nonexistent/x"}, "is not a directory"),
    ({"normalize": "zca"}, "data.on_device=true to load the images"),
    ({"bad_images": "ignore"}, "data.bad_images='ignore' is not valid"),
])
def test_mistakes_are_one_sentence(tmp_path, kw, match):
    write_imagefolder(tmp_path / "img", per_class=4)
    c = cfg(tmp_path / "img")
    for k, v in kw.items():
        setattr(c, k, v)
    with pytest.raises(ConfigError, match=match):
        build_data(c)


def test_augmentation_runs_in_the_training_workers_only(tmp_path):
    write_imagefolder(tmp_path / "img")
    d = build_data(cfg(tmp_path / "img", normalize="none"))
    assert attach(d, [{"invert": {"p": 1.0}}]) is None  # nothing to do on the device
    assert d.train.dataset.transform is not None and d.val.dataset.transform is None
    assert d.test.dataset.transform is None
    aug = torch.cat([x for x, _ in d.train.batches(8)])
    d.train.dataset.transform = None
    plain = torch.cat([x for x, _ in d.train.batches(8)])
    assert torch.allclose(aug, 1 - plain, atol=1e-6)


@pytest.mark.slow
def test_train_one_epoch_streamed_with_workers_and_augmentation(tmp_path):
    write_imagefolder(tmp_path / "img", per_class=16)
    r = run_cli("train", "data=imagefolder", f"data.root={tmp_path / 'img'}", "data.num_workers=1",
                "data.image_size=[16,16]", "augment=standard", "model=mlp", "trainer.epochs=2",
                f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and 0.0 <= summary["test_acc"] <= 1.0
    ck = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert ck["input_shape"] == [3, 16, 16] and ck["class_names"] == ["cat", "dog", "fox"]
    assert ck["norm"]["mean"].shape == (3,)
