"""Nothing a user writes runs code: no `_target_`, no `hydra.callbacks`, only the Hydra plugins dltool ships.

Hydra instantiates whatever class a `_target_` names (callbacks, launchers, sweepers, samplers) and Python's
logging.config builds any handler `class`/`()` it is given, so a config file, an override or a stored run
config could run arbitrary Python. dltool's own configs never need either: they name registry entries.
These checks run on the composed config (with its `hydra` node) before anything is launched.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from dltool.config.variants import config_dir
from dltool.errors import ConfigError

# the plugin classes behind the launcher/sweeper/sampler choices dltool ships (configs/hydra, hparams_search)
ALLOWED_TARGETS = {
    "hydra.launcher": {"hydra._internal.core_plugins.basic_launcher.BasicLauncher",
                       "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                       "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
                       "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"},
    "hydra.sweeper": {"hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                      "hydra_plugins.dltool_optuna_sweeper.optuna_sweeper.OptunaSweeper"},
}  # the sweeper's samplers and pruners are chosen by name from literal tables (dltool/train/search.py)
TARGET = re.compile(r"(^|[.{,\[\s'\"])_target_['\"]?\s*[:=]")  # `_target_` as a key, not inside a name
WHY = "a config names registry entries, never Python code"


def targets(node: Any, path: str = "") -> list[str]:
    """Dotted paths of every `_target_` key in a (nested) config or plain dict/list."""
    found = []
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if k == "_target_":
                found.append(here)
            found += targets(v, here)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found += targets(v, f"{path}[{i}]")
    return found


def refuse_targets(cfg: Any, where: str = "the config") -> None:
    """No `_target_` anywhere in a training config (the `hydra` node is checked by check_hydra)."""
    bad = [t for t in targets(cfg) if not t.startswith("hydra.")]
    if bad:
        raise ConfigError(f"{bad[0]} in {where} is refused: dltool never instantiates `_target_` classes "
                          f"({WHY}, so a config cannot run code).")


# The one gate for hydra keys. A user may set these (the command line, a config file's `hydra:` node); every
# other hydra key is refused. A job a sweeper or launcher builds may set no hydra key at all.
USER_HYDRA_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.output_subdir",
                   "hydra.job.name", "hydra.sweeper.", "hydra.launcher.")
USER_HYDRA_GROUPS = {"hydra/launcher": None, "hydra/sweeper": None, "hydra/sweeper/sampler": None,
                     "hydra/sweeper/pruner": None, "hydra/job_logging": "dltool", "hydra/hydra_logging": "dltool"}


def override_key(override: str) -> str:
    """`+hydra.job.env_set.X=1` -> `hydra.job.env_set.X`; `hydra/launcher@x=local` -> `hydra/launcher`."""
    return override.partition("=")[0].strip().lstrip("+~").split("@")[0].strip()


def hydra_key_refusal(key: str, job: bool) -> str | None:
    """Why this hydra key may not be set (None when it may, or when it is not a hydra key)."""
    if not (key == "hydra" or key.startswith(("hydra.", "hydra/"))):
        return None
    if job:
        return "a sweep job may set no hydra key, only the sweep as a whole"
    if key.startswith("hydra/"):
        return None if key in USER_HYDRA_GROUPS else "this hydra group cannot be chosen"
    if key.startswith(("hydra.sweeper.custom_search_space", "hydra.launcher._target_", "hydra.sweeper._target_")):
        return "it names Python code"
    if any(key == k or (k.endswith(".") and key.startswith(k)) for k in USER_HYDRA_KEYS):
        return None
    return "this hydra key cannot be set"


def gate(overrides: list[str], where: str = "the command line", job: bool = False) -> None:
    """The one check of what a user may hand to Hydra: every override of the command line, of a config file's
    `hydra.sweeper.params`, of a stored config and of each job a sweeper or launcher builds (job=True).

    Refused: `_target_` anywhere, hydra keys outside USER_HYDRA_KEYS/USER_HYDRA_GROUPS (callbacks, logging
    handlers, job environment, search path, ...), any hydra key in a job, logging setups other than dltool's.
    """
    for o in overrides:
        key, _, value = str(o).partition("=")
        k = override_key(str(o))
        why = WHY if TARGET.search(str(o)) else hydra_key_refusal(k, job)
        if why is None and USER_HYDRA_GROUPS.get(k) is not None and value.strip() != USER_HYDRA_GROUPS[k]:
            why = f"only dltool's own logging setup ({k}={USER_HYDRA_GROUPS[k]}) is allowed"
        if why is not None:
            raise ConfigError(f"the override {o!r} in {where} is refused: {why} ({WHY}); a user may set only "
                              f"hydra.run.dir, hydra.sweep.dir/subdir, hydra.output_subdir, hydra.job.name, "
                              f"hydra.sweeper.*, hydra.launcher.* and the hydra/launcher and hydra/sweeper groups.")


def check_overrides(overrides: list[str]) -> None:
    """Command-line overrides: the gate (sweep lists and values included, `-m` and flags skipped)."""
    gate([o for o in overrides if not o.startswith("-")])


def check_params(params: Any, where: str) -> None:
    """`hydra.sweeper.params` (from the command line or a config file): each entry becomes every job's override."""
    if params:
        gate([f"{k}={v}" for k, v in dict(params).items()], f"{where} hydra.sweeper.params", job=True)


