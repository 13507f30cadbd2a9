"""`imagefolder`: the user's own images in root/<class_name>/*.png|jpg.

Every file is checked once up front (PIL verify), so a corrupt image fails before training with its path
(data.bad_images=error, the default) or is left out with a warning (data.bad_images=skip).
Splits: data.val_dir / data.test_dir (same <class_name>/ layout) where given, else stratified splits.

data.on_device=false (default for this data set): images stream from disk through a torch DataLoader with
worker processes (persistent, data.num_workers or one per spare CPU core); training-split augmentation
runs in those workers with torchvision.transforms.v2. data.on_device=true decodes every image once
(through the same workers) and uses the fast in-memory tensor path, like MNIST. data.cache=true keeps
streaming the first epoch through the workers but keeps each decoded image; once a whole pass is decoded,
later epochs read them from memory (same shuffle draws, so same batches), if they fit in data.memory_cap_mb.
A split with per-image augmentation (the training split under augment ops) is never cached: its images
change every epoch.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from dltool.config.schema import DataConfig
from dltool.data.datasets.images import image_size
from dltool.data.normalize import apply_norm
from dltool.data.splits import DataBundle, RawData, make_splits
from dltool.data.validate import open_image
from dltool.errors import ConfigError

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def scan(folder: Path, key: str, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of folder/<class>/*; classes from the folder names (sorted) unless given."""
    if not folder.is_dir():
        raise ConfigError(f"{key}={str(folder)!r} is not a directory; expected {key}/<class_name>/*.png|jpg.")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = classes if classes is not None else found
    if not found:
        raise ConfigError(f"{key}={str(folder)!r} has no class sub-folders; expected {key}/<class_name>/*.png|jpg.")
    if classes is found and len(found) < 2:
        raise ConfigError(f"{key}={str(folder)!r} has one class folder ({found[0]}); a classifier needs at least two "
                          f"classes: add a folder per class, e.g. {key}/cat and {key}/dog.")
    extra = sorted(set(found) - set(classes))
    if extra:
        raise ConfigError(f"{key}={str(folder)!r} has class folders {extra} that data.root does not have; "
                          f"valid classes: {', '.join(classes)}.")
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((folder / c).glob("*")) if (folder / c).is_dir() else []:
            if f.suffix.lower() in EXTENSIONS:
                files.append(f)
                labels.append(i)
    if not files:
        raise ConfigError(f"{key}={str(folder)!r} holds no images ({', '.join(EXTENSIONS)}) in its class folders.")
    return files, labels, classes


def check_images(files: list[Path], labels: list[int], policy: str) -> tuple[list[Path], list[int]]:
    """PIL-verify every file; a bad one raises (bad_images=error) or is dropped with a warning (skip)."""
    if policy not in ("error", "skip"):
        raise ConfigError(f"data.bad_images={policy!r} is not valid; use error or skip.")
    keep_f, keep_l, bad = [], [], []
    for f, lab in zip(files, labels):
        try:
            with Image.open(f) as im:
                im.verify()
            if f.suffix.lower() in (".jpg", ".jpeg"):  # verify does not decode JPEG data: a truncated file passes it
                open_image(f, "RGB")
        except Exception as ex:  # noqa: BLE001 - PIL raises many types for broken files
            if policy == "error":
                why = "truncated or corrupt JPEG data" if isinstance(ex, ConfigError) else type(ex).__name__
                raise ConfigError(f"{f} is not a readable image ({why}); fix or delete it, or set "
                                  f"data.bad_images=skip to leave such files out.") from None
            bad.append(f)
            continue
        keep_f.append(f)
        keep_l.append(lab)
    if bad:
        log.warning("left out %d unreadable image(s) (data.bad_images=skip): %s", len(bad), ", ".join(map(str, bad)))
    return keep_f, keep_l


