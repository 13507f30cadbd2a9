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


def config_dir() -> Path:
    """The config tree: inside the installed package (wheel), or configs/ beside it (editable install)."""
    inside = Path(__file__).resolve().parent / "configs"
    if (inside / "train.yaml").is_file():
        return inside
    return Path(__file__).resolve().parent.parent / "configs"


# --------------------------------------------------------------------------- argument handling
def split_args(args: list[str], primary: str) -> tuple[str, str | None, list[str]]:
    """-> (config name, extra config dir or None, overrides). The first arg may be a YAML file path."""
    if args and not args[0].startswith("-") and "=" not in args[0] and args[0].endswith((".yaml", ".yml")):
        path = Path(args[0])
        if not path.is_file():
            raise ConfigError(f"config file {args[0]} does not exist.")
        return path.stem, str(path.resolve().parent), args[1:]
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    if resume:
        run = Path(resume)
        cfg_file = run / "config.yaml" if run.is_dir() else None
        if cfg_file is None or not cfg_file.is_file():
            raise ConfigError(f"resume={resume}: expected a run directory holding config.yaml and checkpoints/last.pt.")
        # the saved config.yaml is fully resolved (no defaults list), so name dltool's logging setup here
        return "config", str(run.resolve()), [a for a in args if not a.startswith("resume=")] + \
            [f"resume={run.resolve()}", f"hydra.run.dir={run.resolve()}", "hydra/job_logging=dltool",
             "hydra/hydra_logging=dltool"]
    return primary, None, args


