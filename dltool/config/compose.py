"""Hydra at the edge: the config tree, composing it with overrides, and running a task as Hydra runs a job.

Everything here returns validated dataclasses (via config.schema) or one-sentence ConfigErrors;
nothing below config/ ever sees a DictConfig.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir, version
from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path, run_and_report
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import configure_log, run_job
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

# hydra/sweeper=optuna also where an editable install hides dltool's plugin from Hydra's namespace scan
import hydra_plugins.dltool_optuna_sweeper.config  # noqa: F401  (importing it registers its configs)
from dltool import plugins
from dltool.config.safety import check_hydra, check_overrides, refuse_targets
from dltool.config.schema import register_schemas, to_dict, translate, validate
from dltool.config.variants import PLUGGABLE, SELECTOR, config_dir, plugin_variants, rewrite_selectors
from dltool.errors import ConfigError
from dltool.registry import closest, unknown

MULTIRUN_FLAGS = ("-m", "--multirun")


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
    flag = next((a for a in args if a.startswith("-") and a not in MULTIRUN_FLAGS), None)
    if flag is not None:  # Hydra's own flags are never read: --experimental-rerun would unpickle a file
        raise ConfigError(f"{flag!r} is not an option of this command: after the command come a config file, "
                          f"key=value overrides and -m for a sweep (Hydra's own flags such as --cfg, --info and "
                          f"--experimental-rerun are not read); `dltool CMD --help` lists the command's options.")
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


class SweepLoader(ConfigLoaderImpl):
    """Hydra's config loader, composing each sweep job's config once: Hydra's sweeper composes every job of a batch
    to check it (`validate_batch_is_legal`) and its launcher composes it again to run it; the second gets a copy."""

    def __init__(self, config_search_path: Any) -> None:
        super().__init__(config_search_path=config_search_path)
        self.composed: dict[tuple[str, ...], Any] = {}

    def load_sweep_config(self, master_config: Any, sweep_overrides: list[str]) -> Any:
        key = tuple(sweep_overrides)
        if key not in self.composed:
            self.composed[key] = super().load_sweep_config(master_config, sweep_overrides)
        return copy.deepcopy(self.composed[key])  # the launcher writes hydra.job.num into its copy

    def __getstate__(self) -> dict:
        """Copies (the joblib launcher deep-copies Hydra's singletons for every job it starts, while the Optuna
        sweeper's other trial threads compose theirs) start without the cache: iterating it while another thread
        adds a job raised 'dictionary changed size during iteration'."""
        return {**self.__dict__, "composed": {}}


def search_path(extra_dir: str | None) -> Any:
    """dltool's configs, with a user's config file's folder in front (what Hydra's --config-dir does)."""
    path = create_config_search_path(f"file://{config_dir()}")
    if extra_dir:
        path.prepend(provider="command-line", path=f"file://{os.path.abspath(extra_dir)}",
                     anchor=SearchPathQuery(provider="schema"))
    return path


def launch(task: Callable[[Any], Any], name: str, extra_dir: str | None, overrides: list[str], job: str,
           composed: Any = None) -> None:
    """Run `task` as Hydra's run or multirun does (run dir, .hydra/, logging, sweeper and launcher plugins).

    Not through @hydra.main: no command line is parsed a second time (Hydra's own flags such as --cfg or
    --experimental-rerun, which unpickles a file, are never read) and no mode probe composes the config once more.
    composed: a single run's config as compose() returned it (its hydra.run.dir already reserved): it runs as
    is, so `dltool train` composes its config once.
    """
    register_schemas()
    version.setbase(None)  # what @hydra.main(version_base=None) sets: Hydra 1.3's defaults (no chdir into the run)
    multirun = any(o in MULTIRUN_FLAGS for o in overrides)
    overrides = [o for o in overrides if o not in MULTIRUN_FLAGS]
    overrides = ([*DLTOOL_LOGGING] if extra_dir else []) + overrides
    named = any(a.startswith("hydra.job.name=") for a in overrides)  # the user's name wins
    if not named:
        overrides.append(f"hydra.job.name={job}")
    GlobalHydra.instance().clear()
    app = Hydra(task_name=f"dltool-{job}", config_loader=SweepLoader(search_path(extra_dir)))
    GlobalHydra.instance().initialize(app)
    try:
        with plugin_choices():
            if multirun:
                run_and_report(lambda: app.multirun(config_name=name, task_function=task, overrides=overrides))
            elif composed is None:
                run_and_report(lambda: app.run(config_name=name, task_function=task, overrides=overrides).return_value)
            else:
                run_and_report(lambda: run_composed(app, composed, task, None if named else job))
    finally:
        GlobalHydra.instance().clear()
        close_log_files()


def at_run_dir(cfg: Any, run_dir: Path) -> Any:
    """The composed config (with its hydra node) set to run in the directory reserved for it."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.run.dir = str(run_dir)
    return cfg


def run_composed(app: Any, cfg: Any, task: Callable[[Any], Any], job: str | None) -> Any:
    """Hydra.run's steps on a config composed before: its logging, its callbacks (none: dltool refuses
    hydra.callbacks), the job in hydra.run.dir; the task's exception is raised here as Hydra.run raises it.
    job: hydra.job.name (None: the one the user gave)."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.RUN
        if job is not None:
            cfg.hydra.job.name = job
    configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=cfg.hydra.job.config_name)
    ret = run_job(hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
                  task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None)
    callbacks.on_run_end(config=cfg, config_name=cfg.hydra.job.config_name, job_return=ret)
    return ret.return_value


def close_log_files() -> None:
    """Close the run dir's train.log once the run is over (Hydra leaves its file handler on the root logger)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(h)
        h.close()
