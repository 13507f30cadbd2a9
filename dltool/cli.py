"""`dltool <command>`: the only place that parses argv.

Hydra commands (train, ...) first compose the config once with Hydra's compose API, so a mistake gets
one sentence before any run directory exists, then hand the same arguments to a @hydra.main app
(run dirs, multirun sweeps, launchers).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from dltool.errors import ConfigError


# --------------------------------------------------------------------------- commands
def cmd_train(args: list[str]) -> int:
    """Train a model from a YAML config (+ key=value overrides; -m for a Hydra multirun sweep).

    usage: dltool train [CONFIG.yaml] [group=choice ...] [key=value ...] [-m key=a,b ...] [resume=RUN_DIR|latest]
    Config groups (configs/): data, model, loss, optimizer, scheduler, regularization, init, augment, trainer,
    experiment, hparams_search; configs/train.yaml comments every key. `dltool list` shows every registered
    name. Writes a run dir under outputs/ (config.yaml, checkpoints/, metrics.csv, curves.png).
    """
    from dltool.config.compose import compose, launch, refuse_sweep, resume_target, split_args
    from dltool.config.schema import check_dropout_key, validate

    target = resume_target(args)
    if target is not None:  # the stored config is data: no Hydra app, nothing written before the resume is accepted
        from dltool.commands.train import resume_run

        rest = [a for a in args if not a.startswith("resume=")]
        if target == "latest":
            from dltool.commands.rundir import latest_target

            target, rest = latest_target(rest)
        return resume_run(target, rest)
    name, extra_dir, overrides = split_args(args, "train")
    multirun = any(a in ("-m", "--multirun") for a in overrides)
    if not multirun:
        refuse_sweep(overrides)  # before Hydra: its own error would leave an empty run dir behind
    cfg = compose(name, extra_dir, overrides, with_hydra=True)
    validate(cfg)
    check_dropout_key(cfg, overrides)
    from dltool.commands.train import train_task
    from dltool.train.distributed import rank_overrides

    overrides += rank_overrides()  # ranks > 0 of an external torchrun write nothing (no run dir, no log)

    if not multirun:
        from dltool.commands.rundir import reserve

        explicit = any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides)
        run_dir = reserve(str(cfg.hydra.run.dir), explicit)  # a fresh dir of its own, even within the same second
        overrides = [o for o in overrides if not o.lstrip("+").startswith("hydra.run.dir=")]
        launch(lambda c: train_task(c, multirun), name, extra_dir, overrides + [f"hydra.run.dir='{run_dir}'"],
               "train")
        return 0
    return run_sweep(name, extra_dir, overrides)


def run_sweep(name: str, extra_dir: str | None, overrides: list[str]) -> int:
    """`dltool train -m ...`: plan the sweep (dir, Optuna study, threads per job), run the jobs, report them."""
    from hydra.core.plugins import Plugins

    from dltool.commands.sweep import discard_if_empty, plan, quiet_plugins
    from dltool.commands.sweep_report import report
    from dltool.commands.train import train_task
    from dltool.config.compose import launch
    from dltool.console import error, note, warning
    from dltool.train.search import trial_reporter
    from hydra_plugins.dltool_optuna_sweeper.optuna_sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)  # an editable install hides it from Hydra's plugin scan
    sweep = plan(name, extra_dir, overrides)
    quiet_plugins()
    for line in [f"sweep dir: {sweep.sweep_dir}", *sweep.notes]:
        note(line)
    for line in sweep.warnings:
        warning(line)
    try:
        launch(lambda c: train_task(c, True, trial_reporter), name, extra_dir, overrides + sweep.overrides, "train")
    finally:
        discard_if_empty(sweep)
    failed = [j.name for j in report(sweep.sweep_dir)["jobs"] if j.status == "failed"]
    if failed:
        error(f"{len(failed)} job(s) failed ({', '.join(failed)}); each one's error is in its summary.json "
              f"and train.log under {sweep.sweep_dir}.")
        return 1
    return 0


def cmd_sweep_report(args: list[str]) -> int:
    """Rank the jobs of a `train -m` sweep: table, sweep.csv, sweep.png, edge-of-range warnings.

    usage: dltool sweep-report SWEEP_DIR   (the sweep dir `dltool train -m` printed)
    """
    if len(args) != 1 or args[0].startswith("-"):
        raise ConfigError("usage: dltool sweep-report SWEEP_DIR (the sweep dir `dltool train -m` printed).")
    from dltool.commands.sweep_report import report

    report(Path(args[0]))
    return 0


def cmd_summary(args: list[str]) -> int:
    """Print the model table: output shape, parameters, activation memory and mult-adds per layer.

    usage: dltool summary [CONFIG.yaml] [key=value ...]   (e.g. dltool summary model=cnn_digits)
    Builds the model for the configured data set; trains nothing and writes nothing.
    """
    from dltool.commands.summary import summary_task
    from dltool.config.compose import train_config

    return summary_task(train_config(args))


def cmd_list(args: list[str]) -> int:
    """List the registries: layers, losses, optimizers, schedulers, initializers, datasets, augmentations, backbones.

    usage: dltool list [REGISTRY|GROUP ...|all]   (no argument or `all`: every registry and group)
    Each row: the name to write in a config, the options or config keys it reads, and what it does; the config
    keys (optimizers, ..., datasets, and the groups model, regularization, augment, trainer) with their type,
    default and doc from the key table (dltool/config/keys.py).
    """
    from dltool.commands.list import list_task

    if "backbones" not in args:
        return list_task(args)
    from dltool.models.backbones import BACKBONES  # torchvision's own registry: needs torchvision imported

    return list_task(args, BACKBONES)


def cmd_preview_augment(args: list[str]) -> int:
    """Write a PNG grid of training images: original, then augmented (--rows 8 --variants 5 --out FILE).

    usage: dltool preview-augment [CONFIG.yaml] [key=value ...] [--rows 8] [--variants 5] [--out augment_preview.png]
    """
    from dltool.config.options import take_options

    args, opts = take_options(args, {"rows": 8, "variants": 5, "out": "augment_preview.png"})
    from dltool.commands.preview import preview_augment, report
    from dltool.config.compose import train_config

    grid = preview_augment(train_config(args), Path(opts["out"]), opts["rows"],
                           opts["variants"])
    report(grid, "original + augmented")
    return 0


def cmd_show_data(args: list[str]) -> int:
    """Write a PNG grid of raw training samples per class (--per-class 8 --classes 20 --out FILE).

    usage: dltool show-data [CONFIG.yaml] [key=value ...] [--per-class 8] [--classes 20] [--out data_samples.png]
    """
    from dltool.config.options import take_options

    args, opts = take_options(args, {"per_class": 8, "classes": 20, "out": "data_samples.png"})
    from dltool.commands.preview import report, show_data
    from dltool.config.compose import train_config

    grid = show_data(train_config(args), Path(opts["out"]), opts["per_class"],
                     opts["classes"])
    report(grid, "classes x samples")
    return 0


def wants_help(args: list[str], command: Callable) -> bool:
    """`dltool COMMAND --help` (or -h): print the command's docstring (description, usage, options)."""
    if not any(a in ("-h", "--help") for a in args):
        return False
    from dltool.console import plain

    plain("\n".join(line.strip() for line in (command.__doc__ or "").strip().splitlines()))
    return True