def first_values(overrides: list[str]) -> list[str]:
    """Overrides for a one-off compose: sweep lists reduced to their first value, hydra settings dropped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    for raw, o in zip([o for o in overrides if not o.startswith("-")], parsed):
        key = o.get_key_element()
        if key.startswith(("hydra.", "+hydra.", "~hydra.", "hydra/job_logging", "hydra/hydra_logging")):
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else [getattr(o.value(), "start", None)]
            if values[0] is None:
                continue  # a sweep without a first value: its keys are validated when the jobs run
            raw = f"{key}={values[0]}"  # an interval(a, b) is checked with a, so a misspelt key fails before any job
        out.append(raw)
    return out


def compose(name: str, extra_dir: str | None, overrides: list[str], with_hydra: bool = False) -> Any:
    """Compose with Hydra's compose API and validate against the schema (ConfigError on any mistake).

    with_hydra: also apply the `hydra.*` overrides and return the `hydra` node (sweeper, launcher, dirs).
    """
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dltool.config import register_schemas, translate

    register_schemas()
    GlobalHydra.instance().clear()
    primary_dir = extra_dir or str(config_dir())
    extra = [f"hydra.searchpath=[file://{config_dir()}]"] if extra_dir else []
    if with_hydra:
        extra += [o for o in overrides if o.lstrip("+~").startswith("hydra.")]
    try:
        with initialize_config_dir(config_dir=primary_dir, version_base=None):
            return hydra_compose(config_name=name, overrides=extra + first_values(overrides),
                                 return_hydra_config=with_hydra)
    except ConfigError:
        raise
    except Exception as ex:  # Hydra/OmegaConf composition errors
        raise missing_option(ex, extra_dir) or translate(ex) from None
    finally:
        GlobalHydra.instance().clear()


# options the installed Hydra plugins add to Hydra's own config groups (they are not files under configs/)
PLUGIN_OPTIONS = {"hydra/launcher": ("basic", "joblib", "submitit_local", "submitit_slurm"),
                  "hydra/sweeper": ("basic", "optuna"),
                  "hydra/sweeper/sampler": ("random", "tpe", "grid", "cmaes", "nsgaii", "motpe")}


def missing_option(ex: Exception, extra_dir: str | None) -> ConfigError | None:
    """`model=mpl` -> one sentence with the closest config file of that group and all the choices."""
    import re

    from dltool.registry import unknown

    m = re.search(r"Could not find '([\w/]+)/([^']+)'", str(ex))
    if not m:
        return None
    group, name = m.groups()
    choices = {p.stem for d in filter(None, [str(config_dir()), extra_dir])
               for p in (Path(d) / group).glob("*.yaml")}
    choices |= set(PLUGIN_OPTIONS.get(group, ()))
    if not choices and group.startswith("hydra/"):
        return ConfigError(f"{group}={name!r} is not an installed Hydra plugin option "
                           f"(joblib and submitit_slurm/submitit_local launchers, optuna sweeper are).")
    if not choices:
        return ConfigError(f"'{group}' is not a config group; groups: "
                           f"{', '.join(sorted(p.name for p in config_dir().iterdir() if p.is_dir() and p.name[0] != '_'))}.")
    return unknown(group, name, choices)


def train_config(args: list[str]) -> Any:
    """[CONFIG.yaml] [key=value ...] -> the validated TrainConfig (summary, sanity, gradcheck, previews)."""
    from dltool.config import validate

    name, extra_dir, overrides = split_args(args, "train")
    return validate(compose(name, extra_dir, overrides))


def launch(task: Callable[[Any], Any], name: str, extra_dir: str | None, overrides: list[str], job: str) -> None:
    """Run `task` under @hydra.main (run dir, logging, -m sweeps) with these arguments."""
    import hydra

    from dltool.config import register_schemas

    register_schemas()
    argv = [f"dltool-{job}"] + (["--config-dir", extra_dir] if extra_dir else []) + overrides
    if not any(a.startswith("hydra.job.name=") for a in overrides):
        argv.append(f"hydra.job.name={job}")
    app = hydra.main(version_base=None, config_path=str(config_dir()), config_name=name)(task)
    old = sys.argv
    sys.argv = argv
    try:
        app()
    finally:
        sys.argv = old


# --------------------------------------------------------------------------- commands
def cmd_train(args: list[str]) -> int:
    """Train a model from a YAML config (+ key=value overrides; -m for a Hydra multirun sweep)."""
    name, extra_dir, overrides = split_args(args, "train")
    multirun = any(a in ("-m", "--multirun") for a in overrides)
    from dltool.config import validate

    validate(compose(name, extra_dir, overrides))
    from dltool.tasks import train_task

    if not multirun:
        launch(lambda cfg: train_task(cfg, multirun), name, extra_dir, overrides, "train")
        return 0
    from dltool.console import note
    from dltool.sweep import plan, quiet_plugins
    from dltool.sweep_report import report

    sweep = plan(name, extra_dir, overrides)
    quiet_plugins()
    for line in [f"sweep dir: {sweep.sweep_dir}", *sweep.notes]:
        note(line)
    launch(lambda cfg: train_task(cfg, multirun), name, extra_dir, overrides + sweep.overrides, "train")
    report(sweep.sweep_dir)
    return 0


def cmd_sweep_report(args: list[str]) -> int:
    """Rank the jobs of a `train -m` sweep: table, sweep.csv, sweep.png, edge-of-range warnings."""
    if len(args) != 1 or args[0].startswith("-"):
        raise ConfigError("usage: dltool sweep-report SWEEP_DIR (the sweep dir `dltool train -m` printed).")
    from dltool.sweep_report import report

    report(Path(args[0]))
    return 0


def cmd_summary(args: list[str]) -> int:
    """Print the model table: output shape, parameters, activation memory and mult-adds per layer."""
    from dltool.tasks import summary_task

    return summary_task(train_config(args))


def cmd_list(args: list[str]) -> int:
    """List a registry: layers, losses, optimizers, schedulers, initializers, datasets, augmentations (or all)."""
    from dltool.tasks import list_task

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
    from dltool.preview import preview_augment, report

    grid = preview_augment(train_config(args), Path(opts["out"]), opts["rows"],
                           opts["variants"])
    report(grid, "original + augmented")
    return 0


def cmd_show_data(args: list[str]) -> int:
    """Write a PNG grid of raw training samples per class (--per-class 8 --classes 20 --out FILE)."""
    args, opts = take_options(args, {"per_class": 8, "classes": 20, "out": "data_samples.png"})
    from dltool.preview import report, show_data

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
    from dltool.evaluate import OPTIONS, print_report, run_evaluate
    from dltool.restore import parse_options

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
    from dltool.options import split_prefixed
    from dltool.sanity import run_sanity

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
    from dltool.gradcheck import run_gradcheck
    from dltool.options import split_prefixed

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
    from dltool.predict import OPTIONS, print_predictions, run_predict
    from dltool.restore import parse_options

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
