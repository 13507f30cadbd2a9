"""`dltool <command>`: the only place that parses argv.

Hydra commands (train, ...) first compose the config once with Hydra's compose API, so a mistake gets
one sentence before any run directory exists, then hand the same arguments to a @hydra.main app
(run dirs, multirun sweeps, launchers).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from dltool.errors import ConfigError


# --------------------------------------------------------------------------- commands
def cmd_train(args: list[str]) -> int:
    """Train a model from a YAML config (+ key=value overrides; -m for a Hydra multirun sweep)."""
    from dltool.config.compose import compose, launch, split_args
    from dltool.config.schema import validate

    name, extra_dir, overrides = split_args(args, "train")
    multirun = any(a in ("-m", "--multirun") for a in overrides)
    validate(compose(name, extra_dir, overrides))
    from dltool.commands.train import train_task
    from dltool.train.distributed import rank_overrides

    overrides += rank_overrides()  # ranks > 0 of an external torchrun write nothing (no run dir, no log)

    if not multirun:
        launch(lambda cfg: train_task(cfg, multirun), name, extra_dir, overrides, "train")
        return 0
    from dltool.commands.sweep import discard_if_empty, plan, quiet_plugins
    from dltool.commands.sweep_report import report
    from dltool.console import note
    from dltool.train.search import trial_reporter

    sweep = plan(name, extra_dir, overrides)
    quiet_plugins()
    for line in [f"sweep dir: {sweep.sweep_dir}", *sweep.notes]:
        note(line)
    try:
        launch(lambda cfg: train_task(cfg, multirun, trial_reporter), name, extra_dir, overrides + sweep.overrides,
               "train")
    finally:
        discard_if_empty(sweep)
    report(sweep.sweep_dir)
    return 0


def cmd_sweep_report(args: list[str]) -> int:
    """Rank the jobs of a `train -m` sweep: table, sweep.csv, sweep.png, edge-of-range warnings."""
    if len(args) != 1 or args[0].startswith("-"):
        raise ConfigError("usage: dltool sweep-report SWEEP_DIR (the sweep dir `dltool train -m` printed).")
    from dltool.commands.sweep_report import report

    report(Path(args[0]))
    return 0


def cmd_summary(args: list[str]) -> int:
    """Print the model table: output shape, parameters, activation memory and mult-adds per layer."""
    from dltool.commands.summary import summary_task
    from dltool.config.compose import train_config

    return summary_task(train_config(args))


def cmd_list(args: list[str]) -> int:
    """List a registry: layers, losses, optimizers, schedulers, initializers, datasets, augmentations (or all)."""
    from dltool.commands.list import list_task

    return list_task(args)


def take_options(args: list[str], options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Pull `--name VALUE` / `--name=VALUE` options (typed like their defaults) out of the arguments."""
    rest, values = [], dict(options)
    it = iter(args)
    for a in it:
        key, _, inline = a.partition("=")
        name = key[2:].replace("-", "_") if key.startswith("--") else None
        if name not in options:
            rest.append(a)
            continue
        raw = inline if inline else next(it, None)
        try:
            if raw is None or raw.startswith("--"):
                raise ValueError(raw)
            values[name] = type(options[name])(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} needs a value like {options[name]!r}, got {raw!r}.") from None
    return rest, values


def cmd_preview_augment(args: list[str]) -> int:
    """Write a PNG grid of training images: original, then augmented (--rows 8 --variants 5 --out FILE)."""
    args, opts = take_options(args, {"rows": 8, "variants": 5, "out": "augment_preview.png"})
    from dltool.commands.preview import preview_augment, report
    from dltool.config.compose import train_config

    grid = preview_augment(train_config(args), Path(opts["out"]), opts["rows"],
                           opts["variants"])
    report(grid, "original + augmented")
    return 0


def cmd_show_data(args: list[str]) -> int:
    """Write a PNG grid of raw training samples per class (--per-class 8 --classes 20 --out FILE)."""
    args, opts = take_options(args, {"per_class": 8, "classes": 20, "out": "data_samples.png"})
    from dltool.commands.preview import report, show_data
    from dltool.config.compose import train_config

    grid = show_data(train_config(args), Path(opts["out"]), opts["per_class"],
                     opts["classes"])
    report(grid, "classes x samples")
def wants_help(args: list[str], command: Callable) -> bool:
    """`dltool COMMAND --help`: print the command's docstring (description, usage, options)."""
    if not any(a in ("-h", "--help") for a in args):
        return False
    from dltool.console import plain

    plain("\n".join(line.strip() for line in (command.__doc__ or "").strip().splitlines()))
    return True


def cmd_evaluate(args: list[str]) -> int:
    """Evaluate a trained run (or checkpoint) on a split: metrics, confusion matrix, eval.json.

    usage: dltool evaluate RUN_DIR|CHECKPOINT [split=test] [topk=3] [checkpoint=best] [batch_size=N]
                           [device=auto] [data.KEY=VALUE]
    Writes eval.json + confusion_matrix.png to the run dir (eval_<split>_<checkpoint>.json otherwise).
    """
    if wants_help(args, cmd_evaluate):
        return 0
    from dltool.commands.evaluate import OPTIONS, print_report, run_evaluate
    from dltool.train.restore import parse_options

    targets, opts, data = parse_options(args, OPTIONS, "evaluate")
    if len(targets) != 1:
        raise ConfigError(f"dltool evaluate takes exactly one run directory or checkpoint file (got {len(targets)}), "
                          f"then options such as split=val topk=5 checkpoint=last.")
    print_report(run_evaluate(targets[0], opts, data))
    return 0


