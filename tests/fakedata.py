"""Tiny data set files in each data set's real on-disk format, for loading through the real code paths.

Images carry a class-dependent pattern (a bright row at 2*label + noise) so models can learn from them,
and the exact pixel values are returned so tests can check the round trip.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def patterned(n: int, classes: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, *shape) with shape (..., H, W) or (H, W, C), and int labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    x = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    h = shape[0] if len(shape) == 2 or shape[-1] == 3 else shape[1]
    rows = (2 * labels) % h
    if len(shape) == 3 and shape[-1] == 3:  # HWC
        x[np.arange(n), rows, :, :] = 250
    else:
        x[np.arange(n), rows, :] = 250
    return x, labels


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """MNIST's IDX format (big-endian header: magic with the dimension count, then each size), gzipped."""
    magic = 0x0800 | array.ndim  # 0x08 = unsigned byte
    header = struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 120, n_test: int = 40) -> dict:
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n, seed in (("train", "train", n_train, 0), ("test", "t10k", n_test, 1)):
        x, y = patterned(n, 10, (28, 28), seed)
        write_idx_gz(raw / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx_gz(raw / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
        out[split] = (x, y)
    return out


def cifar_batch(n: int, classes: int, seed: int, label_key: str) -> tuple[dict, np.ndarray, np.ndarray]:
    x, y = patterned(n, classes, (32, 32, 3), seed)  # HWC
    data = x.transpose(0, 3, 1, 2).reshape(n, 3072)  # CIFAR rows: 1024 red, 1024 green, 1024 blue
    entry = {"batch_label": "fake", label_key: y.tolist(), "data": data, "filenames": [f"{i}.png" for i in range(n)]}
    return entry, x, y


def dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, n_per_batch: int = 20, n_test: int = 40) -> dict:
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for b in range(1, 6):
        entry, x, y = cifar_batch(n_per_batch, 10, b, "labels")
        dump(d / f"data_batch_{b}", entry)
        xs.append(x)
        ys.append(y)
    entry, xt, yt = cifar_batch(n_test, 10, 9, "labels")
    dump(d / "test_batch", entry)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump(d / "batches.meta", {"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072})
    return {"train": (np.concatenate(xs), np.concatenate(ys)), "test": (xt, yt), "classes": names}


def write_cifar100(root: Path, n_train: int = 300, n_test: int = 100) -> dict:
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, seed in (("train", n_train, 3), ("test", n_test, 4)):
        entry, x, y = cifar_batch(n, 100, seed, "fine_labels")
        entry["coarse_labels"] = (y // 5).tolist()
        dump(d / split, entry)
        out[split] = (x, y)
    names = [f"class{i:02d}" for i in range(100)]
    dump(d / "meta", {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]})
    out["classes"] = names
    return out


def write_imagefolder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 12,
                      size: tuple[int, int] = (20, 16), seed: int = 0, fmt: str = "png") -> Path:
    """root/<class>/<i>.png: RGB images of size (W, H) with a class-dependent bright row."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (Path(root) / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, size=(size[1], size[0], 3), dtype=np.uint8)
            img[(4 * c) % size[1], :, :] = 250
            Image.fromarray(img).save(Path(root) / name / f"{i}.{fmt}")
    return Path(root)
