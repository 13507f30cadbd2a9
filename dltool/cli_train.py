"""The training-side commands (train, sweeps, sanity check, gradcheck, lr-find, cross-validate).

Like every `dltool/cli*.py` module, the heavy imports happen inside the command so `dltool --help` and a
mistyped command stay instant.
"""

from __future__ import annotations

from pathlib import Path

from dltool.console import status
from dltool.errors import ConfigError


def cmd_train(args: list[str]) -> int:
    """Train a model from a YAML config (+ key=value overrides; -m for a Hydra multirun sweep).

    usage: dltool train [CONFIG.yaml] [group=choice ...] [key=value ...] [-m key=a,b ...] [resume=RUN_DIR|latest]
    Config groups (configs/): data, model, loss, optimizer, scheduler, regularization, init, augment, trainer,
    experiment, hparams_search; configs/train.yaml comments every key. `dltool list` shows every registered
    name. Writes a run dir under outputs/ (config.yaml, checkpoints/, metrics.csv, curves.png).
    """
    from dltool.config.compose import at_run_dir, compose, launch, refuse_sweep, resume_target, split_args
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
    tc = validate(cfg)
    check_dropout_key(cfg, overrides)
    status(f"dltool train: {tc.model.name} on {tc.data.name}, {tc.optimizer.name} lr={tc.optimizer.lr:g}, "
           f"{tc.trainer.epochs} epochs{' (a sweep)' if multirun else ''}: loading torch, the data and the model")
    from dltool.commands.train import train_task
    from dltool.train.distributed import rank_overrides

    ranks = rank_overrides()  # ranks > 0 of an external torchrun write nothing (no run dir, no log)
    overrides += ranks

    if not multirun:
        from dltool.commands.rundir import reserve

        explicit = any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides)
        run_dir = reserve(str(cfg.hydra.run.dir), explicit)  # a fresh dir of its own, even within the same second
        overrides = [o for o in overrides if not o.lstrip("+").startswith("hydra.run.dir=")]
        launch(lambda c: train_task(c, multirun), name, extra_dir, overrides + [f"hydra.run.dir='{run_dir}'"],
               "train", composed=None if ranks else at_run_dir(cfg, run_dir))  # composed once, run as composed
        return 0
    return run_sweep(name, extra_dir, overrides, None if ranks else cfg)


def run_sweep(name: str, extra_dir: str | None, overrides: list[str], cfg: object = None) -> int:
    """`dltool train -m ...`: plan the sweep (dir, Optuna study, threads per job), run the jobs, report them."""
    from hydra.core.plugins import Plugins

    from dltool.commands.sweep import discard_if_empty, plan, quiet_plugins
    from dltool.commands.sweep_report import report
    from dltool.commands.train import train_task
    from dltool.config.compose import launch
    from dltool.console import error, note, warning
    from dltool.train import deferred
    from dltool.train.search import trial_reporter
    from hydra_plugins.dltool_optuna_sweeper.optuna_sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)  # an editable install hides it from Hydra's plugin scan
    sweep = plan(name, extra_dir, overrides, cfg)  # cfg: the config the checks composed (sweep lists' first values)
    quiet_plugins()
    for line in [f"sweep dir: {sweep.sweep_dir}", *sweep.notes]:
        note(line)
    for line in sweep.warnings:
        warning(line)
    deferred.enable(True)  # job N's signal figures are drawn while job N+1 trains
    try:
        launch(lambda c: train_task(c, True, trial_reporter), name, extra_dir, overrides + sweep.overrides, "train")
    finally:
        deferred.enable(False)  # every figure written before the report
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
