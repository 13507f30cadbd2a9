"""Settle a `dltool train -m` sweep before Hydra launches it: sweep dir, Optuna direction, storage, threads.

The Optuna sweeper (hydra_plugins/dltool_optuna_sweeper) needs a few things it cannot work out itself:
- the direction must follow trainer.mode (min -> minimize, max -> maximize);
- its SQLite or journal file must sit in a directory that exists before the study is created, so the sweep
  dir is fixed (the `${now:...}` in its name resolved once) and created here;
- a grid sweep continued in the same sweep dir must not overwrite the earlier jobs' dirs (Hydra numbers
  jobs from 0 on every invocation): its jobs get an r<N>_ prefix. Optuna jobs are named by trial number,
  unique in a continued or shared study, and trial n draws with seed + n, so no trial repeats another.
- jobs that run side by side split the machine's cores (DLTOOL_JOB_THREADS torch threads each).
Each invocation is logged to <sweep dir>/invocations.yaml; `dltool sweep-report` reads it back.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import OmegaConf

from dltool.commands.rundir import free_name, fresh_dir, os_reason
from dltool.commands.train import JOB_THREADS
from dltool.config.compose import compose
from dltool.errors import ConfigError
from dltool.registry import resolve
from dltool.train.search import is_journal, journal_path

INVOCATIONS = "invocations.yaml"
DIRECTIONS = {"min": "minimize", "max": "maximize"}
NOISY_PREFIXES = ("Launching", "Joblib.Parallel", "Study name:", "Storage:", "Sampler:", "Directions:",
                  "Best parameters:", "Best value:", "Updating num of trials", "Submitit")
NOISY_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins.hydra_joblib_launcher._core",
                 "hydra_plugins.hydra_joblib_launcher.joblib_launcher", "hydra_plugins.dltool_optuna_sweeper._impl",
                 "hydra_plugins.hydra_submitit_launcher.submitit_launcher")


@dataclass
class Plan:
    """What dltool adds to the user's overrides, and what it tells the user before the first job."""

    sweep_dir: Path
    overrides: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # printed with console.warning
    created: bool = False              # this invocation created the sweep dir (a refused launch removes it)
    storage_file: Path | None = None   # a local SQLite or journal file, created by the first trial


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


def plan(name: str, extra_dir: str | None, overrides: list[str], cfg: Any = None) -> Plan:
    """Work out the extra overrides for this sweep and create its dir (see the module docstring).

    cfg: compose_full's result for these arguments when the caller has it already (composed once)."""
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
        raise ConfigError("the old hydra-optuna-sweeper package (Optuna 2.x) is installed beside dltool's own Optuna "
                          "sweeper and both claim hydra/sweeper=optuna; remove it: pip uninstall hydra-optuna-sweeper.")
    cfg = compose_full(name, extra_dir, overrides) if cfg is None else cfg
    hc = cfg.hydra
    if "SlurmLauncher" in str(hc.launcher.get("_target_", "")) and not shutil.which("srun"):
        raise ConfigError("the SLURM launcher (hydra/launcher=slurm) needs a SLURM cluster and this machine has no "
                          "srun; run the same command on the cluster's login node.")
    sweep_dir = Path(str(hc.sweep.dir))
    if given(overrides, "hydra.sweep.dir") is None:  # a sweep started in the same second gets a dir of its own
        sweep_dir = free_name(sweep_dir)
    p = Plan(sweep_dir, created=not sweep_dir.exists())
    if given(overrides, "hydra.sweep.dir") is None:
        p.overrides.append(f"hydra.sweep.dir='{sweep_dir}'")
    earlier = read_invocations(sweep_dir)
    optuna_sweep = is_optuna(hc.sweeper)
    if optuna_sweep:
        plan_optuna(cfg, overrides, p, len(earlier))  # its job dirs are trial numbers: unique in a continued study
    # Hydra numbers a grid's jobs, and an in-memory study its trials, from 0 on every invocation
    numbered_from_0 = not optuna_sweep or hc.sweeper.get("storage") is None
    prefix = f"r{len(earlier)}_" if earlier and numbered_from_0 else ""
    if prefix and given(overrides, "hydra.sweep.subdir") is None:
        p.overrides.append(f"hydra.sweep.subdir={prefix}${{hydra.job.num}}")
    split_threads(hc, optuna_sweep)
    try:
        if given(overrides, "hydra.sweep.dir") is None:  # atomically: a sweep started at the same time takes _2
            p.sweep_dir = sweep_dir = fresh_dir(sweep_dir)
            p.overrides = [f"hydra.sweep.dir='{sweep_dir}'" if o.startswith("hydra.sweep.dir=") else o
                           for o in p.overrides]
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise ConfigError(f"cannot create the sweep directory {sweep_dir}: {os_reason(ex)}.") from None
    try:
        if p.storage_file is not None:
            p.storage_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        discard_if_empty(p)
        raise ConfigError(f"hydra.sweeper.storage: cannot create the folder {p.storage_file.parent} of "
                          f"{p.storage_file}: {os_reason(ex)} (is a part of it a file?).") from None
    write_invocation(sweep_dir, earlier, overrides, prefix)
    if "mlflow" in list(cfg.trainer.loggers) and not (sweep_dir / "mlflow.json").is_file():  # the parent run
        resolve("dltool.train.mlflow_logger:start_parent")(sweep_dir, str(cfg.name), cfg.trainer.mlflow_uri,
                                                           Path("outputs"))
    return p


