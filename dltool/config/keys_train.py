"""The key table's groups other than data: model, loss, optimizer, scheduler, regularization, init, augment,
trainer and the top-level keys. Each key is declared once; each file of configs/<group>/ listed here is
generated from its Variant (`python scripts/make_configs.py`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from dltool.config.keyspec import MISSING, PLUGIN_OPTIONS, Group, Key, Variant

TOP = Group({
    "name": Key(str, "run", "run name, used in the run directory's name"),
    "resume": Key(Optional[str], None, "a run dir (or last.pt) to continue training from"),
    "extra": Key(Dict[str, Any], {}, "free-form notes copied into config.yaml (not used by dltool)"),
}, doc="top-level keys of train.yaml")

MODEL = Group({
    "name": Key(str, "custom", "model name (used in run names)"),
    "layers": Key(List[Any], [], "the layers in order (see `dltool list layers`); input sizes are inferred"),
    "strict_shapes": Key(bool, True, "refuse convs/pools whose output size is not a whole number"),
    "backbone": Key(Optional[str], None, "a torchvision model name (see `dltool list backbones`) instead of layers"),
    "weights": Key(Optional[str], None, "null (random init) | DEFAULT | a torchvision weight name, e.g. IMAGENET1K_V1"),
    "small_input": Key(bool, False, "resnet/vgg/mobilenet/efficientnet only: keep 32x32 images at full resolution "
                                    "in the stem"),
    "init_from": Key(Optional[str], None, "a previous run dir (its checkpoints/best.pt) or a checkpoint file to "
                                          "load weights from"),
    "reinit": Key(List[str], [], "layers NOT taken from init_from (they start afresh)"),
    "freeze": Key(Any, None, "layers that stay fixed: N (first N layers with parameters) | [names] | pretrained"),
    "pretrained_lr_mult": Key(float, 1.0, "the loaded layers that still learn use this x optimizer.lr"),
    "dropout": Key(Optional[float], None, "a knob layers can read as ${model.dropout} (so sweeps can search it)"),
    "sync_batchnorm": Key(bool, False, "under trainer.devices>1: batch-norm statistics over all ranks' batches"),
}, doc="architecture: an ordered list of layers (configs/model/*.yaml are written by hand)")

LOSS = Group({
    "name": Key(str, "cross_entropy", "see `dltool list losses`"),
    "label_smoothing": Key(float, 0.0, "0 = hard targets; e.g. 0.1 spreads 10% of the target mass over all classes"),
    "margin": Key(float, 1.0, "the desired gap between the correct score and each wrong one"),
    "class_weights": Key(Any, None, "null | balanced (n / (C * count) per class, training split) | [w1, ..., wC]"),
    "pos_weight": Key(Any, None, "null | balanced (negatives / positives per label, training split) | [w per label]"),
    "delta": Key(float, 1.0, "where the loss turns from quadratic to linear (in standard deviations of the target)"),
    "beta": Key(float, 1.0, "where the loss turns from quadratic to linear (in standard deviations of the target)"),
    "options": Key(Optional[Dict[str, Any]], None, PLUGIN_OPTIONS),
}, {
    "cross_entropy": Variant("Softmax cross-entropy on the logits (the softmax classifier's loss).",
                             ("name", "label_smoothing", "class_weights")),
    "hinge": Variant("Multiclass SVM loss (cs231n): sum over wrong classes of max(0, s_j - s_y + margin).",
                     ("name", "margin"), defaults={"name": "hinge"}),
    "squared_hinge": Variant("Multiclass SVM with squared margins (L2-SVM): sum of max(0, s_j - s_y + margin)^2.",
                             ("name", "margin"), defaults={"name": "squared_hinge"}),
    "mse": Variant("Mean squared error: regression (the \"square loss\" on standardized targets), or class scores vs "
                   "one-hot targets.", ("name",), defaults={"name": "mse"}),
    "bce": Variant("Binary / one-vs-all logistic loss (sigmoid per output): task=binary and multilabel (one logit per "
                   "label),\nor a two-class classification with one output unit.", ("name", "pos_weight"),
                   defaults={"name": "bce"}),
    "l1": Variant("Mean absolute error on standardized regression targets (robust to outliers, median-seeking).",
                  ("name",), defaults={"name": "l1"}),
    "huber": Variant("Huber loss on standardized regression targets: squared below delta, linear above (robust to "
                     "outliers).", ("name", "delta"), defaults={"name": "huber"}),
    "smooth_l1": Variant("Smooth L1 loss on standardized regression targets: Huber divided by beta (Fast R-CNN's box "
                         "loss).", ("name", "beta"), defaults={"name": "smooth_l1"}),
}, selector="name", optional=("options",), doc="data loss on the logits")

COUPLED = "coupled L2 added to the gradient"
OPTIMIZER = Group({
    "name": Key(str, "adam", "see `dltool list optimizers`"),
    "lr": Key(float, 1e-3, "learning rate"),
    "momentum": Key(float, 0.0, "optional momentum"),
    "nesterov": Key(bool, False, "Nesterov's look-ahead momentum"),
    "weight_decay": Key(float, 0.0, COUPLED),
    "betas": Key(List[float], [0.9, 0.999], "decay rates of the first and second moment estimates"),
    "eps": Key(float, 1e-8, "numerical stability term"),
    "alpha": Key(float, 0.99, "decay rate of the squared-gradient average"),
}, {
    "sgd": Variant("Stochastic gradient descent with (Nesterov) momentum.",
                   ("name", "lr", "momentum", "nesterov", "weight_decay"),
                   defaults={"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
                   docs={"momentum": "momentum coefficient (0 = plain SGD)",
                         "weight_decay": f"{COUPLED} (same as regularization.l2 for SGD)"}),
    "adam": Variant("Adam: per-parameter step sizes from running moments of the gradient.",
                    ("name", "lr", "betas", "eps", "weight_decay"),
                    docs={"lr": "learning rate (the first knob to tune, on a log scale)",
                          "weight_decay": f"{COUPLED} (prefer regularization.l2 or adamw)"}),
    "adamw": Variant("AdamW: Adam with decoupled weight decay (applied to weights, not biases or norm parameters).",
                     ("name", "lr", "betas", "eps", "weight_decay"), defaults={"name": "adamw", "weight_decay": 1e-2},
                     docs={"betas": "decay rates of the moment estimates",
                           "weight_decay": "decoupled decay: w -= lr * weight_decay * w each step"}),
    "adagrad": Variant("Adagrad: per-parameter step sizes shrinking with the sum of squared gradients.",
                       ("name", "lr", "eps", "weight_decay"), defaults={"name": "adagrad", "lr": 1e-2, "eps": 1e-10}),
    "rmsprop": Variant("RMSprop: step sizes from a leaky average of squared gradients.",
                       ("name", "lr", "alpha", "eps", "momentum", "weight_decay"), defaults={"name": "rmsprop"}),
}, selector="name", doc="update rule and learning rate")

WARMUP = ("warmup_epochs", "warmup_start_factor")
SCHEDULER = Group({
    "name": Key(str, "cosine", "see `dltool list schedulers`"),
    "step_size": Key(int, 10, "epochs between decays"),
    "gamma": Key(float, 0.1, "decay factor"),
    "milestones": Key(List[int], [], "epochs at which the lr drops"),
    "min_lr": Key(float, 0.0, "learning rate at the last epoch"),
    "factor": Key(float, 0.1, "multiply the lr by this"),
    "patience": Key(int, 5, "epochs without improvement before a reduction"),
    "max_lr": Key(Optional[float], None, "peak learning rate (null: 10x optimizer.lr)"),
    "pct_start": Key(float, 0.3, "share of the steps spent rising"),
    "warmup_epochs": Key(int, 0, "linear warmup epochs before the schedule starts"),
    "warmup_start_factor": Key(float, 0.1, "warmup starts at lr * this factor"),
}, {
    "none": Variant("Constant learning rate.", ("name", *WARMUP), defaults={"name": "none"}),
    "step": Variant("Step decay: multiply the learning rate by gamma every step_size epochs.",
                    ("name", "step_size", "gamma", *WARMUP), defaults={"name": "step"}),
    "multistep": Variant("Multiply the learning rate by gamma at each milestone epoch.",
                         ("name", "milestones", "gamma", *WARMUP),
                         defaults={"name": "multistep", "milestones": [15, 25]}),
    "exponential": Variant("Exponential decay: lr * gamma^epoch.", ("name", "gamma", *WARMUP),
                           defaults={"name": "exponential", "gamma": 0.95}, docs={"gamma": "decay factor per epoch"}),
    "cosine": Variant("Cosine annealing from lr down to min_lr over the training epochs (after warmup).",
                      ("name", "min_lr", *WARMUP)),
    "plateau": Variant("Reduce on plateau: lr * factor when the monitored metric (trainer.monitor) stalls.",
                       ("name", "factor", "patience", "min_lr"), defaults={"name": "plateau"},
                       docs={"min_lr": "never go below this"}),
    "onecycle": Variant("One-cycle policy: lr rises to max_lr then anneals, stepped every batch.",
                        ("name", "max_lr", "pct_start"), defaults={"name": "onecycle"}),
}, selector="name", doc="learning-rate schedule (stepped once per epoch)")

# one entry of regularization.activity: a penalty on a layer's output
ACTIVITY = Group({
    "layer": Key(str, MISSING, "the layer whose output is penalized, e.g. fc1"),
    "l1": Key(float, 0.0, "L1 strength on the layer's output"),
    "l2": Key(float, 0.0, "L2 strength on the layer's output"),
}, doc="one entry of regularization.activity")

REG_KEYS = ("l2", "l1", "apply_to_bias", "apply_to_norm", "activity", "clip_grad_norm", "clip_grad_value")
REGULARIZATION = Group({
    "l2": Key(float, 0.0, "L2 strength: adds 0.5 * l2 * sum(w^2) (gradient l2 * w)"),
    "l1": Key(float, 0.0, "L1 strength: adds l1 * sum(|w|)"),
    "apply_to_bias": Key(bool, False, "penalize biases too (textbook: no)"),
    "apply_to_norm": Key(bool, False, "penalize batch-norm scales/shifts too (textbook: no)"),
    "activity": Key(List[Any], [], "penalties on layer outputs, e.g. [{layer: fc1, l1: 1e-5}]"),
    "clip_grad_norm": Key(Optional[float], None, "clip the global gradient norm to this value"),
    "clip_grad_value": Key(Optional[float], None, "clip each gradient element to [-value, value]"),
}, {
    "none": Variant("No explicit penalty (dropout/batch norm live in the model's layers).", REG_KEYS),
    "l2": Variant("L2 weight penalty on weights (not biases or normalization parameters).", REG_KEYS,
                  defaults={"l2": 1e-4}),
}, doc="L2/L1 penalties, activity penalties, gradient clipping")

SYMMETRY = "must not be 0: zero weights never break the symmetry"
INIT = Group({
    "scheme": Key(str, "kaiming_normal", "see `dltool list initializers`"),
    "mode": Key(str, "fan_in", "fan_in (preserves forward variance) or fan_out (backward)", ("fan_in", "fan_out")),
    "nonlinearity": Key(str, "relu", "the activation that follows: relu, leaky_relu, tanh, linear, ..."),
    "std": Key(float, 0.01, "standard deviation of the weights"),
    "scale": Key(float, 0.05, "half-width of the interval (must be positive)"),
    "gain": Key(float, 1.0, "scale factor (must not be 0)"),
    "value": Key(float, 0.0, "init=constant's weight value (refused: constant weights never break the symmetry)"),
    "bias": Key(float, 0.0, "every bias starts at this constant"),
}, {
    "kaiming_normal": Variant("He initialization for ReLU networks: N(0, 2/fan_in).",
                              ("scheme", "mode", "nonlinearity", "bias"),
                              docs={"bias": "every bias starts at this constant (0, or e.g. 0.01 for ReLUs)"}),
    "kaiming_uniform": Variant("He initialization, uniform: U(-b, b), b = sqrt(6/fan) for ReLU networks.",
                               ("scheme", "mode", "nonlinearity", "bias"), defaults={"scheme": "kaiming_uniform"}),
    "xavier_uniform": Variant("Glorot/Xavier initialization for tanh/sigmoid networks: U(-a, a), "
                              "a = gain*sqrt(6/(fan_in+fan_out)).", ("scheme", "gain", "bias"),
                              defaults={"scheme": "xavier_uniform"}, docs={"gain": "scale factor"}),
    "xavier_normal": Variant("Glorot/Xavier initialization, normal: N(0, gain^2 * 2/(fan_in+fan_out)).",
                             ("scheme", "gain", "bias"), defaults={"scheme": "xavier_normal"},
                             docs={"gain": f"scale factor ({SYMMETRY})"}),
    "orthogonal": Variant("A (semi-)orthogonal weight matrix times gain (Saxe et al.), e.g. for recurrent nets.",
                          ("scheme", "gain", "bias"), defaults={"scheme": "orthogonal"}),
    "normal": Variant("Small random numbers: N(0, std^2) (the cs231n starting point; fine for shallow nets).",
                      ("scheme", "std", "bias"), defaults={"scheme": "normal"}),
    "uniform": Variant("Small random numbers: U(-scale, scale).", ("scheme", "scale", "bias"),
                       defaults={"scheme": "uniform"}),
    "default": Variant("PyTorch's own initialization for each layer type (biases included).", ("scheme",),
                       defaults={"scheme": "default"}),
}, selector="scheme", doc="weight initialization (biases get init.bias)")

AUGMENT = Group({
    "ops": Key(List[Any], [], "ordered list of augmentations for the training split"),
    "mixup_alpha": Key(float, 0.0, "MixUp: Beta(alpha, alpha) mixing of batch pairs and their targets (0 = off; "
                                   "e.g. 0.2)"),
    "cutmix_alpha": Key(float, 0.0, "CutMix: pastes a box of another image, targets by area (0 = off; e.g. 1.0; "
                                    "images only)"),
}, {"none": Variant("No augmentation.", ("ops", "mixup_alpha", "cutmix_alpha"))},
    doc="training-time augmentation (the other configs/augment/*.yaml are written by hand)")

TRAINER = Group({
    "epochs": Key(int, 30, "maximum number of passes over the training split"),
    "max_steps": Key(Optional[int], None, "train this many optimizer steps instead of epochs (null: count epochs)"),
    "val_every": Key(Optional[int], None, "validate every N epochs (N steps with max_steps); null: every epoch"),
    "checkpoint_every": Key(Optional[int], None, "write last.pt every N epochs (N steps with max_steps); null: at "
                                                 "each validation"),
    "max_time": Key(Optional[str], None, "time budget \"DD:HH:MM:SS\" or seconds (e.g. 00:02:30:00, 9000); null: "
                                         "none"),
    "save_top_k": Key(Optional[int], None, "also keep the k best checkpoints as epochNNN-<monitor>=<value>.pt (-1: "
                                           "every epoch)"),
    "batch_size": Key(int, 64, "examples per optimizer step"),
    "device": Key(str, "auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps"),
    "seed": Key(int, 0, "seeds weights, shuffling and dropout"),
    "threads": Key(Optional[int], None, "CPU threads for torch (null: torch's default)"),
    "precision": Key(str, "32", "32 | bf16 | 16 (mixed precision where the device supports it)", ("32", "bf16", "16")),
    "compile": Key(bool, False, "torch.compile the model for the training steps (slow first epoch; see "
                                "docs/explanation/speed.md)"),
    "channels_last": Key(bool, False, "model and 4-D image batches in channels_last memory format (fast on GPUs "
                                      "with AMP)"),
    "accumulate": Key(int, 1, "gradient accumulation: optimizer step every N batches"),
    "monitor": Key(str, "val_loss", "metric for best.pt, early stopping and the final test (val_acc, val_r2, "
                                    "train_loss, ...: `dltool list tasks`)"),
    "mode": Key(str, "min", "min for losses, max for accuracies (never guessed)", ("min", "max")),
    "threshold": Key(float, 0.5, "binary/multilabel: predicted probability from which a label counts as positive"),
    "min_delta": Key(float, 0.0, "an improvement must beat the best by more than this"),
    "patience": Key(Optional[int], 10, "stop after this many epochs (validation points with max_steps) without "
                                       "improvement"),
    "stopping_threshold": Key(Optional[float], None, "stop once the monitored metric reaches this value"),
    "divergence_threshold": Key(Optional[float], None, "stop once the monitored metric is worse than this"),
    "start_from_epoch": Key(int, 0, "epochs of warm-up before early stopping starts counting"),
    "baseline": Key(Optional[float], None, "stop if the monitored metric has not beaten this value within "
                                           "`patience` epochs"),
    "min_change": Key(float, 0.0, "stop when the metric improved by less than this per epoch on average ..."),
    "min_change_epochs": Key(Optional[int], None, "... over the last this many epochs (null: off)"),
    "ema_decay": Key(float, 0.0, "EMA of the weights after every step, in [0, 1) (0 = off; 0.999 ~ last 1000 steps); "
                                 "val/best.pt/test use it"),
    "swa_start": Key(Optional[int], None, "stochastic weight averaging from this epoch (1..epochs) to the end; "
                                          "null: off"),
    "swa_lr": Key(Optional[float], None, "SWA: learning rate from swa_start on (> 0; SWALR); null: hold the "
                                         "schedule's"),
    "restore_best_weights": Key(bool, True, "true: the run ends with (and tests) best.pt's weights; false: the last "
                                            "epoch's"),
    "eval_test": Key(bool, True, "evaluate the final weights (see restore_best_weights) on the test split at the end"),
    "progress": Key(bool, True, "progress bar within each epoch (terminals only)"),
    "diagnostics": Key(bool, True, "per-layer signals each epoch (signals.csv, PNGs) and the diagnosis at the end"),
    "loggers": Key(List[str], ["csv", "tensorboard"], "csv: metrics.csv + signals.csv; tensorboard: event files in "
                                                      "the run dir; mlflow"),
    "mlflow_uri": Key(Optional[str], None, "MLflow tracking URI for the mlflow logger (a server, sqlite:///x.db); "
                                           "null: outputs/mlflow.db"),
    "devices": Key(int, 1, "data-parallel processes (DDP): one per GPU, or CPU processes; batch_size is per device"),
    "dist_timeout": Key(float, 300.0, "seconds a rank waits for the others in a collective before the run stops"),
    "callbacks": Key(List[Any], [], "plug-in callbacks: [name, {name: {option: value}}] (`dltool list callbacks`)"),
    "metrics": Key(List[str], [], "plug-in metrics computed on each validation pass, logged as val_NAME "
                                  "(`dltool list metrics`)"),
}, doc="epochs, batch size, device, precision, checkpointing, early stopping", width=30)
TRAINER = Group(TRAINER.keys, {"default": Variant("The training loop, checkpointing and early stopping.",
                                                  tuple(TRAINER.keys))}, doc=TRAINER.doc, width=30)