def cmd_evaluate(args: list[str]) -> int:
    """Evaluate a trained run (or checkpoint) on a split: the task's metrics and figures, eval.json.

    usage: dltool evaluate RUN_DIR|CHECKPOINT [split=test] [topk=3] [checkpoint=best] [batch_size=N]
                           [threshold=P|tune] [device=auto] [data.KEY=VALUE]
    Writes eval.json + confusion_matrix.png (classification), roc_pr.png + predictions.csv (binary, multilabel;
    threshold=tune picks the best-F1 threshold on the validation split) or pred_vs_actual.png + residuals.png +
    predictions.csv (regression) to the run dir (eval_<split>_<checkpoint>.json otherwise).
    """
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
    from dltool.commands.gradcheck import run_gradcheck
    from dltool.config.compose import train_config
    from dltool.config.options import split_prefixed

    gc_args, rest = split_prefixed(args, "gradcheck")
    return run_gradcheck(train_config(rest), gc_args)


def cmd_predict(args: list[str]) -> int:
    """Predict images (PNG/JPEG), .npy/.pt tensors or CSV rows with a trained run.

    usage: dltool predict RUN_DIR|CHECKPOINT INPUT... [topk=3] [invert=false] [checkpoint=best] [device=auto]
    Prints the top-k classes (classification), each label's probability and the labels at or above the run's
    trainer.threshold (binary, multilabel), or the values in the targets' original units (regression).
    Images are converted to the training size/channels in [0, 1] (invert=true for dark ink on white);
    tensors are raw examples (C,H,W) or batches (N,C,H,W); the stored normalization is applied.
    """
    from dltool.commands.predict import OPTIONS, print_predictions, run_predict
    from dltool.train.restore import parse_options

    paths, opts, data = parse_options(args, OPTIONS, "predict")
    if len(paths) < 2:
        raise ConfigError("dltool predict takes a run directory (or checkpoint file) and at least one image, "
                          ".npy or .pt file, then options such as topk=5 invert=true.")
    print_predictions(run_predict(paths[0], paths[1:], opts, data))
    return 0