def is_optuna(sweeper: Any) -> bool:
    return str(sweeper.get("_target_", "")).startswith("hydra_plugins.dltool_optuna_sweeper.")


def split_threads(hc: Any, optuna_sweep: bool) -> None:
    """Parallel jobs on one machine share its cores: each job gets cores // jobs torch threads (JOB_THREADS)."""
    parallel = 1
    if "JoblibLauncher" in str(hc.launcher.get("_target_", "")):
        n = int(hc.launcher.get("n_jobs") or 1)
        parallel = os.cpu_count() or 1 if n < 0 else n
        if optuna_sweep:
            parallel = min(parallel, int(hc.sweeper.n_jobs))
    elif optuna_sweep and int(hc.sweeper.n_jobs) > 1:
        raise ConfigError(f"hydra.sweeper.n_jobs={hc.sweeper.n_jobs} runs trials side by side in worker processes; "
                          f"add hydra/launcher=local (and hydra.launcher.n_jobs={hc.sweeper.n_jobs}), or set "
                          f"hydra.sweeper.n_jobs=1.")
    if parallel > 1:
        os.environ[JOB_THREADS] = str(max(1, (os.cpu_count() or 1) // parallel))
    else:
        os.environ.pop(JOB_THREADS, None)


def plan_optuna(cfg: Any, overrides: list[str], p: Plan, n_earlier: int) -> None:
    """Direction from trainer.mode, the storage dir created (after every check), the plan's notes."""
    sw, mode, monitor = cfg.hydra.sweeper, str(cfg.trainer.mode), str(cfg.trainer.monitor)
    want = DIRECTIONS.get(mode)
    if want is None:
        raise ConfigError(f"trainer.mode={mode!r} is not valid; use min or max.")
    user = given(overrides, "hydra.sweeper.direction")
    if user is not None and user != want:
        raise ConfigError(f"hydra.sweeper.direction={user} contradicts trainer.mode={mode} (monitor {monitor}); "
                          f"leave the direction out and dltool sets it to {want}.")
    p.overrides.append(f"hydra.sweeper.direction={want}")
    check_sweeper(sw)
    check_space(sw, overrides)
    storage = None if sw.storage is None else str(sw.storage)
    pruner = str(sw.pruner.get("name", "none"))
    if pruner != "none" and storage is None:
        raise ConfigError(f"hydra.sweeper.pruner.name={pruner} needs a storage the jobs can reach; set "
                          f"hydra.sweeper.storage (e.g. sqlite:///PATH.db or journal:PATH).")
    if storage:
        local = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else \
            journal_path(storage) if is_journal(storage) else None
        p.storage_file = Path(local) if local else None
    p.notes.append(f"optuna {sw.sampler.name} search: {sw.n_trials} trials, {want} {monitor}, "
                   f"seed {sw.sampler.get('seed')}, pruner {pruner}, "
                   f"storage {storage or 'in memory (cannot be continued)'}")
    if n_earlier:
        p.notes.append(f"study '{sw.study_name}' already has jobs in {p.sweep_dir} ({n_earlier} earlier "
                       f"invocation(s)): joining it while it runs, continuing it once it is finished")
    check_dropout(cfg, overrides, p)


STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+", "journal:")


def check_sweeper(sw: Any) -> None:
    """n_trials, n_jobs, max_failure_rate and the storage URL, each in one sentence before the study opens."""
    for key, low in (("n_trials", 1), ("n_jobs", 1)):
        value = sw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"hydra.sweeper.{key}={value} is not valid; use a whole number >= {low}.")
    rate = sw.get("max_failure_rate")
    if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:  # NaN fails both comparisons
        raise ConfigError(f"hydra.sweeper.max_failure_rate={rate} is not valid; use a share of trials from 0 "
                          f"(stop at the first failure) to 1 (never stop).")
    url = None if sw.get("storage") is None else str(sw.storage)
    if url is not None and not is_journal(url) and not url.startswith(STORAGE_SCHEMES):
        raise ConfigError(f"hydra.sweeper.storage={url!r} is not a storage dltool can open; use sqlite:///PATH.db, "
                          f"postgresql://HOST/DB, mysql://HOST/DB or journal:PATH.")
    local = url[len("sqlite:///"):] if url and url.startswith("sqlite:///") else journal_path(url) if url and \
        is_journal(url) else None
    if local is not None and (not local.strip() or Path(local).is_dir()):
        raise ConfigError(f"hydra.sweeper.storage={url!r} names {'no file' if not local.strip() else 'a directory'}; "
                          f"give the path of a file, e.g. sqlite:///${{hydra.sweep.dir}}/optuna.db.")
    blocked = next((a for a in Path(local or ".").parents if a.exists() and not a.is_dir()), None) if local else None
    if blocked is not None:
        raise ConfigError(f"hydra.sweeper.storage={url!r} cannot be created: {blocked} is a file, not a folder.")


def check_space(sw: Any, overrides: list[str]) -> None:
    """The search space (hydra.sweeper.params and -m sweeps): bounds in order, known tags, grid-able for grid."""
    given = sw.get("params")
    params = [f"{k}={v}" for k, v in (OmegaConf.to_container(given, resolve=False) if given else {}).items()]
    params += [o for o in overrides if not o.startswith(("-", "hydra", "+hydra")) and "=" in o]
    grid = str(sw.sampler.get("name")) == "grid"
    for o in OverridesParser.create().parse_overrides(params):
        if not o.is_sweep_override():
            continue
        key, v = o.get_key_element(), o.value()
        text = o.input_line or f"{key}={o.get_value_element_as_str()}"
        if isinstance(v, IntervalSweep):
            bad_tags = sorted(set(v.tags or ()) - {"log"})
            if bad_tags:
                raise ConfigError(f"{text}: tag {bad_tags[0]!r} is not known; the Optuna sweeper reads tag(log, ...).")
            if not v.start < v.end:
                raise ConfigError(f"{text}: interval({v.start}, {v.end}) needs low < high; write "
                                  f"interval({min(v.start, v.end)}, {max(v.start, v.end)}).")
            if "log" in (v.tags or ()) and v.start <= 0:
                raise ConfigError(f"{text}: a log scale needs low > 0 (got {v.start}).")
            if grid:
                raise ConfigError(f"{text}: hydra/sweeper/sampler=grid tries every value of choice(...) or "
                                  f"range(...); an interval has no list of values (use another sampler or a choice).")
        elif o.is_discrete_sweep() and not list(o.sweep_string_iterator()):
            raise ConfigError(f"{text} holds no values; a range(start, stop) needs start < stop.")


def check_dropout(cfg: Any, overrides: list[str], p: Plan) -> None:
    """Searching model.dropout only does something when a layer of the model reads ${model.dropout}."""
    swept = "model.dropout" in (cfg.hydra.sweeper.get("params") or {}) or given(overrides, "model.dropout")
    layers = OmegaConf.to_container(cfg.model, resolve=False).get("layers", [])
    if swept and "${model.dropout}" not in str(layers):
        p.warnings.append(f"model.dropout is searched but no layer of model "
                          f"'{cfg.model.name}' uses ${{model.dropout}}, so it changes nothing")


def discard_if_empty(p: Plan) -> None:
    """A launch refused before any job ran (no SLURM, a launcher error) leaves no empty sweep dir behind. The
    sweep's MLflow parent run (trainer.loggers with mlflow) ends here."""
    if (p.sweep_dir / "mlflow.json").is_file():
        resolve("dltool.train.mlflow_logger:end_parent")(p.sweep_dir)
    if not p.created or not p.sweep_dir.is_dir():
        return
    if any((d / ".hydra").is_dir() for d in p.sweep_dir.iterdir()):
        return
    shutil.rmtree(p.sweep_dir, ignore_errors=True)


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
