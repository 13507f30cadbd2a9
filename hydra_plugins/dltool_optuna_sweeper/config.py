"""The sweeper's config schema, registered in Hydra's ConfigStore when Hydra scans its plugins.

hydra/sweeper=optuna, hydra/sweeper/sampler=random|tpe|grid|cmaes|qmc|gp and
hydra/sweeper/pruner=none|median|successive_halving|hyperband. A sampler or pruner is chosen by `name`
from dltool's literal tables (dltool/train/search.py): nothing here imports a class named in a config,
and a key the chosen sampler or pruner does not have is refused when the config is composed.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class RandomSamplerConf:
    name: str = "random"
    seed: Optional[int] = None  # trial n is sampled with seed + n, so parallel workers never repeat a point


@dataclass
class TPESamplerConf:
    name: str = "tpe"
    seed: Optional[int] = None
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    n_ei_candidates: int = 24
    multivariate: bool = False
    constant_liar: bool = True  # running trials count as bad guesses, so parallel workers spread out


@dataclass
class GridSamplerConf:
    name: str = "grid"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    name: str = "cmaes"
    seed: Optional[int] = None
    n_startup_trials: int = 1


@dataclass
class QMCSamplerConf:
    name: str = "qmc"
    seed: Optional[int] = None
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclass
class GPSamplerConf:
    name: str = "gp"
    seed: Optional[int] = None
    n_startup_trials: int = 10


@dataclass
class NoPrunerConf:
    name: str = "none"


@dataclass
class MedianPrunerConf:
    name: str = "median"
    n_startup_trials: int = 5  # trials that always run to the end before pruning starts
    n_warmup_steps: int = 0  # epochs of every trial that are never pruned
    interval_steps: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    name: str = "successive_halving"
    min_resource: Any = "auto"  # epochs before the first rung (auto: from the first finished trials)
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class HyperbandPrunerConf:
    name: str = "hyperband"
    min_resource: int = 1
    max_resource: Any = "auto"  # the most epochs a trial runs (auto: from the first finished trial)
    reduction_factor: int = 3


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dltool_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: str = "minimize"  # minimize | maximize (dltool sets it from trainer.mode)
    storage: Optional[str] = None  # RDB URL or journal:PATH; null keeps the study in memory
    study_name: Optional[str] = None
    n_trials: int = 20  # trials this study runs in all workers together (a finished study: this many more)
    n_jobs: int = 1  # trials running at once in this process (asynchronously: a free worker starts the next)
    max_failure_rate: float = 0.0
    params: Optional[Dict[str, str]] = None  # key: interval(a, b) | tag(log, interval(a, b)) | choice(...) | range(...)


SAMPLER_CONFS = {"random": RandomSamplerConf, "tpe": TPESamplerConf, "grid": GridSamplerConf,
                 "cmaes": CmaEsSamplerConf, "qmc": QMCSamplerConf, "gp": GPSamplerConf}
PRUNER_CONFS = {"none": NoPrunerConf, "median": MedianPrunerConf, "successive_halving": SuccessiveHalvingPrunerConf,
                "hyperband": HyperbandPrunerConf}

cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="dltool_optuna_sweeper")
for _name, _conf in SAMPLER_CONFS.items():
    cs.store(group="hydra/sweeper/sampler", name=_name, node=_conf, provider="dltool_optuna_sweeper")
for _name, _conf in PRUNER_CONFS.items():
    cs.store(group="hydra/sweeper/pruner", name=_name, node=_conf, provider="dltool_optuna_sweeper")
