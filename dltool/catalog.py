"""Every registry, declared in one torch-free module (mmengine's registry/root.py style).

One literal table per kind; each entry is one small record: its builder ("module:function", resolved with
importlib only when something is built), a one-line doc, and the option keys it reads (config keys: from
the key table, dltool/config/keys.py; layers and augmentations: their own option defaults). `dltool list` and
`--help` read these tables without importing torch. Names come only from these literals: nothing a user
writes can name a module to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from dltool.config.keys import GROUPS, reads
from dltool.registry import Entry
from dltool.tasks import gaussian_huber


@dataclass(frozen=True)
class Layer(Entry):
    """A layer type: builder (params, input shape, ctx) -> (module, output shape)."""

    primary: str | None = None  # `fc: 120` is shorthand for `fc: {units: 120}`
    prefix: str = ""  # name stem in summaries: conv1, relu1, pool1, ...


@dataclass(frozen=True)
class Augmentation(Entry):
    """An augmentation op: builder (batch, options, generator) -> batch; v2 (options) -> a v2 transform."""

    v2: str = ""  # "module:function" for folder data (torchvision.transforms.v2, per image in the workers)
    image_only: bool = True


@dataclass(frozen=True)
class Loss(Entry):
    """A data loss: builder (LossConfig) -> (logits, y) -> loss; `expected` the textbook loss at init."""

    expected: Callable[[int, float], float] | None = None  # (num_classes, margin) -> loss with scores ~ 0


@dataclass(frozen=True)
class Scheduler(Entry):
    """A learning-rate schedule: builder (optimizer, SchedulerConfig, ScheduleContext) -> torch scheduler."""

    interval: str = "epoch"  # when it steps: epoch | step (every optimizer step) | plateau (on the metric)


E = TypeVar("E", bound=Entry)


def keyed(group: str, table: dict[str, E]) -> dict[str, E]:
    """The table with each entry's `keys` from the key table (dltool/config/keys.py): what its variant reads."""
    return {name: replace(e, keys=reads(group, name)) if name in GROUPS[group].files else e
            for name, e in table.items()}


