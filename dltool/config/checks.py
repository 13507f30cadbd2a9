"""Value checks of the typed config: every number finite and in range, every name safe, before anything is built.

One table of (key, test, what is valid); the first failing key gets one sentence. Only keys the chosen
variant reads are checked (the others are never used).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from dltool import plugins
from dltool.config.variants import SELECTOR, VARIANTS, variants
from dltool.errors import ConfigError
from dltool.registry import closest, unknown
from dltool.tasks import check_loss, check_monitor, config_task, recorded


def num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bounded(test: Callable[[Any], bool], **bounds: Any) -> Callable[[Any], bool]:
    """The test, carrying its range as JSON Schema keywords (minimum, exclusiveMaximum, ...) for `dltool schema`."""
    test.bounds = bounds  # type: ignore[attr-defined]
    return test


def at_least(low: float) -> Callable[[Any], bool]:
    return bounded(lambda v: num(v) and v >= low, minimum=low)


def above(low: float) -> Callable[[Any], bool]:
    return bounded(lambda v: num(v) and v > low, exclusiveMinimum=low)


def between(low: float, high: float, closed: bool = False) -> Callable[[Any], bool]:
    return bounded(lambda v: num(v) and low <= v and (v <= high if closed else v < high),
                   minimum=low, **({"maximum": high} if closed else {"exclusiveMaximum": high}))


def optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return bounded(lambda v: v is None or test(v), **getattr(test, "bounds", {}))


def pair(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    items = getattr(test, "bounds", {})
    return bounded(lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(test(x) for x in v),
                   minItems=2, maxItems=2, **({"items": items} if items else {}))


def safe_name(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and not re.search(r"[/\\\x00]", v) and v not in (".", "..")


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (safe_name, "a plain name without '/', '\\' or '..' (it becomes part of the run directory's name)"),
    "optimizer.lr": (at_least(0), "a finite number >= 0, e.g. 1e-3"),
    "optimizer.weight_decay": (at_least(0), "a finite number >= 0"),
    "optimizer.momentum": (between(0, 1), "a number in [0, 1), e.g. 0.9"),
    "optimizer.betas": (pair(between(0, 1)), "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "optimizer.eps": (above(0), "a small positive number, e.g. 1e-8"),
    "optimizer.alpha": (between(0, 1, closed=True), "a number in [0, 1], e.g. 0.99"),
    "scheduler.step_size": (at_least(1), "a whole number of epochs >= 1"),
    "scheduler.gamma": (above(0), "a positive factor, e.g. 0.1"),
    "scheduler.milestones": (lambda v: all(num(m) and m >= 0 for m in v), "a list of epochs >= 0, e.g. [15, 25]"),
    "scheduler.min_lr": (at_least(0), "a finite number >= 0"),
    "scheduler.factor": (between(0, 1), "a factor in (0, 1), e.g. 0.1"),
    "scheduler.patience": (at_least(0), "a whole number of epochs >= 0"),
    "scheduler.max_lr": (optional(above(0)), "null or a positive learning rate"),
    "scheduler.pct_start": (bounded(lambda v: num(v) and 0 < v < 1, exclusiveMinimum=0, exclusiveMaximum=1),
                            "a share in (0, 1), e.g. 0.3"),
    "scheduler.warmup_epochs": (at_least(0), "a whole number of epochs >= 0"),
    "scheduler.warmup_start_factor": (bounded(lambda v: num(v) and 0 < v <= 1, exclusiveMinimum=0, maximum=1),
                                      "a factor in (0, 1], e.g. 0.1"),
    "loss.label_smoothing": (between(0, 1), "a number in [0, 1), e.g. 0.1"),
    "loss.margin": (above(0), "a positive number, e.g. 1.0"),
    "init.gain": (above(0), "a positive scale (0 gives all-zero weights, which never break the symmetry)"),
    "init.std": (above(0), "a positive standard deviation, e.g. 0.01 (0 gives all-zero weights)"),
    "init.scale": (above(0), "a positive half-width, e.g. 0.05 (0 gives all-zero weights)"),
    "init.bias": (num, "a finite number, e.g. 0.0"),
    "regularization.l2": (at_least(0), "a finite number >= 0, e.g. 1e-4"),
    "regularization.l1": (at_least(0), "a finite number >= 0, e.g. 1e-5"),
    "regularization.clip_grad_norm": (optional(above(0)), "null or a positive norm, e.g. 1.0"),
    "regularization.clip_grad_value": (optional(above(0)), "null or a positive value, e.g. 0.5"),
    "data.val_fraction": (between(0, 1), "a share in [0, 1), e.g. 0.15"),
    "data.test_fraction": (between(0, 1), "a share in [0, 1), e.g. 0.2"),
    "data.subset": (optional(at_least(1)), "null or a positive number of training examples"),
    "data.num_classes": (optional(at_least(2)), "null or at least 2 classes"),
    "data.points_per_class": (at_least(1), "a positive number of points"),
    "data.noise": (at_least(0), "a finite number >= 0"),
    "data.length": (at_least(1), "a positive number of time steps"),
    "data.num_samples": (at_least(2), "a number of sequences >= 2"),
    "data.image_size": (optional(pair(at_least(1))), "null or [height, width] in pixels, e.g. [32, 32]"),
    "data.num_workers": (optional(at_least(0)), "null or a number of worker processes >= 0"),
    "data.memory_cap_mb": (at_least(0), "a finite number of MiB >= 0 (data larger than it is streamed from disk)"),
    "data.whiten_eps": (above(0), "a small positive number, e.g. 0.01"),
    "data.pca_components": (optional(at_least(1)), "null or a positive number of components"),
    "trainer.epochs": (at_least(1), "a whole number >= 1"),
    "trainer.batch_size": (at_least(1), "a whole number >= 1"),
    "trainer.accumulate": (at_least(1), "a whole number >= 1"),
    "trainer.threads": (optional(at_least(1)), "null or a number of CPU threads >= 1"),
    "trainer.patience": (optional(at_least(0)), "null (never stop early) or a number of epochs >= 0 "
                                                "(0: stop at the first epoch without improvement)"),
    "trainer.min_delta": (at_least(0), "a finite number >= 0"),
    "trainer.start_from_epoch": (at_least(0), "a whole number of epochs >= 0"),
    "trainer.stopping_threshold": (optional(num), "null or a finite number"),
    "trainer.divergence_threshold": (optional(num), "null or a finite number"),
    "trainer.mode": (lambda v: v in ("min", "max"), "min (losses) or max (accuracies)"),
    "trainer.devices": (at_least(1), "a whole number of processes >= 1 (1: one process, no data parallelism)"),
}


def in_use(cfg: dict, key: str) -> bool:
    """Whether a dotted key is read by the chosen variant of its group (other keys are never checked)."""
    group, _, leaf = key.partition(".")
    if group not in VARIANTS:
        return True
    variant = str(cfg.get(group, {}).get(SELECTOR[group]))
    return leaf in variants(group).get(variant, ())


def check_values(cfg: dict) -> None:
    """Raise one ConfigError for the first key whose value is out of range (cfg: the resolved plain dict)."""
    for key, (test, valid) in RULES.items():
        group, _, leaf = key.partition(".")
        node = cfg.get(group) if leaf else cfg
        value = node.get(leaf or key) if isinstance(node, dict) else None
        if (leaf and not isinstance(node, dict)) or not in_use(cfg, key):
            continue
        if not test(value):
            raise ConfigError(f"{key}={value!r} is not valid: use {valid}.")
    for i, act in enumerate(cfg.get("regularization", {}).get("activity") or []):
        for k in ("l1", "l2"):
            if not at_least(0)(act.get(k, 0.0)):
                raise ConfigError(f"regularization.activity[{i}].{k}={act.get(k)!r} is not valid: use a finite "
                                  f"number >= 0.")
    check_task(cfg)


def check_plugin_names(trainer: dict) -> None:
    """trainer.metrics and trainer.callbacks name plug-in entries (never paths): checked before any run dir exists."""
    for key, group in (("metrics", "metrics"), ("callbacks", "callbacks")):
        for i, item in enumerate(trainer.get(key) or []):
            name = next(iter(item), None) if isinstance(item, dict) and len(item) == 1 else item
            if isinstance(name, str) and name not in plugins.table(group):
                raise unknown(f"trainer.{key}[{i}]", name, plugins.table(group))


def check_task(cfg: dict) -> None:
    """The run's task (data.task, or the data set's own), the loss that must fit it and the monitored metric."""
    data, trainer = cfg.get("data") or {}, cfg.get("trainer") or {}
    task = config_task(data)
    if "loss" in cfg and isinstance(cfg["loss"], dict) and "name" in cfg["loss"]:
        own = plugins.get("losses", cfg["loss"]["name"])
        if own is None:
            check_loss(task, str(cfg["loss"]["name"]))
        elif task is not None and task not in own.tasks:
            raise ConfigError(f"loss.name={own.name} (plug-in from {own.where}) does not fit the task {task}; it "
                              f"declares tasks {', '.join(own.tasks)}.")
    check_plugin_names(trainer)
    monitor, valid = trainer.get("monitor"), recorded(task) + [f"val_{m}" for m in trainer.get("metrics") or []]
    if monitor not in valid:
        guess = closest(str(monitor), valid)
        hint = f" Did you mean '{guess}'?" if guess else ""
        raise ConfigError(f"trainer.monitor={monitor!r} is not a logged metric of the task {task}.{hint} "
                          f"Valid: {', '.join(valid)}.")
    if monitor in recorded(task):  # a plug-in metric's direction is trainer.mode, as the user set it
        check_monitor(task, monitor, trainer.get("mode", "min"), True)
