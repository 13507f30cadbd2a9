"""Hydra at the edge: the config tree, composing it with overrides, and handing a task to @hydra.main.

Everything here returns validated dataclasses (via config.schema) or one-sentence ConfigErrors;
nothing below config/ ever sees a DictConfig.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import hydra
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# hydra/sweeper=optuna also where an editable install hides dltool's plugin from Hydra's namespace scan
import hydra_plugins.dltool_optuna_sweeper.config  # noqa: F401  (importing it registers its configs)
from dltool import plugins
from dltool.config.safety import check_hydra, check_overrides, refuse_targets
from dltool.config.schema import register_schemas, to_dict, translate, validate
from dltool.config.variants import PLUGGABLE, SELECTOR, config_dir, plugin_variants, rewrite_selectors
from dltool.errors import ConfigError
from dltool.registry import closest, unknown


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping from a file, or one sentence: missing, a directory, a syntax error (file:line), not a mapping."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give the path of a .yaml file.")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as ex:
        mark = getattr(ex, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(ex, "problem", None) or str(ex).splitlines()[0]
        context, cmark = getattr(ex, "context", None), getattr(ex, "context_mark", None)
        if context and cmark is not None:
            problem += f" {context} that starts on line {cmark.line + 1}"
        raise ConfigError(f"{what} {where}: YAML syntax error ({problem}).") from None
    except (OSError, UnicodeDecodeError) as ex:
        raise ConfigError(f"{what} {path} cannot be read ({type(ex).__name__}).") from None
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}, not a mapping of keys"
        raise ConfigError(f"{what} {path} is {kind}; it must hold keys such as `trainer: {{epochs: 5}}`.")
    return raw


def resume_target(args: list[str]) -> str | None:
    """The RUN_DIR of a `resume=RUN_DIR` argument (None when training starts afresh)."""
    return next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)


def split_args(args: list[str], primary: str) -> tuple[str, str | None, list[str]]:
    """-> (config name, extra config dir or None, overrides). The first arg may be a YAML file path."""
    if args and not args[0].startswith("-") and "=" not in args[0] and args[0].endswith((".yaml", ".yml")):
        path = Path(args[0])
        refuse_targets(read_yaml(path, "config file"), f"config file {path}")
        rest = args[1:]
        check_overrides(rest)
        return path.stem, str(path.resolve().parent), rewrite_selectors(rest)
    check_overrides(args)
    return primary, None, rewrite_selectors(args)


# a user's own config file need not name dltool's logging setup: it is the only one allowed anyway
DLTOOL_LOGGING = ("hydra/job_logging=dltool", "hydra/hydra_logging=dltool")


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


def refuse_sweep(overrides: list[str]) -> None:
    """A sweep value (a,b / choice() / range() / interval()) without -m: one sentence saying to add -m."""
    plain = [o for o in overrides if not o.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except Exception:  # noqa: BLE001 - a malformed override gets its own sentence from compose
        return
    for raw, o in zip(plain, parsed):
        if o.is_sweep_override() and not o.get_key_element().lstrip("+~").startswith("hydra"):
            raise ConfigError(f"{raw} lists several values, which is a sweep: add -m to run one job per value "
                              f"(dltool train -m ... {raw}), or give {o.get_key_element()} one value.")


@contextlib.contextmanager
def plugin_choices() -> Iterator[None]:
    """`loss=focal`, `data=my_reader`: each plug-in variant is a config-group option while Hydra composes (a node
    {name: focal} in Hydra's ConfigStore), removed afterwards so no Hydra state outlives the call."""
    store, added = ConfigStore.instance(), []
    for group in PLUGGABLE:
        for name in plugin_variants(group):
            if not (config_dir() / group / f"{name}.yaml").exists():
                store.store(group=group, name=name, node={SELECTOR[group]: name}, provider="dltool-plugins")
                added.append((group, name))
    try:
        yield
    finally:
        for group, name in added:
            store.repo.get(group, {}).pop(f"{name}.yaml", None)


def compose(name: str, extra_dir: str | None, overrides: list[str], with_hydra: bool = False) -> Any:
    """Compose with Hydra's compose API and validate against the schema (ConfigError on any mistake).

    The `hydra` node is always composed too and checked (no callbacks, no foreign classes, dltool's logging);
    with_hydra: return it with the config (sweeper, launcher, dirs).
    """
    register_schemas()
    GlobalHydra.instance().clear()
    primary_dir = extra_dir or str(config_dir())
    extra = [f"hydra.searchpath=[file://{config_dir()}]", *DLTOOL_LOGGING] if extra_dir else []
    extra += [o for o in overrides if o.lstrip("+~").startswith("hydra.")]
    try:
        with plugin_choices(), initialize_config_dir(config_dir=primary_dir, version_base=None):
            cfg = hydra_compose(config_name=name, overrides=extra + first_values(overrides), return_hydra_config=True)
    except ConfigError:
        raise
    except Exception as ex:  # Hydra/OmegaConf composition errors
        error = missing_option(ex, extra_dir) or translate(ex)
    else:
        error = None
    finally:
        GlobalHydra.instance().clear()
    if error is not None:
        bad = re.search(r"'(hydra\.[\w.]+)' is not a config key", str(error))
        hydra_keys = [o for o in overrides if o.lstrip("+~").startswith("hydra.")]
        if bad and hydra_keys:  # the schema knows no hydra keys: list the ones this sweeper/launcher has
            error = hydra_key_error(name, extra_dir, [o for o in overrides if o not in hydra_keys], bad.group(1))
        raise error
    check_hydra(cfg.hydra)
    if not with_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def hydra_key_error(name: str, extra_dir: str | None, overrides: list[str], key: str) -> ConfigError:
    """`hydra.sweeper.n_trails=5` -> one sentence with the keys the chosen sweeper (or launcher) has."""
    parent, _, leaf = key.rpartition(".")
    node = compose(name, extra_dir, overrides, with_hydra=True)
    for part in parent.split("."):
        node = node.get(part) if hasattr(node, "get") else None
    valid = [str(k) for k in node] if hasattr(node, "keys") else []
    guess = closest(leaf, valid)
    return ConfigError(f"'{key}' is not a config key: '{parent}' has no key '{leaf}'."
                       f"{f' Did you mean {guess!r}?' if guess else ''} Valid keys: {', '.join(valid)}.")


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
    choices |= set(PLUGIN_OPTIONS.get(group, ())) | set(plugin_variants(group))
    if not choices and group.startswith("hydra/"):
        return ConfigError(f"{group}={name!r} is not an installed Hydra plugin option "
                           f"(joblib and submitit_slurm/submitit_local launchers, optuna sweeper are).")
    if not choices:
        groups = sorted(p.name for p in config_dir().iterdir() if p.is_dir() and p.name[0] != "_")
        return ConfigError(f"'{group}' is not a config group; groups: {', '.join(groups)}.")
    return unknown(group, name, choices)


def train_config(args: list[str]) -> Any:
    """[CONFIG.yaml] [key=value ...] -> the validated TrainConfig (summary, sanity, gradcheck, previews)."""
    target = resume_target(args)
    if target is not None:
        return resume_config(target, [a for a in args if not a.startswith("resume=")])
    name, extra_dir, overrides = split_args(args, "train")
    return validate(compose(name, extra_dir, overrides))


GROUP_FILES = ("data", "model", "loss", "optimizer", "scheduler", "regularization", "init", "augment", "trainer",
               "experiment", "hparams_search")


def resume_config(target: str, overrides: list[str]) -> Any:
    """`resume=RUN_DIR [key=value ...]`: RUN_DIR/config.yaml read as data (safe YAML, schema), never as a Hydra config.

    Single keys may change (trainer.epochs=50); choosing other group files or Hydra settings would start a
    different run, so they are refused.
    """
    run = Path(target)
    if not run.is_dir() or not (run / "config.yaml").is_file() or not (run / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"resume={target}: expected a run directory holding config.yaml and checkpoints/last.pt.")
    link = next((Path(d) / n for d, dirs, files in os.walk(run) for n in dirs + files if (Path(d) / n).is_symlink()),
                None)
    if link is not None:  # a resumed run writes into its dir: never through a link planted there
        raise ConfigError(f"resume={target}: {link} is a symbolic link; dltool never writes through a link out of a "
                          f"run directory: remove it and resume again.")
    plugins.require(run, f"resume={target}")
    stored = read_yaml(run / "config.yaml", "the stored config")
    cfg = OmegaConf.create(to_dict(validate(stored, stored=True)))
    for o in overrides:
        key, sep, value = o.partition("=")
        group = key.lstrip("+~").split("/")[0]
        if o.startswith("-") or not sep or key.startswith(("+", "~", "hydra")) or group in GROUP_FILES:
            what = (f"{o} would choose another {group} config file" if sep and group in GROUP_FILES
                    else f"{o!r} is not a single key=value")
            raise ConfigError(f"resume={target}: {what}, but a resumed run keeps the configuration it was started "
                              f"with; change single keys such as trainer.epochs=50, or start a new run without "
                              f"resume=.")
        check_overrides([o])
        try:
            OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, merge=False, force_add=True)
        except (yaml.YAMLError, OmegaConfBaseException) as ex:
            raise ConfigError(f"resume={target}: cannot read the override {o!r} ({type(ex).__name__}).") from None
    cfg.resume = str(run.resolve())
    return validate(cfg)


def launch(task: Callable[[Any], Any], name: str, extra_dir: str | None, overrides: list[str], job: str) -> None:
    """Run `task` under @hydra.main (run dir, logging, -m sweeps) with these arguments."""
    register_schemas()
    flags = [o for o in overrides if o in ("-m", "--multirun")]  # before the overrides: argparse wants them there
    overrides = [o for o in overrides if o not in flags]
    argv = [f"dltool-{job}", *flags] + (["--config-dir", extra_dir, *DLTOOL_LOGGING] if extra_dir else []) + overrides
    if not any(a.startswith("hydra.job.name=") for a in overrides):
        argv.append(f"hydra.job.name={job}")
    app = hydra.main(version_base=None, config_path=str(config_dir()), config_name=name)(task)
    old = sys.argv
    sys.argv = argv
    try:
        with plugin_choices():
            app()
    finally:
        sys.argv = old
        close_log_files()


def close_log_files() -> None:
    """Close the run dir's train.log once the run is over (Hydra leaves its file handler on the root logger)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(h)
        h.close()
