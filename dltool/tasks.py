"""The four tasks a run can have, declared once (torch-free): the losses that fit each, its targets, its metrics.

A run's task comes from its data: data=arrays and data=csv read `data.task` (the user says what the targets
are), every built-in data set declares its own (digits: classification, diabetes: regression, breast_cancer:
binary). Nothing is guessed from the values: targets that do not fit the task, a loss that does not fit it or
a head whose size does not fit the targets is one sentence before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dltool.errors import ConfigError


@dataclass(frozen=True)
class Task:
    doc: str
    losses: tuple[str, ...]  # loss.name values that fit the task
    metrics: tuple[str, ...]  # validation/test metrics recorded every epoch (without the val_/test_ prefix)
    train_acc: bool = True  # whether training records an accuracy (train_acc)
    targets: str = ""  # what data=arrays/csv targets must look like (for the error sentences)


TASKS: dict[str, Task] = {
    "classification": Task("one class per example (softmax over C classes)",
                           ("cross_entropy", "hinge", "squared_hinge", "mse", "bce"),
                           ("loss", "acc", "macro_f1", "balanced_acc", "auroc"),
                           targets="integer class numbers 0..K-1 or strings, shape (N,)"),
    "binary": Task("yes/no per example: one logit, sigmoid, decision at trainer.threshold", ("bce",),
                   ("loss", "acc", "precision", "recall", "f1", "auroc", "ap"),
                   targets="0 or 1 (CSV also true/false), shape (N,)"),
    "multilabel": Task("any set of K labels per example: one logit per label, sigmoid each", ("bce",),
                       ("loss", "acc", "micro_f1", "macro_f1", "auroc", "ap"),
                       targets="a 0/1 matrix of shape (N, K) (CSV: several label columns, or one column of "
                               "delimited tags such as cat|dog)"),
    "regression": Task("real-valued targets: one output per target, standardized on the training split",
                       ("mse", "l1", "huber", "smooth_l1"), ("loss", "mae", "rmse", "r2"), train_acc=False,
                       targets="real numbers, shape (N,) or (N, K)"),
}

# what each metric is called in tables, and the one metric a one-line report shows per task
LABELS = {"loss": "loss", "acc": "accuracy", "macro_f1": "macro-F1", "micro_f1": "micro-F1",
          "balanced_acc": "balanced accuracy", "auroc": "AUROC", "precision": "precision", "recall": "recall",
          "f1": "F1", "ap": "average precision", "mae": "MAE", "rmse": "RMSE", "r2": "R²"}
HEADLINE = {"classification": "acc", "binary": "auroc", "multilabel": "macro_f1", "regression": "r2"}

# metrics where a higher value is better (trainer.mode=max); the rest (losses, errors) are better lower
HIGHER_IS_BETTER = {"acc", "macro_f1", "micro_f1", "balanced_acc", "auroc", "precision", "recall", "f1", "ap", "r2"}


# built-in data sets whose targets are not classes (the rest are classification); data=arrays/csv read data.task
DATASET_TASKS = {"diabetes": "regression", "breast_cancer": "binary"}


def config_task(data: dict) -> str:
    """The task of a run from its data config (plain dict): data.task where the data set reads it, else the
    data set's own task."""
    name = str(data.get("name", ""))
    task = DATASET_TASKS.get(name) or str(data.get("task") or "classification")
    task_of(task)
    return task


def task_of(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"data.task={name!r} is not a task; valid: {', '.join(TASKS)}.")
    return TASKS[name]


def recorded(task: str, has_val: bool = True) -> list[str]:
    """Every metric name a run of this task logs each epoch (what trainer.monitor may name)."""
    t = task_of(task)
    out = ["train_loss"] + (["train_acc"] if t.train_acc else [])
    return out + ([f"val_{m}" for m in t.metrics] if has_val else [])


def check_loss(task: str, loss: str) -> None:
    """A loss that does not fit the task: one sentence naming the ones that do."""
    t = task_of(task)
    if loss not in t.losses:
        raise ConfigError(f"loss.name={loss} does not fit the task {task} ({t.doc}); valid losses for {task}: "
                          f"{', '.join(t.losses)}.")


def check_mixing(task: str, loss: str, input_shape: tuple, mixup_alpha: object, cutmix_alpha: object) -> None:
    """MixUp/CutMix mix integer class labels into soft targets over C classes (torchvision's implementations), so
    they need task=classification and a loss that reads soft targets (cross_entropy); CutMix pastes boxes: images."""
    for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ConfigError(f"augment.{key}={value!r} is not valid; use a Beta concentration > 0 (e.g. "
                              f"{0.2 if key == 'mixup_alpha' else 1.0}) or 0 (off).")
    key = "cutmix_alpha" if cutmix_alpha else "mixup_alpha"
    value = cutmix_alpha or mixup_alpha
    if not value:
        return
    if task != "classification":
        raise ConfigError(f"augment.{key}={value} mixes one-hot class targets, so it needs task=classification "
                          f"(this run's task is {task}: mixed {'label sets' if task == 'multilabel' else 'targets'} "
                          f"are a different method); turn it off (augment.{key}=0).")
    if loss != "cross_entropy":
        raise ConfigError(f"augment.{key}={value} trains on soft (mixed) targets, which loss.name={loss} cannot read; "
                          f"use loss=cross_entropy or turn it off (augment.{key}=0).")
    if cutmix_alpha and (len(input_shape) != 3 or min(input_shape[1:]) < 2):
        raise ConfigError(f"augment.cutmix_alpha={cutmix_alpha} pastes boxes between images, but this data's input "
                          f"is {'x'.join(map(str, input_shape))} (not C x H x W); use augment.mixup_alpha instead.")


def check_monitor(task: str, monitor: str, mode: str, has_val: bool) -> None:
    """trainer.monitor names a metric this task records; trainer.mode fits its direction."""
    valid = recorded(task, has_val)
    if not has_val and monitor.startswith("val_") and monitor in recorded(task):
        raise ConfigError(f"trainer.monitor={monitor!r} needs a validation split, but data.val_fraction=0 leaves "
                          f"none; monitor one of {', '.join(valid)} instead.")
    if monitor not in valid:
        raise ConfigError(f"trainer.monitor={monitor!r} is not recorded for the task {task}; valid: "
                          f"{', '.join(valid)}.")
    if mode not in ("min", "max"):
        raise ConfigError(f"trainer.mode={mode!r} is not valid; use min (losses, errors) or max (accuracy, F1, "
                          f"AUROC, R², ...).")
    higher = monitor.split("_", 1)[1] in HIGHER_IS_BETTER
    if mode != ("max" if higher else "min"):
        raise ConfigError(f"trainer.monitor={monitor} is better when {'higher' if higher else 'lower'}, but "
                          f"trainer.mode={mode}; set trainer.mode={'max' if higher else 'min'}.")


def gaussian_huber(delta: float, steps: int = 4000) -> float:
    """E[huber_delta(y)] for y ~ N(0, 1), by the midpoint rule on [-8, 8]."""
    h, total = 16.0 / steps, 0.0
    for i in range(steps):
        y = -8.0 + (i + 0.5) * h
        a = abs(y)
        total += (0.5 * y * y if a < delta else delta * (a - 0.5 * delta)) * math.exp(-0.5 * y * y)
    return total * h / math.sqrt(2 * math.pi)
