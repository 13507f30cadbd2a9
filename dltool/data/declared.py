"""Each built-in data set's example shape and number of classes (outputs), declared once.

`dltool summary` only needs the input shape and the class count, so for these data sets it reads them here
instead of loading and splitting the data (scikit-learn's import alone is ~2 s; MNIST/CIFAR would need their
files). `tests/test_summary_declared.py` checks every entry against what `build_data` really gives.
Keys that change the shape or need the data to be checked (layout, pca/zca, image_size, grayscale, subset,
folds, a data.num_classes that disagrees) make `declared` return None: the data set is loaded as before.
"""

from __future__ import annotations

from dltool import plugins
from dltool.config.schema import DataConfig

# name: ((one example's shape), classes; 1 for the one target of diabetes/breast_cancer)
SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "diabetes": ((10,), 1),
    "breast_cancer": ((30,), 1),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}
SHAPE_KEEPING_NORMS = ("none", "mean", "standardize")


def declared(cfg: DataConfig) -> tuple[tuple[int, ...], int] | None:
    """(input shape, classes) of data.name when it is built in and no key changes or checks them; else None."""
    if cfg.name not in SHAPES or plugins.get("datasets", cfg.name) is not None:
        return None
    if cfg.layout is not None or cfg.normalize not in SHAPE_KEEPING_NORMS or cfg.image_size or cfg.grayscale:
        return None
    if cfg.subset is not None or cfg.folds is not None or cfg.fold is not None:  # checked against the data
        return None
    shape, classes = SHAPES[cfg.name]
    if cfg.num_classes is not None and cfg.num_classes != classes:  # build_data names the mismatch
        return None
    return shape, classes