def cmd_export(args: list[str]) -> int:
    """Export a run's best model as ONNX, TorchScript or a torch.export program, verified on real inputs.

    usage: dltool export RUN_DIR|CHECKPOINT [--format onnx|torchscript|exported] [--with-normalization]
                         [--out DIR] [--opset 18] [--examples 64] [--tolerance 1e-5] [--checkpoint best]
    Writes RUN_DIR/export/model.onnx (.ts.pt, .pt2) and a JSON beside it (input shape and layout, class names,
    normalization statistics, opset, versions, the check). The batch size is dynamic. Exit status 1 when the
    exported outputs differ from PyTorch's by more than the tolerance.
    """
    with_norm = "--with-normalization" in args
    args = [a for a in args if a != "--with-normalization"]
    from dltool.commands.export import OPTIONS
    from dltool.config.options import take_options

    targets, opts = take_options(args, OPTIONS)
    if len(targets) != 1 or targets[0].startswith("-"):
        raise ConfigError(f"dltool export takes exactly one run directory or checkpoint file (got "
                          f"{' '.join(targets) or 'none'}), then options such as --format onnx.")
    from dltool.commands.export import print_export, run_export

    res = run_export(targets[0], {**opts, "with_normalization": with_norm})
    print_export(res)
    return 0 if res["verification"]["passed"] else 1


def cmd_lr_find(args: list[str]) -> int:
    """Learning-rate range test: loss vs exponentially growing lr from the initial weights; suggests an lr.

    usage: dltool lr-find [CONFIG.yaml] [key=value ...] [lr_find.KEY=VALUE ...]
    lr_find options (configs/lr_find.yaml): start, end, steps, smoothing, divergence, divisor, out_dir.
    Writes lr_find.png and lr_find.json (outputs/lr_find/<time>_<name>); prints the suggested lr and the
    override to train with. No run directory or checkpoint is written or changed.
    """
    from dltool.commands.lr_find import run_lr_find
    from dltool.config.compose import train_config
    from dltool.config.options import split_prefixed

    lf_args, rest = split_prefixed(args, "lr_find")
    return run_lr_find(train_config(rest), lf_args, rest)


