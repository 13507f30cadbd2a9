"""Optuna pieces shared by dltool's sweeper plugin (hydra_plugins/dltool_optuna_sweeper) and the sweep jobs.

Samplers and pruners are looked up by name in two literal tables (a config names a choice, it never
imports a class); the storage is an RDB URL (sqlite:///..., postgresql://..., mysql://...) or an Optuna
journal file (`journal:PATH` or a path ending in .journal) on a shared filesystem. A job of a search
with a pruner reports its monitored metric every epoch to its trial through the same storage
(TrialReporter) and stops with "pruned at epoch k" when the pruner says so.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from dltool.errors import ConfigError
from dltool.registry import lookup
from dltool.train.callbacks import FIRST, Callback, FitState

log = logging.getLogger(__name__)

# name -> (class, what it does); a config's keys besides `name` are passed as keyword arguments
SAMPLERS: dict[str, tuple[Callable[..., optuna.samplers.BaseSampler], str]] = {
    "random": (optuna.samplers.RandomSampler, "independent uniform / log-uniform draws (the textbook default)"),
    "tpe": (optuna.samplers.TPESampler, "Tree-structured Parzen Estimator: random first, then model-guided"),
    "grid": (optuna.samplers.GridSampler, "every combination of choice/range values, each once"),
    "cmaes": (optuna.samplers.CmaEsSampler, "CMA evolution strategy for continuous ranges"),
    "qmc": (optuna.samplers.QMCSampler, "quasi-random (Sobol) points that cover the space evenly"),
    "gp": (optuna.samplers.GPSampler, "Gaussian-process Bayesian optimization"),
}
PRUNERS: dict[str, tuple[Callable[..., optuna.pruners.BasePruner], str]] = {
    "none": (optuna.pruners.NopPruner, "never stop a trial early"),
    "median": (optuna.pruners.MedianPruner, "stop a trial worse than the median of earlier trials at the same epoch"),
    "successive_halving": (optuna.pruners.SuccessiveHalvingPruner,
                           "asynchronous successive halving: keep the best 1/reduction_factor at each rung"),
    "hyperband": (optuna.pruners.HyperbandPruner, "several successive-halving brackets with different budgets"),
}
PRUNED_ATTR = "dltool_pruned_at_epoch"  # set on the trial by the job; the sweeper tells the trial PRUNED


def build_sampler(spec: dict, grid_space: dict[str, list] | None = None) -> optuna.samplers.BaseSampler:
    """{'name': 'tpe', 'seed': 0, ...} -> the sampler; the grid sampler also takes the search space's values."""
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    cls = lookup({k: v[0] for k, v in SAMPLERS.items()}, str(spec.get("name")), "hydra.sweeper.sampler.name")
    if cls is optuna.samplers.GridSampler:
        return cls(grid_space or {}, **kwargs)
    return cls(**kwargs)


def build_pruner(spec: dict | None) -> optuna.pruners.BasePruner:
    """{'name': 'median', 'n_startup_trials': 5, ...} -> the pruner (none: never prune)."""
    spec = dict(spec or {"name": "none"})
    cls = lookup({k: v[0] for k, v in PRUNERS.items()}, str(spec.pop("name", "none")), "hydra.sweeper.pruner.name")
    return cls(**spec)


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith(".journal")


def journal_path(url: str) -> str:
    return url[len("journal:"):].removeprefix("//") if url.startswith("journal:") else url


def open_storage(url: str | None) -> BaseStorage | None:
    """None (in memory), an RDBStorage for a URL, or a JournalStorage for `journal:PATH` / `PATH.journal`."""
    if url is None:
        return None
    url = str(url)
    if is_journal(url):
        return JournalStorage(JournalFileBackend(journal_path(url)))
    if "://" not in url:
        raise ConfigError(f"hydra.sweeper.storage={url!r} is not a storage; use an RDB URL such as "
                          f"sqlite:///PATH.db or postgresql://HOST/DB, or an Optuna journal file journal:PATH.")
    return RDBStorage(url)


def load_study(name: str, storage: Any, pruner: optuna.pruners.BasePruner | None = None,
               attempts: int = 20) -> optuna.Study:
    """The study a sweep job belongs to; a few retries ride out a storage that another writer holds locked."""
    for attempt in range(attempts):
        try:
            return optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        except Exception:  # noqa: BLE001 - e.g. sqlite 'database is locked' while another worker writes
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


class TrialReporter(Callback):
    """Report the monitored metric to this job's Optuna trial every epoch; stop when the pruner says so."""

    priority = FIRST  # before best.pt and early stopping, so a pruned epoch still gets its checkpoints

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return  # early stopping reports the divergence; a NaN would only confuse the pruner
        self.trial.report(float(value), state.epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_ATTR, state.epoch)
            state.stop, state.stop_reason = True, f"pruned at epoch {state.epoch} (the trial's {self.monitor} " \
                                                  f"{float(value):.4g} was worse than the pruner allows)"


def trial_reporter(sweeper: dict, trial_number: int, monitor: str) -> TrialReporter | None:
    """The reporter for sweep job `trial_number`, or None when the search has no pruner or no storage."""
    pruner = dict(sweeper.get("pruner") or {"name": "none"})
    ours = str(sweeper.get("_target_", "")).startswith("hydra_plugins.dltool_optuna_sweeper.")
    if not ours or pruner.get("name", "none") == "none" or sweeper.get("storage") is None:
        return None
    storage = open_storage(sweeper["storage"])
    study = load_study(str(sweeper["study_name"]), storage, build_pruner(pruner))
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)
    return TrialReporter(optuna.Trial(study, trial_id), monitor)
