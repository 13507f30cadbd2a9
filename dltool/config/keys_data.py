"""The `data` group of the key table: every data set key, declared once, and what each data set reads.

A data set's file (configs/data/<name>.yaml) is generated from its Variant: its keys in file order, the
defaults and docs where they differ from the key's own (`python scripts/make_configs.py`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from dltool.config.keyspec import MISSING, PLUGIN_OPTIONS, Group, Key, Variant

NORMALIZE = ("none", "mean", "standardize", "pca", "zca")

KEYS = {
    "name": Key(str, "digits", "data set (see `dltool list datasets`)"),
    "root": Key(Optional[str], None,
                "folder holding the data set files (null: $DLTOOL_DATA, else ~/.cache/dltool/data)"),
    "download": Key(bool, True, "download the files when they are missing (needs internet once)"),
    "val_fraction": Key(float, 0.15, "share of the non-test examples held out for validation (stratified)"),
    "test_fraction": Key(float, 0.2, "share of all examples held out for the final test (stratified)"),
    "split_seed": Key(int, 0, "seed of the stratified splits"),
    "normalize": Key(str, "standardize", "none | mean | standardize | pca | zca; train split stats only", NORMALIZE),
    "subset": Key(Optional[int], None, "keep only this many training examples (null: all)"),
    "on_device": Key(bool, True, "hold the tensors on the training device (fast path: no DataLoader)"),
    "num_workers": Key(Optional[int], None,
                       "DataLoader worker processes (null: one per spare CPU core, at most 8; 0: none)"),
    "layout": Key(Optional[str], None, "null: the data set's own layout; signal: channels first (C, L) for conv1d"),
    "path": Key(Optional[str], None, "your data file or folder (required: data.path=PATH)"),
    "task": Key(str, "classification", "classification | binary | multilabel | regression: what y holds (see "
                                       "docs/tutorials/tasks.md)",
                ("classification", "binary", "multilabel", "regression")),
    "label": Key(Any, None, "the target column, or a list [a, b] (multilabel 0/1 columns, regression targets)"),
    "label_separator": Key(str, "|", "multilabel with one label column: the delimiter between tags, e.g. cat|dog"),
    "sampler": Key(Optional[str], None, "null: every training example once per epoch | balanced: every class "
                                        "equally often (drawn with replacement)"),
    "features": Key(Optional[List[str]], None,
                    "the feature columns, e.g. [sepal_length, sepal_width] (null: every column but the label)"),
    "input_shape": Key(Optional[List[int]], None,
                       "the shape of one input, e.g. [3, 32, 32], for `dltool summary` without loading data"),
    "memory_cap_mb": Key(float, 1024.0, "a folder's x.npy larger than this is memory-mapped and read batch by batch"),
    "cache": Key(bool, False, "on_device=false: keep the decoded images in memory after the first epoch (no augment)"),
    "image_size": Key(Optional[List[int]], None, "[height, width] to resize to; null keeps the native size"),
    "grayscale": Key(bool, False, "convert to 1 gray channel (luminance)"),
    "val_dir": Key(Optional[str], None,
                   "separate validation folder (null: split val_fraction off the training images)"),
    "test_dir": Key(Optional[str], None, "separate test folder (null: split test_fraction off root)"),
    "bad_images": Key(str, "error", "a file PIL cannot read: error (stop, naming it) | skip (leave it out, with a "
                                    "warning)", ("error", "skip")),
    "num_classes": Key(Optional[int], None, "number of classes (null: from the data)"),
    "options": Key(Optional[Dict[str, Any]], None, PLUGIN_OPTIONS),
    "points_per_class": Key(int, 100, "points generated on each arm"),
    "noise": Key(float, 0.2, "standard deviation of the angle noise (radians); 0 gives clean arms"),
    "length": Key(int, 50, "time steps per sequence (the memory span)"),
    "num_samples": Key(int, 3000, "sequences generated (before the splits)"),
    "pca_components": Key(Optional[int], None, "pca only: keep this many components (null: all)"),
    "whiten_eps": Key(float, 1e-2, "pca/zca only: added to the eigenvalues before the inverse square root"),
    "folds": Key(Optional[int], None, "K-fold cross-validation of train+val (dltool cross-validate)"),
    "fold": Key(Optional[int], None, "which fold (1..folds) validates this run"),
}

# the keys every data set reads, after its own (splits, normalization, placement)
TAIL = ("val_fraction", "test_fraction", "split_seed", "normalize", "pca_components", "whiten_eps", "subset",
        "on_device", "sampler")
VISION_KEYS = ("name", "root", "download", "image_size", "grayscale", "val_fraction", "split_seed", "normalize",
               "pca_components", "whiten_eps", "subset", "on_device", "sampler")
VISION_HEAD = ("Loaded with torchvision; downloaded once into root (default ~/.cache/dltool/data, or $DLTOOL_DATA).\n"
               "The official test set is the test split; validation comes out of the training set (stratified).")
VISION_DOCS = {"val_fraction": "share of the training set held out for validation (stratified)",
               "split_seed": "seed of the validation split",
               "normalize": "none | mean | standardize (per channel) | pca | zca; train split stats only"}
MNIST_DOCS = {**VISION_DOCS, "image_size": "[height, width] to resize to (e.g. [32, 32] for LeNet-5); null keeps 28x28",
              "grayscale": "convert RGB to 1 channel (these images are already grayscale)"}
CIFAR_DOCS = {**VISION_DOCS, "image_size": "[height, width] to resize to; null keeps 32x32",
              "on_device": "hold the tensors on the training device (fast path: no DataLoader; ~0.6 GB float32)"}
GENERATED = {"split_seed": "seeds the generator and the stratified splits"}
PER_FEATURE = "none | mean | standardize (per feature) | pca | zca; train split stats only"
ROWS = {"normalize": PER_FEATURE, "subset": "keep only this many training rows (null: all)"}

VARIANTS = {
    "digits": Variant(
        "scikit-learn's handwritten digits: 1,797 real 8x8 grayscale images, 10 classes; ships with\n"
        "scikit-learn, so it works offline. Split: 20% test, then 15% of the rest for validation.",
        ("name", *TAIL),
        docs={"split_seed": "seed of the stratified splits (fixed, so runs compare on the same split)",
              "normalize": "none | mean (subtract) | standardize (mean/std) | pca | zca; train split stats only"}),
    "diabetes": Variant(
        "scikit-learn's diabetes data (embedded, offline): 442 patients, 10 standardized features (age, sex, bmi,\n"
        "blood pressure, six blood serum values), target: disease progression one year later. Task: regression.",
        ("name", *TAIL), defaults={"name": "diabetes"},
        docs={"val_fraction": "share of the non-test rows held out for validation (random)",
              "test_fraction": "share of all rows held out for the final test (random)",
              "split_seed": "seed of the splits", **ROWS}),
    "breast_cancer": Variant(
        "scikit-learn's Wisconsin breast cancer data (embedded, offline): 569 tumours, 30 features, positive label\n"
        "malignant (212) vs benign (357). Task: binary.",
        ("name", *TAIL), defaults={"name": "breast_cancer"},
        docs={"val_fraction": "share of the non-test rows held out for validation (stratified)",
              "test_fraction": "share of all rows held out for the final test (stratified)", **ROWS}),
    "digits_rows": Variant(
        "scikit-learn's 1,797 8x8 digits read row by row: sequences of 8 time steps with 8 features each,\n"
        "for recurrent nets (lstm/gru take (T, F)); `layout: signal` gives (8 channels, 8 steps) for conv1d.",
        ("name", "layout", *TAIL), defaults={"name": "digits_rows"},
        docs={"layout": "null: (T=8, F=8) sequences; signal: channels-first (F=8, T=8) for conv1d stacks",
              "split_seed": "seed of the stratified splits (the same split as data=digits)", "normalize": PER_FEATURE}),
    "spiral": Variant(
        "cs231n's K-class 2-D spiral: no straight line separates the arms, a small MLP does (~99% train\n"
        "accuracy) and a linear classifier cannot (~50%). Generated from split_seed; nothing to download.",
        ("name", "num_classes", "points_per_class", "noise", *TAIL), defaults={"name": "spiral", "num_classes": 3},
        docs={**GENERATED, "num_classes": "number of spiral arms (classes)"}),
    "adding": Variant(
        "The adding problem as classification: each step is (value in [0,1], marker); two steps are marked, one\n"
        "in each half. Class 1 when the two marked values add up to more than 1. Chance is 50%; beating it\n"
        "means carrying a number across up to `length` steps. Generated from split_seed; nothing to download.",
        ("name", "length", "num_samples", "layout", *TAIL), defaults={"name": "adding", "normalize": "none"},
        docs={**GENERATED, "length": "time steps per sequence (the memory span; try 10, 50, 200)",
              "layout": "null: (T=length, F=2) sequences; signal: (2 channels, length) for conv1d",
              "normalize": "none | mean | standardize | pca | zca (markers are 0/1: none keeps them readable)"}),
    "recall": Variant(
        "Delayed recall: a symbol (one of num_classes, one-hot) at step 0, then length-1 random distractor\n"
        "symbols; the class is the first symbol. Chance is 1/num_classes. Generated from split_seed.",
        ("name", "num_classes", "length", "num_samples", "layout", *TAIL),
        defaults={"name": "recall", "num_classes": 4, "length": 30, "normalize": "none"},
        docs={**GENERATED, "num_classes": "alphabet size = number of classes (inputs have num_classes+1 features)",
              "layout": "null: (T=length, F=num_classes+1) sequences; signal: channels first for conv1d",
              "normalize": "none | mean | standardize | pca | zca (one-hot inputs: none)"}),
    "mnist": Variant("MNIST: 60,000 training + 10,000 test 28x28 grayscale handwritten digits, 10 classes.\n"
                     + VISION_HEAD, VISION_KEYS, defaults={"name": "mnist", "val_fraction": 0.1}, docs=MNIST_DOCS),
    "fashion_mnist": Variant(
        "Fashion-MNIST: 60,000 training + 10,000 test 28x28 grayscale clothing images, 10 classes (harder than "
        "MNIST).\n" + VISION_HEAD, VISION_KEYS, defaults={"name": "fashion_mnist", "val_fraction": 0.1},
        docs=MNIST_DOCS),
    "cifar10": Variant("CIFAR-10: 50,000 training + 10,000 test 32x32 colour images, 10 classes.\n" + VISION_HEAD,
                       VISION_KEYS, defaults={"name": "cifar10", "val_fraction": 0.1}, docs=CIFAR_DOCS),
    "cifar100": Variant("CIFAR-100: 50,000 training + 10,000 test 32x32 colour images, 100 fine classes.\n"
                        + VISION_HEAD, VISION_KEYS, defaults={"name": "cifar100", "val_fraction": 0.1},
                        docs=CIFAR_DOCS),
    "imagefolder": Variant(
        "Your own images: root/<class_name>/*.png|jpg|jpeg|bmp|gif|webp (class names = folder names, sorted).\n"
        "Optional val_dir/test_dir with the same layout; otherwise stratified splits of root.",
        ("name", "root", "val_dir", "test_dir", "image_size", "grayscale", "bad_images", *TAIL[:-1], "cache",
         "memory_cap_mb", "num_workers", "sampler"),
        defaults={"name": "imagefolder", "root": MISSING, "image_size": [32, 32], "on_device": False},
        docs={"root": "the folder holding one sub-folder per class (required: data.root=PATH)",
              "image_size": "[height, width] every image is resized to (bilinear)",
              "grayscale": "true: 1 channel (L), false: 3 channels (RGB)",
              "val_fraction": "share of the non-test images held out for validation (stratified)",
              "test_fraction": "share of all images held out for the final test when test_dir is null",
              "normalize": "none | mean | standardize (per channel); pca | zca need on_device=true",
              "subset": "keep only this many training images (null: all)",
              "on_device": "false: stream from disk through a DataLoader; true: decode once, keep in memory",
              "memory_cap_mb": "cache only: keep them only if they fit in this many MiB (else stream every epoch)"}),
    "arrays": Variant(
        "Your own NumPy arrays: data.path=FILE.npz holding x, y (and optionally x_val, y_val, x_test, y_test,\n"
        "class_names), or data.path=FOLDER holding x.npy, y.npy (and *_val.npy, *_test.npy, class_names.txt).\n"
        "Targets by data.task: classification integers 0..K-1 or strings (sorted, they become the class names);\n"
        "binary 0/1 of shape (N,); multilabel a 0/1 matrix (N, K); regression floats (N,) or (N, K). Inputs stay "
        "float.",
        ("name", "path", "task", "layout", "memory_cap_mb", *TAIL), defaults={"name": "arrays", "path": MISSING},
        docs={"path": "the .npz file or the folder of .npy files (required: data.path=PATH)",
              "layout": "null: from x's shape, (N,F) features | (N,T,F) sequence | (N,C,H,W) image; signal: (N,C,L)",
              "val_fraction": "share of the non-test examples held out for validation when there is no x_val "
                              "(0: none)",
              "test_fraction": "share of all examples held out for the final test when there is no x_test (0: none)",
              "normalize": "none | mean | standardize (per channel/feature) | pca | zca; train split stats only",
              "on_device": "hold the tensors on the training device (in-memory arrays; streamed ones stay on disk)"}),
    "csv": Variant(
        "Your own table: data.path=FILE.csv with a header row and data.label=COLUMN naming the target column\n"
        "(classification: numbers or strings, the distinct values, sorted, become the class names; binary: two\n"
        "values; multilabel: several 0/1 columns or one column of delimited tags; regression: numbers, one column\n"
        "or several). Every other column is a numeric feature, or choose them with data.features=[col1,col2].\n"
        "A missing or non-numeric cell is an error.",
        ("name", "path", "task", "label", "label_separator", "features", *TAIL),
        defaults={"name": "csv", "path": MISSING, "label": MISSING},
        docs={"path": "the CSV file (required: data.path=PATH)",
              "task": "classification | binary | multilabel | regression: what the label column(s) hold",
              "val_fraction": "share of the non-test rows held out for validation (stratified; 0: none)",
              "test_fraction": "share of all rows held out for the final test (stratified; 0: none)",
              "normalize": PER_FEATURE, "subset": "keep only this many training rows (null: all)"}),
}

# folds/fold: cross-validation; input_shape, num_classes: the shapes for `dltool summary` without loading data
DATA = Group(KEYS, VARIANTS, selector="name", optional=("folds", "fold", "input_shape", "num_classes", "options"),
             doc="data set, splits and normalization")
