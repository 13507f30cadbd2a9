"""The Sweeper class Hydra finds when it scans hydra_plugins; the work is in _impl.py."""


from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import OptunaSweeperConf  # noqa: F401  (registers the configs when Hydra scans this package)


class OptunaSweeper(Sweeper):
    """Hydra sweeper on Optuna's ask/tell API: asynchronous workers, shared storage, pruning."""

    def __init__(self, sampler: Any, pruner: Any, direction: str, storage: Optional[str], study_name: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: Optional[DictConfig]) -> None:
        # Optuna takes a second to import: Hydra imports this module for every dltool command, so the
        # implementation (and Optuna) is loaded only when a search really runs.
        from ._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(sampler, pruner, direction, storage, study_name, n_trials, n_jobs,
                                         max_failure_rate, params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        return self.sweeper.sweep(arguments)