class ImageFiles(Dataset):
    """Decode, convert (L or RGB), resize, to float (C, H, W) in [0, 1]; then the optional transform."""

    def __init__(self, files: list[Path], labels: list[int], size: tuple[int, int], grayscale: bool):
        self.files, self.labels, self.size, self.grayscale = files, labels, size, grayscale
        self.transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as im:
            im = im.convert("L" if self.grayscale else "RGB").resize(self.size[::-1], Image.BILINEAR)
            x = TF.to_dtype(TF.pil_to_tensor(im), torch.float32, scale=True)  # (C, H, W) in [0, 1]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


class EpochSampler(Sampler):
    """In order, or a permutation drawn from the trainer's generator at the start of each epoch."""

    def __init__(self, n: int):
        self.n, self.generator = n, None
        self.order: list[int] = []  # the last pass's order (the batches' indices, for the cache)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if self.generator is None:
            self.order = list(range(self.n))
        else:
            self.order = torch.randperm(self.n, generator=self.generator).tolist()
        return iter(self.order)


def default_workers() -> int:
    """One worker per spare core (at most 8); 0 (main process) on a single-core machine."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))


class FolderSplit:
    """A Split (see dltool.data) streaming images from disk through a DataLoader with workers."""

    def __init__(self, dataset: ImageFiles, workers: int, norm: dict | None = None, cache_mb: float = 0.0):
        self.dataset, self.workers, self.norm = dataset, workers, norm or {"kind": "none"}
        self.sampler = EpochSampler(len(dataset))
        self.loaders: dict[int, DataLoader] = {}
        self.cache_mb = cache_mb  # data.cache: the memory budget for the decoded images (0: no cache)
        self.memory: torch.Tensor | None = None  # (N, C, H, W) decoded images, once one whole pass filled it
        self.labels = torch.tensor(dataset.labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self.dataset) // batch_size)

    def loader(self, batch_size: int) -> DataLoader:
        if batch_size not in self.loaders:  # built once and kept: persistent workers live across epochs
            self.loaders[batch_size] = DataLoader(
                self.dataset, batch_size=batch_size, sampler=self.sampler, num_workers=self.workers,
                persistent_workers=self.workers > 0, pin_memory=torch.cuda.is_available())
        return self.loaders[batch_size]

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple]:
        if self.memory is not None:  # data.cache, after the first whole pass
            yield from self.memory_batches(batch_size, generator)
            return
        self.sampler.generator = generator  # shuffled for training, in order for evaluation
        store = self.cache_store()
        for k, (x, y) in enumerate(self.loader(batch_size)):
            if store is not None:
                store[self.sampler.order[k * batch_size:k * batch_size + len(x)]] = x
            yield apply_norm(x, self.norm), y  # x: (N, C, H, W)
        self.memory = store  # reached only when the pass ran to its end

    def cache_store(self) -> torch.Tensor | None:
        """An empty (N, C, H, W) tensor to decode into, when data.cache is on, fits the budget and nothing
        per-image random (augmentation) runs in the workers."""
        if self.cache_mb <= 0 or self.dataset.transform is not None:
            return None
        shape = (len(self.dataset), 1 if self.dataset.grayscale else 3, *self.dataset.size)
        need_mb = math.prod(shape) * 4 / 2 ** 20
        if need_mb > self.cache_mb:
            log.warning("data.cache: the decoded images need %.0f MiB, more than data.memory_cap_mb=%s; streaming "
                        "them from disk every epoch instead", need_mb, self.cache_mb)
            self.cache_mb = 0.0  # say it once
            return None
        return torch.empty(shape)

    def memory_batches(self, batch_size: int, generator: torch.Generator | None) -> Iterator[tuple]:
        """The cached images, in the order the sampler would draw (same generator draws, same batches)."""
        n = len(self.labels)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield apply_norm(self.memory[idx], self.norm), self.labels[idx]


def collect(files: list[Path], labels: list[int], cfg: DataConfig, size: tuple[int, int]) -> torch.Tensor:
    """Decode all images once (through the workers) into one (N, C, H, W) tensor."""
    split = FolderSplit(ImageFiles(files, labels, size, cfg.grayscale), workers_for(cfg, len(files)))
    return torch.cat([x for x, _ in split.batches(256)])


def workers_for(cfg: DataConfig, n: int) -> int:
    workers = default_workers() if cfg.num_workers is None else cfg.num_workers
    if workers < 0:
        raise ConfigError(f"data.num_workers={workers} must be 0 (load in the main process) or more.")
    return min(workers, max(n // 64, 0)) if cfg.num_workers is None else workers  # tiny folders: no workers


def gather(cfg: DataConfig) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[Path], list[str]]:
    """Index tensors per available split (into one file list) + the file list + the class names."""
    if not cfg.root:
        raise ConfigError("data.root is not set; imagefolder needs data.root=PATH with PATH/<class_name>/*.png|jpg.")
    files, labels, classes = scan(Path(cfg.root).expanduser(), "data.root")
    files, labels = check_images(files, labels, cfg.bad_images)
    parts = {"main": (files, labels)}
    for split, d in (("val", cfg.val_dir), ("test", cfg.test_dir)):
        if d:
            f, lab, _ = scan(Path(d).expanduser(), f"data.{split}_dir", classes)
            parts[split] = check_images(f, lab, cfg.bad_images)
    all_files, splits, start = [], {}, 0
    for split, (f, lab) in parts.items():
        splits[split] = (torch.arange(start, start + len(f)), torch.tensor(lab, dtype=torch.int64))
        all_files += f
        start += len(f)
    main = splits.pop("main")
    splits["train" if "test" in splits else "all"] = main
    return splits, all_files, classes


def load_imagefolder(cfg: DataConfig) -> RawData | DataBundle:
    size = image_size(cfg) or (32, 32)
    splits, files, classes = gather(cfg)
    if cfg.on_device:  # decode once, then the in-memory path of dltool.data.build_data
        raw = {k: (collect([files[i] for i in idx.tolist()], y.tolist(), cfg, size), y)
               for k, (idx, y) in splits.items()}
        return RawData(raw, classes, "image")
    if cfg.sampler not in (None, "none"):
        raise ConfigError(f"data.sampler={cfg.sampler} draws from examples held in memory, but data.on_device=false "
                          f"streams the images from disk; set data.on_device=true or weigh the loss "
                          f"(loss.class_weights=balanced).")
    s = make_splits(RawData(splits, classes, "image"), cfg)
    workers = workers_for(cfg, len(files))

    def split(name: str, norm: dict | None = None) -> FolderSplit:
        idx, y = s[name]
        return FolderSplit(ImageFiles([files[i] for i in idx.tolist()], y.tolist(), size, cfg.grayscale), workers, norm,
                           cfg.memory_cap_mb if cfg.cache else 0.0)

    norm = stream_norm(split("train"), cfg.normalize)
    train = split("train", norm)
    channels = 1 if cfg.grayscale else 3
    return DataBundle(train, split("val", norm) if "val" in s else None, split("test", norm) if "test" in s else None,
                      (channels, *size), len(classes), classes, norm, "image")


def stream_norm(train: FolderSplit, kind: str) -> dict:
    """Per-channel mean (and std) of the training images, in one streamed pass (no augmentation)."""
    if kind == "none":
        return {"kind": "none"}
    if kind not in ("mean", "standardize"):
        raise ConfigError(f"data.normalize={kind!r} with streamed folder data is not supported; use none, mean or "
                          f"standardize, or data.on_device=true to load the images into memory for pca/zca.")
    total = sq = None
    count = 0
    for x, _ in train.batches(256):  # (N, C, H, W)
        s, q = x.sum(dim=(0, 2, 3), dtype=torch.float64), (x.double() ** 2).sum(dim=(0, 2, 3))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = ((sq / count - mean ** 2).clamp_min(0) * count / max(count - 1, 1)).sqrt().clamp_min(1e-6)
    if kind == "mean":
        std = torch.ones_like(std)
    return {"kind": kind, "layout": "image", "mean": mean.float(), "std": std.float()}
