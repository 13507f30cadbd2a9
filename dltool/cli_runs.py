"""The commands that read a run or a config without training (evaluate, predict, export, summary, ...).

Heavy imports happen inside each command (see dltool/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dltool.errors import ConfigError


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
    from dltool.models.backbone_names import backbone_entries  # torchvision's registry read from its source

    entries = backbone_entries()
    if entries is None:  # no readable source: torchvision's own registry (imports torch + torchvision, 3-8 s)
        from dltool.models.backbones import BACKBONES

        entries = BACKBONES
    return list_task(args, entries)


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