def cmd_sanity(args: list[str]) -> int:
    """Overfit ~20 training examples with regularization off; diagnose why if it cannot.

    usage: dltool overfit-sanity-check [CONFIG.yaml] [key=value ...] [sanity.KEY=VALUE ...]
    sanity options (configs/sanity.yaml): examples, max_steps, loss_threshold, batch_size, init_tolerance,
    stuck_fraction, out_dir. Exit status 0 pass, 1 fail (with a diagnosis).
    """
    if wants_help(args, cmd_sanity):
        return 0
    from dltool.commands.sanity import run_sanity
    from dltool.config.compose import train_config
    from dltool.config.options import split_prefixed

    sanity_args, rest = split_prefixed(args, "sanity")
    return run_sanity(train_config(rest), sanity_args)


def cmd_gradcheck(args: list[str]) -> int:
    """Check backprop against centered differences in float64, per parameter tensor.

    usage: dltool gradcheck [CONFIG.yaml] [key=value ...] [gradcheck.KEY=VALUE ...]
    gradcheck options (configs/gradcheck.yaml): examples, h, threshold, max_elements, seed.
    Exit status 0 when every tensor's max relative error is under the threshold, 1 otherwise.
    """
    if wants_help(args, cmd_gradcheck):
        return 0
    from dltool.commands.gradcheck import run_gradcheck
    from dltool.config.compose import train_config
    from dltool.config.options import split_prefixed

    gc_args, rest = split_prefixed(args, "gradcheck")
    return run_gradcheck(train_config(rest), gc_args)


def cmd_predict(args: list[str]) -> int:
    """Classify images (PNG/JPEG) or .npy/.pt tensors with a trained run: top-k classes.

    usage: dltool predict RUN_DIR|CHECKPOINT INPUT... [topk=3] [invert=false] [checkpoint=best] [device=auto]
    Images are converted to the training size/channels in [0, 1] (invert=true for dark ink on white);
    tensors are raw examples (C,H,W) or batches (N,C,H,W); the stored normalization is applied.
    """
    if wants_help(args, cmd_predict):
        return 0
    from dltool.commands.predict import OPTIONS, print_predictions, run_predict
    from dltool.train.restore import parse_options

    paths, opts, data = parse_options(args, OPTIONS, "predict")
    if len(paths) < 2:
        raise ConfigError("dltool predict takes a run directory (or checkpoint file) and at least one image, "
                          ".npy or .pt file, then options such as topk=5 invert=true.")
    print_predictions(run_predict(paths[0], paths[1:], opts, data))
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "overfit-sanity-check": cmd_sanity,
    "gradcheck": cmd_gradcheck,
    "predict": cmd_predict,
    "summary": cmd_summary,
    "list": cmd_list,
    "sweep-report": cmd_sweep_report,
    "preview-augment": cmd_preview_augment,
    "show-data": cmd_show_data,
}


def print_help() -> None:
    from dltool.console import console, table

    console.print("[bold]dltool[/] - the textbook neural-network training recipe as one YAML config.\n")
    console.print("usage: dltool COMMAND \\[CONFIG.yaml] \\[key=value ...]\n")
    console.print(table("commands", ["command", "what it does"],
                        [(n, (f.__doc__ or "").strip().splitlines()[0]) for n, f in COMMANDS.items()], False))
    console.print("\nExamples:\n  dltool train\n  dltool train model=mlp optimizer.lr=0.01\n"
                  "  dltool train experiment=mlp_digits\n  dltool train -m optimizer.lr=1e-3,1e-2\n"
                  "  dltool train -m hparams_search=lr_random\n  dltool sweep-report outputs/multirun/SWEEP\n"
                  "  dltool summary model=cnn_digits\n  dltool list layers\n"
                  "  dltool preview-augment data=cifar10 augment=standard\n  dltool show-data data=spiral\n"
                  "  dltool evaluate outputs/RUN split=val\n  dltool overfit-sanity-check model=mlp\n"
                  "  dltool gradcheck\n  dltool predict outputs/RUN digit.png\n\n"
                  "Set DLTOOL_DEBUG=1 to see full tracebacks.")


def quiet_third_party() -> None:
    """Keep the terminal for dltool's own output: no warnings from plugin imports."""
    if not os.environ.get("DLTOOL_DEBUG"):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="hydra")
        logging.getLogger("optuna").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_third_party()
    if not args or args[0] in ("-h", "--help", "help"):
        print_help()
        sys.exit(0)
    from dltool.registry import lookup

    try:
        command = lookup(COMMANDS, args[0], "command")
        code = command(args[1:])
    except ConfigError as ex:
        if os.environ.get("DLTOOL_DEBUG"):
            raise
        from dltool.console import error

        error(str(ex))
        sys.exit(2)
    sys.exit(code or 0)
