"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through torchvision's data set classes, held in memory.

Files live under data_root(): data.root, else $DLTOOL_DATA, else ~/.cache/dltool/data (XDG_CACHE_HOME
respected), in exactly torchvision's layout (MNIST/raw/*-ubyte, cifar-10-batches-py/data_batch_1, ...).
A download goes to a temporary folder first and is moved into the root only when it succeeded, so an
offline run leaves nothing behind. MNIST's .gz files placed by hand in MNIST/raw/ are unpacked first.
The CIFAR classes skip torchvision's md5 check of the *extracted* batch files (the archive's md5 is
still checked on download), so files written in the real format by other tools (or tests) load too.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import torch
from torchvision import datasets as tvd

from dltool.config.schema import DataConfig
from dltool.data.datasets.images import fit_images
from dltool.data.splits import RawData
from dltool.errors import ConfigError


def data_root(cfg: DataConfig) -> Path:
    """data.root, else $DLTOOL_DATA, else <user cache>/dltool/data."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    if os.environ.get("DLTOOL_DATA"):
        return Path(os.environ["DLTOOL_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dltool" / "data"


def _no_md5(files: list) -> list:
    return [[name, None] for name, _ in files]


class CIFAR10(tvd.CIFAR10):
    train_list, test_list = _no_md5(tvd.CIFAR10.train_list), _no_md5(tvd.CIFAR10.test_list)
    meta = {**tvd.CIFAR10.meta, "md5": None}


class CIFAR100(tvd.CIFAR100):
    train_list, test_list = _no_md5(tvd.CIFAR100.train_list), _no_md5(tvd.CIFAR100.test_list)
    meta = {**tvd.CIFAR100.meta, "md5": None}


# name -> (torchvision class, folder under the root, files a user could place there by hand)
VISION: dict[str, tuple[type, str, str]] = {
    "mnist": (tvd.MNIST, "MNIST/raw", "train-images-idx3-ubyte.gz and the 3 other .gz files"),
    "fashion_mnist": (tvd.FashionMNIST, "FashionMNIST/raw", "train-images-idx3-ubyte.gz and the 3 other .gz files"),
    "cifar10": (CIFAR10, "cifar-10-batches-py", "the extracted cifar-10-python.tar.gz"),
    "cifar100": (CIFAR100, "cifar-100-python", "the extracted cifar-100-python.tar.gz"),
}


def unpack_gz(folder: Path) -> None:
    """MNIST-style *.gz placed by hand: write the unpacked file beside each (torchvision reads those)."""
    if not folder.is_dir():
        return
    for gz in folder.glob("*.gz"):
        target = gz.with_suffix("")
        if not target.exists():
            with gzip.open(gz, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def download(name: str, cls: type, root: Path) -> None:
    """Download into a temporary folder and move the result into root only on success."""
    old_timeout = socket.getdefaulttimeout()
    with tempfile.TemporaryDirectory(prefix="dltool-download-") as tmp:
        try:
            socket.setdefaulttimeout(60)  # a silently dropped connection fails instead of hanging
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                cls(tmp, train=False, download=True)
        except Exception as ex:  # noqa: BLE001 - any network/archive failure becomes one sentence
            raise ConfigError(missing_message(name, root, f"downloading them failed ({reason(ex)})")) from None
        finally:
            socket.setdefaulttimeout(old_timeout)
        root.mkdir(parents=True, exist_ok=True)
        for item in Path(tmp).iterdir():
            if item.is_dir():
                shutil.copytree(item, root / item.name, dirs_exist_ok=True)


def reason(ex: Exception) -> str:
    """The gist of a download failure: urllib's '<urlopen error ...>' where there is one."""
    m = re.search(r"<urlopen error ([^>]*)>", str(ex))
    return m.group(1) if m else type(ex).__name__


def missing_message(name: str, root: Path, why: str) -> str:
    _, folder, files = VISION[name]
    return (f"data.name={name}: the files are not in {root / folder} and {why}; run once with internet access "
            f"and data.download=true, or put {files} there (data.root or $DLTOOL_DATA choose another root).")


class NotFound(Exception):
    pass


def read(name: str, cls: type, root: Path) -> tuple[dict, list[str]]:
    """Both splits through the torchvision class; NotFound when its files are missing."""
    splits = {}
    try:
        for split, train in (("train", True), ("test", False)):
            ds = cls(str(root), train=train, download=False)
            splits[split] = (to_images(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64))
    except RuntimeError as ex:
        if "not found" in str(ex):
            raise NotFound() from None
        raise ConfigError(unreadable(name, root, ex)) from None
    except Exception as ex:  # noqa: BLE001 - truncated or foreign files: one sentence, not a traceback
        raise ConfigError(unreadable(name, root, ex)) from None
    return splits, [c.split(" - ")[0] for c in ds.classes]  # MNIST's "0 - zero" -> "0"


def unreadable(name: str, root: Path, ex: Exception) -> str:
    return (f"data.name={name}: the files in {root / VISION[name][1]} could not be read ({type(ex).__name__}: "
            f"{str(ex).splitlines()[0] if str(ex) else 'no details'}); delete that folder and download again.")


def load_vision(name: str, cfg: DataConfig) -> RawData:
    cls, folder, _ = VISION[name]
    root = data_root(cfg)
    unpack_gz(root / folder)
    try:
        splits, classes = read(name, cls, root)
    except NotFound:
        if not cfg.download:
            raise ConfigError(missing_message(name, root, "data.download=false")) from None
        download(name, cls, root)
        splits, classes = read(name, cls, root)
    return RawData({k: (fit_images(x, cfg), y) for k, (x, y) in splits.items()}, classes, "image")


def to_images(data) -> torch.Tensor:
    """uint8 (N, H, W) tensor (MNIST) or (N, H, W, C) array (CIFAR) -> float (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(data)
    t = t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0).contiguous()


def load_mnist(cfg: DataConfig) -> RawData:
    return load_vision("mnist", cfg)


def load_fashion_mnist(cfg: DataConfig) -> RawData:
    return load_vision("fashion_mnist", cfg)


def load_cifar10(cfg: DataConfig) -> RawData:
    return load_vision("cifar10", cfg)


def load_cifar100(cfg: DataConfig) -> RawData:
    return load_vision("cifar100", cfg)
