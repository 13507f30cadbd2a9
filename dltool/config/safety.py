"""Nothing a user writes runs code: no `_target_`, no `hydra.callbacks`, only the Hydra plugins dltool ships.

Hydra instantiates whatever class a `_target_` names (callbacks, launchers, sweepers, samplers) and Python's
logging.config builds any handler `class`/`()` it is given, so a config file, an override or a stored run
config could run arbitrary Python. dltool's own configs never need either: they name registry entries.
These checks run on the composed config (with its `hydra` node) before anything is launched.
"""

from __future__ import annotations

import functools
import re
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
FORBIDDEN_OVERRIDES = ("hydra.callbacks", "hydra.job_logging", "hydra.hydra_logging", "hydra/job_logging",
                       "hydra/hydra_logging", "hydra/callbacks", "hydra.job.env_set", "hydra.job.env_copy",
                       "hydra.sweeper.custom_search_space")
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


def check_overrides(overrides: list[str]) -> None:
    """Refuse overrides that would make Hydra build objects or change the environment of jobs."""
    for o in overrides:
        key = o.partition("=")[0].lstrip("+~")
        if TARGET.search(o) or key.startswith(FORBIDDEN_OVERRIDES):
            raise ConfigError(f"the override {o!r} is refused: dltool allows no `_target_`, hydra.callbacks, "
                              f"logging handlers or job environment from the command line ({WHY}).")


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
    if (hc.get("job") or {}).get("env_set"):
        raise ConfigError("hydra.job.env_set is refused: jobs run with the environment dltool was started in.")
    if (hc.get("sweeper") or {}).get("custom_search_space"):
        raise ConfigError(f"hydra.sweeper.custom_search_space is refused: it names a Python function ({WHY}).")
    for t in targets(hc, "hydra"):
        section = t.rsplit("._target_", 1)[0]
        value = OmegaConf.select(node, t.removeprefix("hydra."), throw_on_resolution_failure=False)
        if str(value) not in ALLOWED_TARGETS.get(section, set()):
            raise ConfigError(f"{t}={value} is refused: only the launchers and sweepers dltool ships may be "
                              f"chosen (hydra/launcher=local|slurm, hydra/sweeper=optuna via hparams_search=...).")
