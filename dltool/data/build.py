"""build_data: load a data set by name, split it, normalize with training statistics, place it on the device."""

from __future__ import annotations

from typing import Callable

import torch

from dltool.config.schema import DataConfig
from dltool.data.datasets import arrays, embedded, folder, synthetic, table, vision
from dltool.data.normalize import apply_norm, fit_norm
from dltool.data.splits import DataBundle, RawData, TensorSplit, make_splits, relayout
from dltool.errors import ConfigError
from dltool.registry import lookup

DATASETS: dict[str, Callable[[DataConfig], RawData | DataBundle]] = {
    "digits": embedded.load_digits,
    "digits_rows": synthetic.load_digits_rows,
    "spiral": synthetic.load_spiral,
    "adding": synthetic.load_adding,
    "recall": synthetic.load_recall,
    "mnist": vision.load_mnist,
    "fashion_mnist": vision.load_fashion_mnist,
    "cifar10": vision.load_cifar10,
    "cifar100": vision.load_cifar100,
    "imagefolder": folder.load_imagefolder,
    "arrays": arrays.load_arrays,
    "csv": table.load_csv,
}
DATASET_DOCS: dict[str, str] = {
    "digits": "scikit-learn's 8x8 handwritten digits, 1,797 images, 10 classes (embedded, offline)",
    "digits_rows": "the same digits read row by row: sequences of 8 steps x 8 features (layout sequence)",
    "spiral": "K-class 2-D spiral (points_per_class, noise, num_classes=3) for MLP vs linear experiments",
    "adding": "adding problem: (value, marker) steps, is the sum of the 2 marked values > 1? (length, num_samples)",
    "recall": "delayed recall: name the symbol seen at step 0 after length-1 distractor steps (length, num_classes)",
    "mnist": "MNIST handwritten digits, 60,000 + 10,000 28x28 grayscale, 10 classes (torchvision; root, download)",
    "fashion_mnist": "Fashion-MNIST clothing, 60,000 + 10,000 28x28 grayscale, 10 classes (torchvision)",
    "cifar10": "CIFAR-10, 50,000 + 10,000 32x32 RGB, 10 classes (torchvision; root, download)",
    "cifar100": "CIFAR-100, 50,000 + 10,000 32x32 RGB, 100 fine classes (torchvision; root, download)",
    "imagefolder": "your images in root/<class>/*.png|jpg (image_size, grayscale, val_dir, test_dir, bad_images)",
    "arrays": "your NumPy arrays: path=FILE.npz (x, y, x_val, ...) or a folder of x.npy, y.npy (layout, memory_cap_mb)",
    "csv": "your table: path=FILE.csv with a header, label=COLUMN (numbers or strings), features=[...] (or the rest)",
}



def build_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataBundle:
    """Load, split (stratified, seeded), normalize with train statistics and place on the device."""
    loaded = lookup(DATASETS, cfg.name, "data.name")(cfg)
    if isinstance(loaded, DataBundle):  # streamed folder data: the loader built its own splits and stats
        return loaded
    raw = relayout(loaded, cfg.layout)
    s = make_splits(raw, cfg)
    norm = fit_norm(s["train"][0], cfg.normalize, raw.layout, cfg)
    dev = torch.device(device) if cfg.on_device else torch.device("cpu")

    def place(pair: tuple[torch.Tensor, torch.Tensor]) -> TensorSplit:
        x, y = pair
        return TensorSplit(apply_norm(x, norm).contiguous().to(dev), y.to(dev))

    train = place(s["train"])
    num_classes = len(raw.class_names)
    if cfg.num_classes is not None and cfg.num_classes != num_classes:
        raise ConfigError(f"data.num_classes={cfg.num_classes} but the data set {cfg.name!r} has {num_classes} "
                          f"classes; remove the key or set it to {num_classes}.")
    if cfg.input_shape is not None and tuple(cfg.input_shape) != tuple(train.x.shape[1:]):
        raise ConfigError(f"data.input_shape={list(cfg.input_shape)} but the data set {cfg.name!r} gives "
                          f"{list(train.x.shape[1:])} per example; remove the key (it is for `dltool summary`).")
    layout = "features" if norm.get("kind") == "pca" else raw.layout  # PCA turns images into vectors
    return DataBundle(train, place(s["val"]) if "val" in s else None, place(s["test"]) if "test" in s else None,
                      tuple(train.x.shape[1:]), num_classes, raw.class_names, norm, layout, raw.feature_names)
