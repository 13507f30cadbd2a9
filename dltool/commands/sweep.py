"""Settle a `dltool train -m` sweep before Hydra launches it: sweep dir, Optuna direction, storage, continuation.

Hydra's Optuna sweeper needs a few things it cannot work out itself:
- the direction must follow trainer.mode (min -> minimize, max -> maximize);
- its SQLite file must sit in a directory that exists before the study is created, so the sweep dir is
  fixed (the `${now:...}` in its name resolved once) and created here;
- a study continued in the same sweep dir must not overwrite the earlier jobs' dirs (Hydra numbers jobs
  from 0 on every invocation) nor repeat their trials (a seeded sampler proposes the same points again).
Each invocation is logged to <sweep dir>/invocations.yaml; `dltool sweep-report` reads it back.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import OmegaConf

from dltool.commands.rundir import free_name, os_reason
from dltool.config.compose import compose
from dltool.errors import ConfigError

INVOCATIONS = "invocations.yaml"
DIRECTIONS = {"min": "minimize", "max": "maximize"}
NOISY_PREFIXES = ("Launching", "Joblib.Parallel", "Study name:", "Storage:", "Sampler:", "Directions:",
                  "Best parameters:", "Best value:", "Updating num of trials", "Submitit")
NOISY_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins.hydra_joblib_launcher._core",
                 "hydra_plugins.hydra_joblib_launcher.joblib_launcher", "hydra_plugins.hydra_optuna_sweeper._impl",
                 "hydra_plugins.hydra_submitit_launcher.submitit_launcher")


@dataclass
class Plan:
    """What dltool adds to the user's overrides, and what it tells the user before the first job."""

    sweep_dir: Path
    overrides: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # printed with console.warning


def given(overrides: list[str], key: str) -> str | None:
    """The value the user set for `key` on the command line (None when not set)."""
    for o in overrides:
        k, sep, v = o.lstrip("+").partition("=")
        if sep and k == key:
            return v
    return None


def compose_full(name: str, extra_dir: str | None, overrides: list[str]) -> Any:
    """The composed config including its `hydra` node (sweeper, launcher, sweep dir)."""
    return compose(name, extra_dir, overrides, with_hydra=True)


def plan(name: str, extra_dir: str | None, overrides: list[str]) -> Plan:
    """Work out the extra overrides for this sweep and create its dir (see the module docstring)."""
    cfg = compose_full(name, extra_dir, overrides)
    hc = cfg.hydra
    sweep_dir = Path(str(hc.sweep.dir))
    if given(overrides, "hydra.sweep.dir") is None:  # a sweep started in the same second gets a dir of its own
        sweep_dir = free_name(sweep_dir)
    p = Plan(sweep_dir)
    if given(overrides, "hydra.sweep.dir") is None:
        p.overrides.append(f"hydra.sweep.dir='{sweep_dir}'")
    earlier = read_invocations(sweep_dir)
    if earlier and given(overrides, "hydra.sweep.subdir") is None:
        p.overrides.append(f"hydra.sweep.subdir=r{len(earlier)}_${{hydra.job.num}}")
    if "optuna" in str(hc.sweeper.get("_target_", "")):
        plan_optuna(cfg, overrides, p, len(earlier))
    if "SlurmLauncher" in str(hc.launcher.get("_target_", "")) and not shutil.which("srun"):
        raise ConfigError("the SLURM launcher (hydra/launcher=slurm) needs a SLURM cluster and this machine has no "
                          "srun; run the same command on the cluster's login node.")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise ConfigError(f"cannot create the sweep directory {sweep_dir}: {os_reason(ex)}.") from None
    prefix = f"r{len(earlier)}_" if earlier else ""
    write_invocation(sweep_dir, earlier, overrides, prefix)
    return p


