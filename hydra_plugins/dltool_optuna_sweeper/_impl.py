"""The Optuna sweeper: ask a trial, launch its job, tell the result, on Optuna's ask/tell API.

- Asynchronous: `n_jobs` worker threads each run one trial at a time through the launcher (joblib worker
  processes); a worker that finishes asks for the next trial at once, nobody waits for a batch.
- Distributed: every process that opens the same study (storage + study_name) joins it. The study keeps
  its goal (`dltool_goal`, a study user attribute); a trial whose number would pass the goal is marked
  surplus and never launched, so all workers together run exactly n_trials, each trial once.
- Reproducible: with a sampler seed, trial n is sampled with seed + n, whichever worker draws it.
- Pruning: the job reports to its trial (dltool/train/search.py); a job that stopped because the pruner
  said so is told PRUNED.
- Job n's directory and hydra.job.num are the trial number, unique across workers and continued studies.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import Trial, TrialState

from dltool.config.safety import check_hydra, gate
from dltool.errors import ConfigError
from dltool.train.search import PRUNED_ATTR, build_pruner, build_sampler, open_storage

log = logging.getLogger(__name__)

GOAL_ATTR, SURPLUS_ATTR = "dltool_goal", "dltool_surplus"
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)
LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins.hydra_joblib_launcher._core",
                    "hydra_plugins.hydra_submitit_launcher.submitit_launcher")


class Space:
    """One searched key: how to draw its value from a trial (public suggest_* calls only)."""

    def __init__(self, kind: str, low: Any = None, high: Any = None, log: bool = False, step: Any = None,
                 choices: Optional[list] = None) -> None:
        self.kind, self.low, self.high, self.log, self.step, self.choices = kind, low, high, log, step, choices

    def suggest(self, trial: Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(name, self.choices)

    def grid_values(self, name: str) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(self.low, self.high + 1, self.step or 1))
        raise ValueError(f"the grid sampler needs choice(...) or range(...) for {name}, not an interval")


def to_space(o: Override) -> Space:
    """interval(a, b) [tag(log, ...)] -> float/int range; range(a, b, s) -> ints (stop excluded); choice -> list."""
    value = o.value()
    if isinstance(value, IntervalSweep):
        log_scale = "log" in (value.tags or set())
        if isinstance(value.start, int) and isinstance(value.end, int):
            return Space("int", value.start, value.end, log_scale)
        return Space("float", float(value.start), float(value.end), log_scale)
    if isinstance(value, RangeSweep) and not value.shuffle and all(
            isinstance(x, int) for x in (value.start, value.stop, value.step)):
        last = list(o.sweep_iterator())[-1]
        return Space("int", value.start, last, step=value.step)
    if isinstance(value, (ChoiceSweep, RangeSweep)):
        return Space("categorical", choices=list(o.sweep_iterator(transformer=Transformer.encode)))
    raise ValueError(f"{o.input_line} is not a sweep the Optuna sweeper understands")


def search_space(arguments: list[str]) -> tuple[dict[str, Space], dict[str, str]]:
    """key=sweep -> Space; key=value -> a fixed override passed to every job (a later one wins)."""
    space, fixed = {}, {}
    for o in OverridesParser.create().parse_overrides(arguments):
        key = o.get_key_element()
        if o.is_sweep_override():
            space[key] = to_space(o)
            fixed.pop(key, None)
        else:
            fixed[key] = o.get_value_element_as_str()
            space.pop(key, None)
    return space, fixed


class OptunaSweeperImpl:
    def __init__(self, sampler: Any, pruner: Any, direction: str, storage: Optional[str], study_name: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: Optional[DictConfig]) -> None:
        self.sampler_cfg = dict(OmegaConf.to_container(sampler, resolve=True)) if sampler is not None else {}
        self.pruner_cfg = dict(OmegaConf.to_container(pruner, resolve=True)) if pruner is not None else {}
        self.direction, self.storage_url, self.study_name = str(direction), storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(1, int(n_jobs)), max_failure_rate
        self.params = dict(params or {})
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.running: dict[int, Trial] = {}
        self.finished = self.failures = 0
        self.first_error: Optional[BaseException] = None
        self.hydra_context: Optional[HydraContext] = None  # set by setup(); None: no Hydra (the sweeper's unit tests)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        for name in LAUNCHER_LOGGERS:  # the launchers number jobs per call; this sweeper logs the trial number
            logging.getLogger(name).addFilter(lambda r: not r.getMessage().startswith("\t#"))

    # ------------------------------------------------------------------ the study
    def open_study(self, grid: Optional[dict]) -> optuna.Study:
        storage = open_storage(self.storage_url)
        for attempt in range(5):  # two workers creating the same study at once: the loser loads it
            try:
                return optuna.create_study(study_name=self.study_name, storage=storage,
                                           sampler=build_sampler(self.sampler_cfg, grid),
                                           pruner=build_pruner(self.pruner_cfg), direction=self.direction,
                                           load_if_exists=True)
            except optuna.exceptions.DuplicatedStudyError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def agree_goal(self, study: optuna.Study, n_trials: int) -> int:
        """The study's goal: joined while trials are under way, raised by n_trials once it was reached."""
        real = [t for t in study.get_trials(deepcopy=False) if SURPLUS_ATTR not in t.user_attrs]
        goal = study.user_attrs.get(GOAL_ATTR)
        if goal is None or (len(real) >= goal and not any(t.state in ACTIVE for t in real)):
            goal = len(real) + n_trials
            study.set_user_attr(GOAL_ATTR, goal)
        log.info("study %s: %d of %d trials taken", study.study_name, min(len(real), goal), goal)
        return int(goal)

    def claim(self, study: optuna.Study, goal: int) -> Optional[Trial]:
        """Ask for the next trial, or None once the study's goal is taken (by any worker)."""
        trials = study.get_trials(deepcopy=False)
        if self.stop.is_set() or sum(SURPLUS_ATTR not in t.user_attrs for t in trials) >= goal:
            return None
        self.reseed(study, len(trials))
        trial = study.ask()
        if trial.number != len(trials):
            self.reseed(study, trial.number)
        before = [t for t in study.get_trials(deepcopy=False)
                  if t.number < trial.number and SURPLUS_ATTR not in t.user_attrs]
        if len(before) >= goal:  # another worker took the last trial between our count and our ask
            trial.set_user_attr(SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            return None
        return trial

    def reseed(self, study: optuna.Study, number: int) -> None:
        """Trial n draws with seed + n: the same points whichever worker (or process) runs it."""
        seed = self.sampler_cfg.get("seed")
        if seed is not None and self.sampler_cfg.get("name") != "qmc":  # QMC indexes its sequence itself
            study.sampler = build_sampler({**self.sampler_cfg, "seed": int(seed) + number}, self.grid)

    # ------------------------------------------------------------------ the loop
    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        self.grid = {k: s.grid_values(k) for k, s in space.items()} if self.sampler_cfg.get("name") == "grid" \
            else None
        n_trials = self.n_trials
        if self.grid is not None:
            size = 1
            for values in self.grid.values():
                size *= len(values)
            n_trials = min(n_trials, size)
        study = self.open_study(self.grid)
        goal = self.agree_goal(study, n_trials)
        try:
            if self.n_jobs == 1:
                self.worker(study, goal, space, fixed)
            else:
                with ThreadPoolExecutor(self.n_jobs, thread_name_prefix="trial") as pool:
                    for f in [pool.submit(self.worker, study, goal, space, fixed) for _ in range(self.n_jobs)]:
                        f.result()
        except BaseException:
            self.stop.set()
            for trial in list(self.running.values()):  # Ctrl-C or a crash: no trial stays RUNNING forever
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        if self.first_error is not None:
            raise self.first_error
        self.save_results(study)

    def worker(self, study: optuna.Study, goal: int, space: dict[str, Space], fixed: dict[str, str]) -> None:
        while True:
            with self.lock:  # sampling under one lock: a seeded search draws the same points in any order
                trial = self.claim(study, goal)
                if trial is None:
                    return
                overrides = [f"{k}={s.suggest(trial, k)}" for k, s in space.items()]
                overrides += [f"{k}={v}" for k, v in fixed.items()]
                self.running[trial.number] = trial
            log.info("\t#%d : %s", trial.number, " ".join(o for o in overrides if o.split("=")[0] in space))
            try:
                self.check_job(trial.number, overrides)
            except ConfigError as ex:
                self.tell(study, trial, None, ex)
                continue
            ret = self.launcher.launch([overrides], initial_job_idx=trial.number)[0]
            self.tell(study, trial, ret)

    def check_job(self, number: int, overrides: list[str]) -> None:
        """The gate on the job this trial builds, then its directory reserved (mkdir: atomic, never shared).

        Its overrides may set no hydra key; its composed `hydra` node passes the same check as the sweep's;
        a directory that exists already (another search's job in the same hydra.sweep.dir) fails the trial.
        """
        gate(overrides, f"the job of trial {number}", job=True)
        if self.hydra_context is None:
            return
        job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        check_hydra(job.hydra)
        with open_dict(job):
            job.hydra.job.num = job.hydra.job.id = number
        sweep_dir = Path(str(job.hydra.sweep.dir))
        job_dir = sweep_dir / str(job.hydra.sweep.subdir)
        if sweep_dir.resolve() not in job_dir.resolve().parents:
            raise ConfigError(f"the job dir {job_dir} of trial {number} is not inside hydra.sweep.dir={sweep_dir}.")
        try:
            job_dir.mkdir(parents=True)
        except FileExistsError:
            raise ConfigError(f"trial {number}: its job dir {job_dir} already exists (a job of another search in the "
                              f"same hydra.sweep.dir); nothing was written into it.") from None

    def tell(self, study: optuna.Study, trial: Trial, ret: Any, error: Optional[BaseException] = None) -> None:
        """COMPLETE with the job's value, PRUNED when its pruner stopped it, FAIL when it raised or was refused."""
        try:
            value = float(ret.return_value) if error is None else 0.0  # re-raises the job's exception
        except Exception as ex:  # noqa: BLE001 - a failed job is recorded, the search goes on
            error = ex
        with self.lock:
            self.running.pop(trial.number, None)
            self.finished += 1
            if error is not None:
                study.tell(trial, state=TrialState.FAIL)
                self.failures += 1
                log.warning("trial %d failed: %s", trial.number, error)
                if self.failures / self.finished > self.max_failure_rate:
                    self.first_error = self.first_error or error
                    self.stop.set()
                return
            attrs = next(t.user_attrs for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            if PRUNED_ATTR in attrs:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, value)

    def save_results(self, study: optuna.Study) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return
        best = study.best_trial
        counts = {s.name.lower(): sum(SURPLUS_ATTR not in t.user_attrs for t in study.get_trials(deepcopy=False,
                                                                                                  states=(s,)))
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        out = {"name": "optuna", "best_params": best.params, "best_value": best.value, "best_trial": best.number,
               "trials": counts}
        OmegaConf.save(OmegaConf.create(out), Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml")