LAY, BLD = "dltool.models.layers", "dltool.models.builder"
CONV = {"filters": None, "kernel": 3, "stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True}
RNN = {"hidden": None, "layers": 1, "bidirectional": False, "dropout": 0.0, "return": "last"}

LAYERS: dict[str, Layer] = {
    "conv": Layer(f"{LAY}:build_conv", "2-D convolution; padding: int, [h, w], valid or same", defaults=CONV,
                  primary="filters", prefix="conv"),
    "pool": Layer(f"{LAY}:build_pool", "max/avg pooling; stride defaults to kernel (overlapping when stride < kernel)",
                  defaults={"kind": "max", "kernel": 2, "stride": None, "padding": 0}, primary="kernel", prefix="pool"),
    "global_avg_pool": Layer(f"{LAY}:build_gap", "mean over all positions: CxHxW (CxL, CxTxHxW) -> C", prefix="gap"),
    "flatten": Layer(f"{LAY}:build_flatten", "CxHxW -> C*H*W", prefix="flatten"),
    "fc": Layer(f"{LAY}:build_fc", "fully connected; units: a number or num_classes",
                defaults={"units": None, "bias": True}, primary="units", prefix="fc"),
    "dropout": Layer(f"{LAY}:build_dropout", "inverted dropout: zero units with probability p in training",
                     defaults={"p": 0.5}, primary="p", prefix="dropout"),
    "batchnorm": Layer(f"{LAY}:build_batchnorm", "batch normalization; 1d/2d/3d picked from the input shape",
                       defaults={"eps": 1e-5, "momentum": 0.1}, prefix="bn"),
    "relu": Layer(f"{LAY}:build_relu", "max(0, x)", prefix="relu"),
    "leaky_relu": Layer(f"{LAY}:build_leaky_relu", "max(slope*x, x)", defaults={"slope": 0.01}, primary="slope",
                        prefix="lrelu"),
    "elu": Layer(f"{LAY}:build_elu", "exponential linear unit", defaults={"alpha": 1.0}, primary="alpha", prefix="elu"),
    "tanh": Layer(f"{LAY}:build_tanh", "tanh(x)", prefix="tanh"),
    "sigmoid": Layer(f"{LAY}:build_sigmoid", "1 / (1 + exp(-x))", prefix="sigmoid"),
    "gelu": Layer(f"{LAY}:build_gelu", "Gaussian error linear unit", prefix="gelu"),
    "maxout": Layer(f"{LAY}:build_maxout", "max over groups of `pieces` channels/units", defaults={"pieces": 2},
                    primary="pieces", prefix="maxout"),
    "softmax": Layer(f"{LAY}:build_softmax", "final layer only, for readability (the loss works on logits)",
                     prefix="softmax"),
    "conv1d": Layer(f"{LAY}:build_conv1d",
                    "1-D convolution over CxL; padding: int, valid, same or causal (WaveNet, with dilation)",
                    defaults=CONV, primary="filters", prefix="conv"),
    "conv3d": Layer(f"{LAY}:build_conv3d",
                    "3-D convolution over CxTxHxW volumes; kernel/stride/padding: int or [t, h, w]",
                    defaults={k: v for k, v in CONV.items() if k != "groups"}, primary="filters", prefix="conv"),
    "locally_connected": Layer(f"{LAY}:build_local", "like conv, but untied: its own filters at every output position",
                               defaults={k: v for k, v in CONV.items() if k not in ("dilation", "groups")},
                               primary="filters", prefix="local"),
    "rnn": Layer(f"{LAY}:build_rnn", "Elman RNN over TxF; return: last | mean | max | sequence",
                 defaults={**RNN, "nonlinearity": "tanh"}, primary="hidden", prefix="rnn"),
    "lstm": Layer(f"{LAY}:build_lstm",
                  "LSTM over TxF: hidden, layers, bidirectional, dropout; return: last | mean | max | sequence",
                  defaults=RNN, primary="hidden", prefix="lstm"),
    "gru": Layer(f"{LAY}:build_gru", "GRU over TxF; same options as lstm", defaults=RNN, primary="hidden",
                 prefix="gru"),
    "transpose": Layer(f"{LAY}:build_transpose", "TxF sequence <-> FxT signal (for conv1d over time)",
                       prefix="transpose"),
    "rows": Layer(f"{LAY}:build_rows", "read an image row by row: CxHxW -> TxF with T=H, F=C*W", prefix="rows"),
    "gated": Layer(f"{LAY}:build_gated", "WaveNet gate: tanh(first half of channels) * sigmoid(second half)",
                   prefix="gate"),
}

ALIASES: dict[str, str] = {
    "dense": "fc", "linear": "fc", "inner_product": "fc", "fully_connected": "fc",
    "conv2d": "conv", "convolution": "conv", "maxpool": "pool", "max_pool": "pool",
    "batch_norm": "batchnorm", "bn": "batchnorm", "gap": "global_avg_pool",
    "local": "locally_connected", "locally_connected2d": "locally_connected", "simple_rnn": "rnn",
    "vanilla_rnn": "rnn", "gate": "gated",
}

# Blocks nest a layer list; builder: Builder method (self, params, shape, out, prefix, depth, where, is_last) -> shape.
BLOCKS: dict[str, Layer] = {
    "repeat": Layer(f"{BLD}:Builder.build_repeat",
                    "{n: N, layers: [...]} - the layer list N times (names keep counting)",
                    keys=("n", "layers")),
    "residual": Layer(f"{BLD}:Builder.build_residual",
                      "{layers: [...]} - x + f(x); a 1x1 conv (or fc) projects the shortcut when shapes differ",
                      keys=("layers", "projection"), prefix="res"),
    "branches": Layer(f"{BLD}:Builder.build_branches",
                      "[[...], [...], ...] - parallel paths over the same input, outputs concatenated on the "
                      "channel axis (Inception); spatial sizes must agree", prefix="br"),
}

# --------------------------------------------------------------------------- losses, optimizers, schedules
LOS = "dltool.train.losses"
LOSSES: dict[str, Loss] = keyed("loss", {
    "cross_entropy": Loss(f"{LOS}:cross_entropy", "softmax + negative log-likelihood; label_smoothing, class_weights",
                          expected=lambda c, m: math.log(c)),
    "hinge": Loss(f"{LOS}:hinge", "multiclass SVM, sum of max(0, s_j - s_y + margin); margin (default 1)",
                  expected=lambda c, m: (c - 1) * m),
    "squared_hinge": Loss(f"{LOS}:squared_hinge", "multiclass SVM with squared margins (L2-SVM); margin",
                          expected=lambda c, m: (c - 1) * m ** 2),
    "mse": Loss(f"{LOS}:mse", "mean squared error: regression targets, or class scores vs one-hot targets",
                expected=lambda c, m: 1.0 / c),
    "bce": Loss(f"{LOS}:bce", "logistic loss per output (sigmoid): binary, multilabel; pos_weight",
                expected=lambda c, m: math.log(2.0)),
    "l1": Loss(f"{LOS}:l1", "mean absolute error (regression)", expected=lambda c, m: math.sqrt(2 / math.pi)),
    "huber": Loss(f"{LOS}:huber", "Huber: squared below delta, linear above (regression)",
                  expected=lambda c, m: gaussian_huber(1.0)),
    "smooth_l1": Loss(f"{LOS}:smooth_l1", "smooth L1 = Huber / beta (regression)",
                      expected=lambda c, m: gaussian_huber(1.0)),
})

OPT = "dltool.train.optim"
OPTIMIZERS: dict[str, Entry] = keyed("optimizer", {
    "sgd": Entry(f"{OPT}:sgd", "stochastic gradient descent; weight_decay coupled (added to the gradient)"),
    "adam": Entry(f"{OPT}:adam", "Adam; weight_decay coupled L2"),
    "adamw": Entry(f"{OPT}:adamw", "Adam with decoupled weight decay (Loshchilov & Hutter)"),
    "adagrad": Entry(f"{OPT}:adagrad", "Adagrad: per-parameter lr from the summed squared gradients"),
    "rmsprop": Entry(f"{OPT}:rmsprop", "RMSprop; alpha is the decay rate of the squared-gradient average"),
})

SCHEDULERS: dict[str, Scheduler] = keyed("scheduler", {
    "none": Scheduler(f"{OPT}:constant", "constant learning rate"),
    "step": Scheduler(f"{OPT}:step", "lr * gamma every step_size epochs"),
    "multistep": Scheduler(f"{OPT}:multistep", "lr * gamma at each epoch in milestones"),
    "exponential": Scheduler(f"{OPT}:exponential", "lr * gamma^epoch"),
    "cosine": Scheduler(f"{OPT}:cosine", "cosine annealing from lr down to min_lr over the epochs"),
    "plateau": Scheduler(f"{OPT}:plateau",
                         "lr * factor when the monitored metric has not improved for `patience` epochs",
                         interval="plateau"),
    "onecycle": Scheduler(f"{OPT}:onecycle",
                          "one cycle up to max_lr and down, stepped every batch (pct_start of it rising)",
                          interval="step"),
})

INI = "dltool.models.init"
INITIALIZERS: dict[str, Entry] = keyed("init", {
    "xavier_uniform": Entry(f"{INI}:xavier_uniform", "U(-a, a), a = gain*sqrt(6/(fan_in+fan_out)) (Glorot)"),
    "xavier_normal": Entry(f"{INI}:xavier_normal", "N(0, gain^2 * 2/(fan_in+fan_out)) (Glorot)"),
    "kaiming_uniform": Entry(f"{INI}:kaiming_uniform", "He uniform; mode fan_in/fan_out, nonlinearity "
                             "relu/leaky_relu/tanh/linear"),
    "kaiming_normal": Entry(f"{INI}:kaiming_normal", "N(0, 2/fan) for ReLU nets (He et al.)"),
    "normal": Entry(f"{INI}:normal", "N(0, std^2), e.g. std 0.01 (small random numbers)"),
    "uniform": Entry(f"{INI}:uniform", "U(-scale, scale)"),
    "orthogonal": Entry(f"{INI}:orthogonal", "a (semi-)orthogonal matrix times gain"),
    "constant": Entry(f"{INI}:constant", "every weight = value (non-zero only: zero weights never break symmetry)",
                      ("value",)),
    "default": Entry(f"{INI}:keep_default", "PyTorch's own initialization for each layer type"),
})  # constant is no variant (init.scheme=constant is refused): its key stays here

# --------------------------------------------------------------------------- data
DAT = "dltool.data.datasets"
DATASETS: dict[str, Entry] = keyed("data", {
    "digits": Entry(f"{DAT}.embedded:load_digits",
                    "scikit-learn's 8x8 handwritten digits, 1,797 images, 10 classes (embedded, offline)"),
    "diabetes": Entry(f"{DAT}.embedded:load_diabetes",
                      "scikit-learn's diabetes progression, 442 rows, 10 features; task regression (embedded)"),
    "breast_cancer": Entry(f"{DAT}.embedded:load_breast_cancer",
                           "scikit-learn's breast cancer, 569 rows, 30 features, 212 malignant; task binary"),
    "digits_rows": Entry(f"{DAT}.synthetic:load_digits_rows",
                         "the same digits read row by row: sequences of 8 steps x 8 features (layout sequence)"),
    "spiral": Entry(f"{DAT}.synthetic:load_spiral", "K-class 2-D spiral for MLP vs linear experiments"),
    "adding": Entry(f"{DAT}.synthetic:load_adding",
                    "adding problem: (value, marker) steps, is the sum of the 2 marked values > 1?"),
    "recall": Entry(f"{DAT}.synthetic:load_recall",
                    "delayed recall: name the symbol seen at step 0 after length-1 distractor steps"),
    "mnist": Entry(f"{DAT}.vision:load_mnist",
                   "MNIST handwritten digits, 60,000 + 10,000 28x28 grayscale, 10 classes (torchvision)"),
    "fashion_mnist": Entry(f"{DAT}.vision:load_fashion_mnist",
                           "Fashion-MNIST clothing, 60,000 + 10,000 28x28 grayscale, 10 classes (torchvision)"),
    "cifar10": Entry(f"{DAT}.vision:load_cifar10", "CIFAR-10, 50,000 + 10,000 32x32 RGB, 10 classes (torchvision)"),
    "cifar100": Entry(f"{DAT}.vision:load_cifar100",
                      "CIFAR-100, 50,000 + 10,000 32x32 RGB, 100 fine classes (torchvision)"),
    "imagefolder": Entry(f"{DAT}.folder:load_imagefolder", "your images in root/<class>/*.png|jpg"),
    "arrays": Entry(f"{DAT}.arrays:load_arrays",
                    "your NumPy arrays: a .npz (x, y, x_val, ...) or a folder of x.npy, y.npy (+ _val, _test)"),
    "csv": Entry(f"{DAT}.table:load_csv", "your table: a CSV with a header and target column(s) (data.task)"),
})

AUG = "dltool.data.augment"
AUGMENTATIONS: dict[str, Augmentation] = {
    "translate": Augmentation(f"{AUG}:translate", "random translation: pad by `pad` pixels (fill zeros|reflect|"
                              "replicate), random crop back", defaults={"pad": 4, "fill": "zeros", "p": 1.0},
                              v2=f"{AUG}:v2_translate"),
    "hflip": Augmentation(f"{AUG}:hflip", "mirror left-right", defaults={"p": 0.5}, v2=f"{AUG}:v2_hflip"),
    "vflip": Augmentation(f"{AUG}:vflip", "mirror top-bottom", defaults={"p": 0.5}, v2=f"{AUG}:v2_vflip"),
    "rotate": Augmentation(f"{AUG}:affine", "rotation by up to +-degrees (or a range: two numbers low, high)",
                           defaults={"degrees": 15.0, "scale": 1.0, "translate": 0.0, "shear": 0.0, "p": 1.0},
                           v2=f"{AUG}:v2_affine"),
    "affine": Augmentation(f"{AUG}:affine", "scaling range (low, high), translation (+- fraction of the size), "
                           "rotation and shear (+- degrees)",
                           defaults={"degrees": 0.0, "scale": [0.9, 1.1], "translate": 0.1, "shear": 0.0, "p": 1.0},
                           v2=f"{AUG}:v2_affine"),
    "jitter": Augmentation(f"{AUG}:jitter", "brightness and contrast factors drawn from [1-v, 1+v]",
                           defaults={"brightness": 0.2, "contrast": 0.2, "p": 1.0}, v2=f"{AUG}:v2_jitter"),
    "invert": Augmentation(f"{AUG}:invert", "colour inversion: 1 - x", defaults={"p": 0.5}, v2=f"{AUG}:v2_invert"),
    "blur": Augmentation(f"{AUG}:blur", "Gaussian blur: odd kernel size, sigma range (low, high)",
                         defaults={"kernel": 5, "sigma": [0.1, 1.5], "p": 0.5}, v2=f"{AUG}:v2_blur"),
    "noise": Augmentation(f"{AUG}:noise", "additive Gaussian noise with standard deviation std (any layout)",
                          defaults={"std": 0.05, "p": 1.0}, v2=f"{AUG}:v2_noise", image_only=False),
    "erase": Augmentation(f"{AUG}:erase", "random erasing (occlusion): a box of area fraction scale and aspect ratio "
                          "set to value", defaults={"scale": [0.02, 0.2], "ratio": [0.3, 3.3], "value": 0.0, "p": 0.5},
                          v2=f"{AUG}:v2_erase"),
}

# --------------------------------------------------------------------------- torchvision backbones (model.backbone)
BCK = "dltool.models.backbones"
RESNET = Entry(f"{BCK}:adapt_resnet", "torchvision ResNet: head fc; small_input: 3x3 stride-1 conv1, no stem max pool",
               ("weights", "small_input"))
VGG = Entry(f"{BCK}:adapt_vgg", "torchvision VGG: head classifier.6; small_input: global pooling before the classifier",
            ("weights", "small_input"))
FEATURES_CLASSIFIER = Entry(f"{BCK}:adapt_features_classifier", "torchvision MobileNet/EfficientNet: head "
                            "classifier[-1]; small_input: stride-1 stem", ("weights", "small_input"))
GENERIC = Entry(f"{BCK}:adapt_generic", "any other torchvision classifier (alexnet, vit, ...): its last 1000-way "
                "layer gets num_classes outputs, its first conv C channels", ("weights",))
# model.backbone takes any classification model of the installed torchvision's registry (`dltool list backbones`
# asks torchvision for the names); the name's prefix picks the family whose adapter fits its head and stem.
BACKBONE_FAMILIES: dict[str, Entry] = {"resnet": RESNET, "vgg": VGG, "features_classifier": FEATURES_CLASSIFIER,
                                       "generic": GENERIC}
BACKBONE_PREFIXES = {"resnet": "resnet", "resnext": "resnet", "wide_resnet": "resnet", "vgg": "vgg",
                     "mobilenet": "features_classifier", "efficientnet": "features_classifier"}


def backbone_family(name: str) -> str:
    """The adapter family of a torchvision model name (resnet50 -> resnet, alexnet -> generic)."""
    return next((f for p, f in BACKBONE_PREFIXES.items() if name.startswith(p)), "generic")


# `dltool list NAME`: every table by the name the command takes (the layer table includes BLOCKS).
REGISTRIES: dict[str, dict[str, Entry]] = {
    "layers": {**LAYERS, **BLOCKS}, "losses": LOSSES, "optimizers": OPTIMIZERS, "schedulers": SCHEDULERS,
    "initializers": INITIALIZERS, "datasets": DATASETS, "augmentations": AUGMENTATIONS, "backbones": BACKBONE_FAMILIES,
}