def plan_optuna(cfg: Any, overrides: list[str], p: Plan, n_earlier: int) -> None:
    """Direction from trainer.mode, the storage dir created, a shifted seed when a study is continued."""
    sw, mode, monitor = cfg.hydra.sweeper, str(cfg.trainer.mode), str(cfg.trainer.monitor)
    want = DIRECTIONS.get(mode)
    if want is None:
        raise ConfigError(f"trainer.mode={mode!r} is not valid; use min or max.")
    user = given(overrides, "hydra.sweeper.direction")
    if user is not None and user != want:
        raise ConfigError(f"hydra.sweeper.direction={user} contradicts trainer.mode={mode} (monitor {monitor}); "
                          f"leave the direction out and dltool sets it to {want}.")
    p.overrides.append(f"hydra.sweeper.direction={want}")
    storage = None if sw.storage is None else str(sw.storage)
    if storage and storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    seed = sw.sampler.get("seed")
    if n_earlier and storage and seed is not None and given(overrides, "hydra.sweeper.sampler.seed") is None:
        p.overrides.append(f"hydra.sweeper.sampler.seed={int(seed) + n_earlier}")
        seed = int(seed) + n_earlier
    sampler = str(sw.sampler.get("_target_", "")).rsplit(".", 1)[-1].replace("Sampler", "").lower()
    p.notes.append(f"optuna {sampler} search: {sw.n_trials} trials, {want} {monitor}, seed {seed}, "
                   f"storage {storage or 'in memory (cannot be continued)'}")
    if n_earlier:
        p.notes.append(f"continuing study '{sw.study_name}' ({n_earlier} earlier invocation(s)); "
                       f"new jobs go to {p.sweep_dir}/r{n_earlier}_*")
    check_dropout(cfg, overrides, p)


def check_dropout(cfg: Any, overrides: list[str], p: Plan) -> None:
    """Searching model.dropout only does something when a layer of the model reads ${model.dropout}."""
    swept = "model.dropout" in (cfg.hydra.sweeper.get("params") or {}) or given(overrides, "model.dropout")
    layers = OmegaConf.to_container(cfg.model, resolve=False).get("layers", [])
    if swept and "${model.dropout}" not in str(layers):
        p.warnings.append(f"model.dropout is searched but no layer of model "
                          f"'{cfg.model.name}' uses ${{model.dropout}}, so it changes nothing")


def read_invocations(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / INVOCATIONS
    if path.is_file():
        return list(yaml.safe_load(path.read_text()) or [])
    jobs = [d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()] if sweep_dir.is_dir() else []
    return [{"args": [], "prefix": ""}] if jobs else []


def write_invocation(sweep_dir: Path, earlier: list[dict], overrides: list[str], prefix: str) -> None:
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "args": [o for o in overrides if not o.startswith("-")],
             "prefix": prefix}
    (sweep_dir / INVOCATIONS).write_text(yaml.safe_dump(earlier + [entry], sort_keys=False))


class DropNoise(logging.Filter):
    """Keep Hydra's one line per job (`#3 : key=value ...`); drop batch and study chatter.

    The joblib launcher numbers the jobs of each batch from 0 (`#0, #1, #0, #1`); with `renumber` the
    lines carry the job's real number, the one its dir and `job N done` line use.
    """

    def __init__(self, renumber: bool = False) -> None:
        super().__init__()
        self.renumber, self.count = renumber, 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.lstrip().startswith(NOISY_PREFIXES):
            return False
        if self.renumber and message.startswith("\t#") and " : " in message:
            record.msg, record.args = f"\t#{self.count} : {message.split(' : ', 1)[1]}", ()
            self.count += 1
        return True


def quiet_plugins() -> None:
    """Optuna resets its own log level when imported, so import it first, then quiet it and the launchers."""
    warnings.filterwarnings("ignore", module="optuna")
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # the sweeper plugin is optional at runtime
        pass
    for name in NOISY_LOGGERS:
        logging.getLogger(name).addFilter(DropNoise(renumber=name.endswith("joblib_launcher._core")))
    logging.getLogger("alembic").setLevel(logging.WARNING)