def cmd_cross_validate(args: list[str]) -> int:
    """K-fold cross-validation: K runs on stratified folds of train+val, per-fold and mean +- std.

    usage: dltool cross-validate [CONFIG.yaml] data.folds=K [key=value ...]
    Trains fold_1 ... fold_K in one parent dir (outputs/<time>_<name>_cv); the test split is never in a fold.
    Prints and writes cv.json and cv.csv: the best monitored value and the best checkpoint's test metric
    (accuracy; AUROC, macro-F1 or R² for the other tasks) per fold, with mean +- std. In a sweep,
    `dltool train -m ... data.folds=K` makes each job a cross-validation whose objective is the mean over its folds.
    """
    from dltool.commands.cross_validate import cv_dir
    from dltool.config.compose import compose, launch, split_args

    name, extra_dir, overrides = split_args(args, "train")
    if any(a in ("-m", "--multirun") for a in overrides):
        raise ConfigError("dltool cross-validate runs one cross-validation; for a sweep of them use "
                          "dltool train -m ... data.folds=K (each job's objective is its mean over folds).")
    overrides = cv_dir(overrides, lambda o: compose(name, extra_dir, o, with_hydra=True))  # checked, reserved
    from dltool.commands.train import train_task

    launch(lambda c: train_task(c, False), name, extra_dir, overrides, "cross_validate")
    return 0


def cmd_diagnose(args: list[str]) -> int:
    """Say what went wrong in a run and which config key to change (learning rate, overfitting, dead units, ...).

    usage: dltool diagnose RUN_DIR
    Reads metrics.csv, signals.csv, config.yaml of the run dir; writes diagnosis.json.
    Exit status 0 when nothing was found, 1 with findings.
    """
    from dltool.commands.diagnose import run_diagnose

    return run_diagnose(args)


def cmd_compare(args: list[str]) -> int:
    """Compare runs: the config keys that differ, final metrics side by side, the curves overlaid (PNG).

    usage: dltool compare RUN_DIR RUN_DIR [RUN_DIR ...] [--out DIR]   (default DIR: outputs/compare/<time>)
    """
    from dltool.commands.compare import print_compare, run_compare

    print_compare(run_compare(args))
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "overfit-sanity-check": cmd_sanity,
    "gradcheck": cmd_gradcheck,
    "predict": cmd_predict,
    "export": cmd_export,
    "lr-find": cmd_lr_find,
    "cross-validate": cmd_cross_validate,
    "diagnose": cmd_diagnose,
    "compare": cmd_compare,
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
                  "  dltool summary model=cnn_digits\n  dltool list layers\n  dltool list all\n"
                  "  dltool preview-augment data=cifar10 augment=standard\n  dltool show-data data=spiral\n"
                  "  dltool evaluate outputs/RUN split=val\n  dltool overfit-sanity-check model=mlp\n"
                  "  dltool gradcheck\n  dltool predict outputs/RUN digit.png\n"
                  "  dltool export outputs/RUN --format onnx\n  dltool lr-find\n"
                  "  dltool cross-validate data.folds=5\n  dltool diagnose outputs/RUN\n  dltool compare RUN1 RUN2\n\n"
                  "Every command takes --help. Set DLTOOL_DEBUG=1 to see full tracebacks.")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ["DLTOOL_COMMAND"] = shlex.join(["dltool", *args])  # provenance (summary.json): the command as typed
    from dltool.console import quiet_third_party, terminal_logging

    quiet_third_party()
    if not args or args[0] in ("-h", "--help", "help"):
        print_help()
        sys.exit(0)
    from dltool.registry import lookup

    terminal_logging()
    try:
        command = lookup(COMMANDS, args[0], "command")
        code = 0 if wants_help(args[1:], command) else command(args[1:])
    except ConfigError as ex:
        if os.environ.get("DLTOOL_DEBUG"):
            raise
        from dltool.console import error

        error(str(ex))
        sys.exit(2)
    sys.exit(code or 0)
