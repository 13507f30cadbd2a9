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
        return "config", str(run.resolve()), [a for a in args if not a.startswith("resume=")] + \
            [f"resume={run.resolve()}", f"hydra.run.dir={run.resolve()}"]
    return primary, None, args


def first_values(overrides: list[str]) -> list[str]:
    """Overrides for a one-off compose: sweep lists reduced to their first value, hydra settings dropped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    for raw, o in zip([o for o in overrides if not o.startswith("-")], parsed):
        key = o.get_key_element()
        if key.startswith(("hydra.", "+hydra.", "~hydra.")):
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator()) if o.is_discrete_sweep() else []
            if not values:
                continue  # a range/interval: its keys are validated when the jobs run
            raw = f"{key}={values[0]}"
        out.append(raw)
    return out


def compose(name: str, extra_dir: str | None, overrides: list[str]) -> Any:
    """Compose with Hydra's compose API and validate against the schema (ConfigError on any mistake)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dltool.config import register_schemas, translate

    register_schemas()
    GlobalHydra.instance().clear()
    primary_dir = extra_dir or str(config_dir())
    extra = [f"hydra.searchpath=[file://{config_dir()}]"] if extra_dir else []
    try:
        with initialize_config_dir(config_dir=primary_dir, version_base=None):
            return hydra_compose(config_name=name, overrides=extra + first_values(overrides))
    except ConfigError:
        raise
    except Exception as ex:  # Hydra/OmegaConf composition errors
        raise missing_option(ex, extra_dir) or translate(ex) from None
    finally:
        GlobalHydra.instance().clear()


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
    if not choices and group.startswith("hydra/"):
        return ConfigError(f"{group}={name!r} is not an installed Hydra plugin option "
                           f"(joblib and submitit_slurm/submitit_local launchers, optuna sweeper are).")
    if not choices:
        return ConfigError(f"'{group}' is not a config group; groups: "
                           f"{', '.join(sorted(p.name for p in config_dir().iterdir() if p.is_dir() and p.name[0] != '_'))}.")
    return unknown(group, name, choices)


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

    launch(lambda cfg: train_task(cfg, multirun), name, extra_dir, overrides, "train")
    return 0


def cmd_summary(args: list[str]) -> int:
    """Print the model table: output shape, parameters, activation memory and mult-adds per layer."""
    name, extra_dir, overrides = split_args(args, "train")
    from dltool.config import validate
    from dltool.tasks import summary_task

    return summary_task(validate(compose(name, extra_dir, overrides)))


def cmd_list(args: list[str]) -> int:
    """List a registry: layers, losses, optimizers, schedulers, initializers, datasets (or all)."""
    from dltool.tasks import list_task

    return list_task(args)


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
    from dltool.sanity import run_sanity, split_sanity_args

    sanity_args, rest = split_sanity_args(args)
    name, extra_dir, overrides = split_args(rest, "train")
    from dltool.config import validate

    return run_sanity(validate(compose(name, extra_dir, overrides)), sanity_args)


def cmd_gradcheck(args: list[str]) -> int:
    """Check backprop against centered differences in float64, per parameter tensor.

    usage: dltool gradcheck [CONFIG.yaml] [key=value ...] [gradcheck.KEY=VALUE ...]
    gradcheck options (configs/gradcheck.yaml): examples, h, threshold, max_elements, seed.
    Exit status 0 when every tensor's max relative error is under the threshold, 1 otherwise.
    """
    if wants_help(args, cmd_gradcheck):
        return 0
    from dltool.gradcheck import run_gradcheck, split_gradcheck_args

    gc_args, rest = split_gradcheck_args(args)
    name, extra_dir, overrides = split_args(rest, "train")
    from dltool.config import validate

    return run_gradcheck(validate(compose(name, extra_dir, overrides)), gc_args)


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
    "summary": cmd_summary,
    "list": cmd_list,
    "evaluate": cmd_evaluate,
    "overfit-sanity-check": cmd_sanity,
    "gradcheck": cmd_gradcheck,
    "predict": cmd_predict,
}


def print_help() -> None:
    from dltool.console import console, table

    console.print("[bold]dltool[/] - the textbook neural-network training recipe as one YAML config.\n")
    console.print("usage: dltool COMMAND \\[CONFIG.yaml] \\[key=value ...]\n")
    console.print(table("commands", ["command", "what it does"],
                        [(n, (f.__doc__ or "").strip().splitlines()[0]) for n, f in COMMANDS.items()], False))
    console.print("\nExamples:\n  dltool train\n  dltool train model=mlp optimizer.lr=0.01\n"
                  "  dltool train experiment=mlp_digits\n  dltool train -m optimizer.lr=1e-3,1e-2\n"
                  "  dltool summary model=cnn_digits\n  dltool list layers\n"
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
