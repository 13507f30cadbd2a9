"""Hydra at the edge: the config tree, composing it with overrides, and handing a task to @hydra.main.

Everything here returns validated dataclasses (via config.schema) or one-sentence ConfigErrors;
nothing below config/ ever sees a DictConfig.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from dltool.config.schema import register_schemas, translate, validate
from dltool.errors import ConfigError
from dltool.registry import unknown


def config_dir() -> Path:
    """The config tree: inside the installed package (wheel), or configs/ beside it (editable install)."""
    package = Path(__file__).resolve().parent.parent
    inside = package / "configs"
    if (inside / "train.yaml").is_file():
        return inside
    return package.parent / "configs"


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
                  "hydra/sweeper/sampler": ("random", "tpe", "grid", "cmaes", "qmc", "gp"),
                  "hydra/sweeper/pruner": ("none", "median", "successive_halving", "hyperband")}


def missing_option(ex: Exception, extra_dir: str | None) -> ConfigError | None:
    """`model=mpl` -> one sentence with the closest config file of that group and all the choices."""
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
    name, extra_dir, overrides = split_args(args, "train")
    return validate(compose(name, extra_dir, overrides))


def launch(task: Callable[[Any], Any], name: str, extra_dir: str | None, overrides: list[str], job: str) -> None:
    """Run `task` under @hydra.main (run dir, logging, -m sweeps) with these arguments."""
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