def check_path(key: str, value: Any, may_be_null: bool = False) -> None:
    """hydra.sweep.subdir, hydra.output_subdir, hydra.job.name: a relative path that stays inside its parent."""
    if value is None and may_be_null:
        return
    text = str(value)
    parts = Path(text).parts
    if not text.strip() or Path(text).is_absolute() or ".." in parts or all(p == "." for p in parts):
        raise ConfigError(f"{key}={text!r} is refused: it must be a relative path inside its parent directory "
                          f"(no '..', not '.', not absolute), so a job never writes into another run.")


def refuse_interpolations(node: Any, where: str, path: str = "") -> None:
    """A stored run config is data: any `${...}` in it (${oc.env:VAR} reads the environment) is refused."""
    if isinstance(node, dict):
        for k, v in node.items():
            refuse_interpolations(v, where, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            refuse_interpolations(v, where, f"{path}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(f"{path}={node!r} in {where} is an interpolation and is refused: a stored run config is "
                          f"data and dltool never resolves it there (it could read the environment or call a "
                          f"resolver); write the value itself.")


@functools.lru_cache(maxsize=None)
def shipped_logging(kind: str) -> dict:
    return yaml.safe_load((config_dir() / "hydra" / kind / "dltool.yaml").read_text())


def check_hydra(node: DictConfig) -> None:
    """The composed `hydra` node: no callbacks, dltool's logging setup, only the shipped plugins' classes."""
    hc = OmegaConf.to_container(node, resolve=False)
    if hc.get("callbacks"):
        raise ConfigError(f"hydra.callbacks ({', '.join(str(k) for k in hc['callbacks'])}) is refused: dltool runs no "
                          f"Hydra callbacks ({WHY}).")
    for kind in ("job_logging", "hydra_logging"):
        if hc.get(kind) != shipped_logging(kind):
            raise ConfigError(f"hydra.{kind} differs from dltool's own logging setup (hydra/{kind}=dltool) and is "
                              f"refused: logging handlers are classes, and {WHY}.")
    job = hc.get("job") or {}
    if job.get("env_set") or job.get("env_copy"):
        raise ConfigError("hydra.job.env_set/env_copy is refused: jobs run with the environment dltool was started in.")
    check_params((hc.get("sweeper") or {}).get("params"), "the config's")
    check_path("hydra.sweep.subdir", (hc.get("sweep") or {}).get("subdir"))
    check_path("hydra.output_subdir", hc.get("output_subdir"), may_be_null=True)
    check_path("hydra.job.name", job.get("name"), may_be_null=True)
    if "/" in str(job.get("name") or ""):
        raise ConfigError(f"hydra.job.name={job['name']!r} is refused: it names the run's log file, so it holds "
                          f"no '/'.")
    if (hc.get("sweeper") or {}).get("custom_search_space"):
        raise ConfigError(f"hydra.sweeper.custom_search_space is refused: it names a Python function ({WHY}).")
    for t in targets(hc, "hydra"):
        section = t.rsplit("._target_", 1)[0]
        value = OmegaConf.select(node, t.removeprefix("hydra."), throw_on_resolution_failure=False)
        if str(value) not in ALLOWED_TARGETS.get(section, set()):
            raise ConfigError(f"{t}={value} is refused: only the launchers and sweepers dltool ships may be "
                              f"chosen (hydra/launcher=local|slurm, hydra/sweeper=optuna via hparams_search=...).")
