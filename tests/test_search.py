"""dltool's Optuna sweeper (hydra_plugins/dltool_optuna_sweeper) and its job side (dltool/train/search.py):
sampler/pruner tables, the search space, the shared study's goal (exactly n_trials over several workers),
pruning, and the sweep report's fixes (keys fixed per invocation, readable linear ticks)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from hydra.core.utils import JobReturn, JobStatus
from matplotlib.backends.backend_agg import FigureCanvasAgg
from omegaconf import OmegaConf
from optuna.trial import TrialState

from dltool.commands.sweep_report import Space, figure, load_jobs, report
from dltool.errors import ConfigError
from dltool.train.callbacks import FitState
from dltool.train.search import PRUNED_ATTR, PRUNERS, SAMPLERS, TrialReporter, build_pruner, build_sampler, open_storage
from hydra_plugins.dltool_optuna_sweeper._impl import GOAL_ATTR, OptunaSweeperImpl, search_space
from hydra_plugins.dltool_optuna_sweeper.config import PRUNER_CONFS, SAMPLER_CONFS
from tests.conftest import run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAST = ["model=mlp", "trainer.epochs=2"]


# --------------------------------------------------------------------------- tables, space, storage (fast)
def test_the_config_choices_are_the_tables():
    assert set(SAMPLER_CONFS) == set(SAMPLERS) and set(PRUNER_CONFS) == set(PRUNERS)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_builds_from_its_config(name):
    spec = asdict(SAMPLER_CONFS[name]())
    sampler = build_sampler(spec, {"x": [1, 2]})
    assert isinstance(sampler, SAMPLERS[name][0])


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_builds_from_its_config(name):
    assert isinstance(build_pruner(asdict(PRUNER_CONFS[name]())), PRUNERS[name][0])


def test_unknown_sampler_or_pruner_is_one_sentence():
    with pytest.raises(ConfigError, match="hydra.sweeper.sampler.name.*Did you mean 'random'"):
        build_sampler({"name": "randm"})
    with pytest.raises(ConfigError, match="Did you mean 'median'"):
        build_pruner({"name": "medain"})


def test_search_space_reads_hydra_sweeps():
    space, fixed = search_space(["optimizer.lr=tag(log, interval(1e-5, 1e-1))", "model.dropout=interval(0, 0.5)",
                                 "trainer.batch_size=choice(32, 64)", "model.width=range(16, 64, 16)",
                                 "trainer.epochs=3", "optimizer=sgd"])
    lr, drop, bs, width = (space[k] for k in ("optimizer.lr", "model.dropout", "trainer.batch_size", "model.width"))
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-5, 1e-1, True)
    assert (drop.kind, drop.low, drop.high, drop.log) == ("float", 0.0, 0.5, False)
    assert (bs.kind, bs.choices) == ("categorical", [32, 64])
    assert (width.kind, width.low, width.high, width.step) == ("int", 16, 48, 16)  # range() stops before 64
    assert width.grid_values("model.width") == [16, 32, 48]
    assert fixed == {"trainer.epochs": "3", "optimizer": "sgd"}


def test_storages(tmp_path):
    assert open_storage(None) is None
    assert isinstance(open_storage(f"journal:{tmp_path}/a.journal"), optuna.storages.JournalStorage)
    assert isinstance(open_storage(str(tmp_path / "b.journal")), optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/c.db"), optuna.storages.RDBStorage)
    with pytest.raises(ConfigError, match="hydra.sweeper.storage='optuna.db' is not a storage"):
        open_storage("optuna.db")


# --------------------------------------------------------------------------- pruning (fast, a real study)
def test_trial_reporter_prunes_a_trial_worse_than_the_median(tmp_path):
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    for epoch, v in enumerate([0.5, 0.4, 0.3], start=1):
        good.report(v, epoch)
    study.tell(good, 0.3)
    state = FitState(torch.nn.Linear(1, 1), tmp_path, epochs=3)
    reporter = TrialReporter(study.ask(), "val_loss")
    state.epoch = 1
    reporter.on_epoch_end(state, {"val_loss": 0.45})  # better than the median at epoch 1: goes on
    assert not state.stop
    state.epoch = 2
    reporter.on_epoch_end(state, {"val_loss": 0.9})
    assert state.stop and state.stop_reason.startswith("pruned at epoch 2 (the trial's val_loss 0.9 ")
    assert study.trials[1].user_attrs[PRUNED_ATTR] == 2 and study.trials[1].intermediate_values == {1: 0.45, 2: 0.9}


# --------------------------------------------------------------------------- the sweeper's goal (fast)
class Objective:
    """A launcher that runs the job in this process: value = (log10 lr + 3)^2, no training."""

    def __init__(self) -> None:
        self.jobs: list[tuple[int, list[str]]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.peers: list[threading.Event] = []  # launchers of other workers this one waits for before its first job

    def launch(self, overrides: list, initial_job_idx: int) -> list[JobReturn]:
        self.started.set()
        for peer in self.peers:  # without this, a fast worker can finish the whole study before the other starts
            peer.wait(timeout=30)
        values = dict(o.split("=", 1) for o in overrides[0])
        with self.lock:
            self.jobs.append((initial_job_idx, list(overrides[0])))
        ret = JobReturn()
        ret.status = JobStatus.COMPLETED
        ret.return_value = (torch.tensor(float(values["optimizer.lr"])).log10().item() + 3) ** 2
        return [ret]


def sweeper(tmp_path: Path, storage: str, n_trials: int, n_jobs: int = 1, seed: int | None = 0) -> OptunaSweeperImpl:
    s = OptunaSweeperImpl(OmegaConf.create({"name": "random", "seed": seed}), OmegaConf.create({"name": "none"}),
                          "minimize", storage, "study", n_trials, n_jobs, 0.0,
                          OmegaConf.create({"optimizer.lr": "tag(log, interval(1e-5, 1e-1))"}))
    s.launcher, s.config = Objective(), OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    return s


def test_two_workers_on_one_journal_run_exactly_n_trials_each_once(tmp_path):
    storage = f"journal:{tmp_path}/optuna.journal"
    a, b = sweeper(tmp_path, storage, 12, n_jobs=2), sweeper(tmp_path, storage, 12, n_jobs=2)
    a.launcher.peers, b.launcher.peers = [b.launcher.started], [a.launcher.started]
    threads = [threading.Thread(target=w.sweep, args=(["trainer.epochs=1"],)) for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = sorted(n for w in (a, b) for n, _ in w.launcher.jobs)
    assert numbers == list(range(12))  # every trial once, in one of the two workers, none beyond the goal
    assert a.launcher.jobs and b.launcher.jobs  # both workers took part
    study = optuna.load_study(study_name="study", storage=open_storage(storage))
    real = [t for t in study.trials if "dltool_surplus" not in t.user_attrs]
    assert [t.state for t in real] == [TrialState.COMPLETE] * 12 and study.user_attrs[GOAL_ATTR] == 12
    assert all("trainer.epochs=1" in o for w in (a, b) for _, o in w.launcher.jobs)  # fixed overrides pass through
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(t.value for t in real))


def test_same_seed_same_points_in_any_order_and_a_finished_study_continues(tmp_path):
    one = sweeper(tmp_path, f"journal:{tmp_path}/seq.journal", 6)
    one.sweep([])
    par = sweeper(tmp_path, f"journal:{tmp_path}/par.journal", 6, n_jobs=3)
    par.sweep([])
    assert sorted(one.launcher.jobs) == sorted(par.launcher.jobs)  # trial n draws with seed + n
    more = sweeper(tmp_path, f"journal:{tmp_path}/seq.journal", 2)
    more.sweep([])  # the study had reached its goal: this invocation adds 2 trials
    assert [n for n, _ in more.launcher.jobs] == [6, 7]
    assert {o[0] for _, o in more.launcher.jobs}.isdisjoint(o[0] for _, o in one.launcher.jobs)


# --------------------------------------------------------------------------- report fixes (fast)
def fake_job(sweep: Path, name: str, overrides: list[str], best: float, reason: str = "finished all 2 epochs") -> None:
    d = sweep / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / "summary.json").write_text(json.dumps({"monitor": "val_loss", "mode": "min", "best_value": best,
                                                "best_epoch": 2, "stop_reason": reason, "seconds": 1.0}))


def test_report_keys_fixed_per_invocation_are_not_searched_and_pruned_jobs_show(tmp_path):
    (tmp_path / "invocations.yaml").write_text(yaml.safe_dump([
        {"args": ["-m", "hparams_search=lr_random", "trainer.epochs=2", "trainer.patience=2"], "prefix": ""},
        {"args": ["-m", "hparams_search=lr_random", "trainer.epochs=6", "trainer.patience=5"], "prefix": ""}]))
    fake_job(tmp_path, "0", ["optimizer.lr=0.001", "trainer.epochs=2", "trainer.patience=2"], 0.5)
    fake_job(tmp_path, "1", ["optimizer.lr=0.01", "trainer.epochs=2", "trainer.patience=2"], 0.2)
    fake_job(tmp_path, "2", ["optimizer.lr=0.003", "trainer.epochs=6", "trainer.patience=5"], 0.1)
    fake_job(tmp_path, "3", ["optimizer.lr=0.1", "trainer.epochs=6", "trainer.patience=5"], 0.9,
             "pruned at epoch 1 (the trial's val_loss 0.9 was worse than the pruner allows)")
    out = report(tmp_path)
    assert set(out["spaces"]) == {"optimizer.lr"}  # epochs/patience changed between invocations, not searched
    assert not any("trainer." in w for w in out["warnings"])
    assert [(j.name, j.status) for j in out["jobs"]] == [("2", "ok"), ("1", "ok"), ("0", "ok"), ("3", "pruned")]
    assert "pruned at epoch 1" in (tmp_path / "sweep.csv").read_text()


def overlaps(fig) -> list[tuple[str, str]]:
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        bad += [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    return bad


@pytest.mark.parametrize("values,space", [
    ([0.0, 1e-4, 0.0, 1e-4], Space("regularization.l2", values=[0, 1e-4])),  # a grid over two small values
    ([0.0, 2e-5, 7e-5, 1e-4], Space("regularization.l2", low=0.0, high=1e-4)),  # an interval of small values
])
def test_linear_tick_labels_of_small_values_do_not_overlap(tmp_path, values, space):
    for i, v in enumerate(values):
        fake_job(tmp_path, str(i), [f"regularization.l2={v}"], 0.5 - i / 10)
    fig = figure(load_jobs(tmp_path), {space.key: space}, "val_loss", "s")
    assert overlaps(fig) == []
    assert len([t for t in fig.axes[0].get_xticklabels() if t.get_text()]) >= 2


# --------------------------------------------------------------------------- real searches (slow)
@pytest.mark.slow
def test_pruning_search_stops_a_bad_trial_and_reports_it(tmp_path):
    sweep = tmp_path / "pruned"
    args = ["train", "-m", "hparams_search=optuna", "model=mlp", "trainer.epochs=4", "optimizer=sgd",
            "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.n_trials=1",
            f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args, "optimizer.lr=0.05", cwd=tmp_path).returncode == 0  # trial 0: a good run, the median
    r = run_cli(*args, "optimizer.lr=1e-5", cwd=tmp_path)  # the finished study continues with a hopeless trial 1
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="mlp_digits", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert list(study.trials[1].intermediate_values) == [1]  # reported once, then stopped
    summary = json.loads((sweep / "1" / "summary.json").read_text())
    assert summary["stop_reason"].startswith("pruned at epoch 1") and summary["epochs_run"] == 1
    assert len((sweep / "1" / "metrics.csv").read_text().splitlines()) == 2  # header + one epoch
    assert "1 ok, 1 pruned" in r.stdout and "pruned at epoch 1" in r.stdout


@pytest.mark.slow
def test_two_worker_processes_share_one_journal_study(tmp_path):
    sweep = tmp_path / "shared"
    args = [sys.executable, "-m", "dltool", "train", "-m", "hparams_search=lr_random", *FAST,
            "hydra.sweeper.n_trials=5", f"hydra.sweeper.storage=journal:{sweep}/optuna.journal",
            f"hydra.sweep.dir={sweep}"]
    env = {**__import__("os").environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    study = optuna.load_study(study_name="mlp_digits", storage=open_storage(f"journal:{sweep}/optuna.journal"))
    real = [t for t in study.trials if "dltool_surplus" not in t.user_attrs]
    assert [t.state for t in real] == [TrialState.COMPLETE] * 5
    assert sorted(int(d.name) for d in sweep.iterdir() if (d / "summary.json").is_file()) == [0, 1, 2, 3, 4]
    done = [line for out in outs for line in out.splitlines() if line.startswith("job ")]
    assert len(done) == 5 and all(sum(f"job {n} done" in line for line in done) == 1 for n in range(5))


def test_a_refused_slurm_launch_leaves_no_sweep_dir(tmp_path, monkeypatch):
    from dltool.commands.sweep import Plan, discard_if_empty, plan

    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(ConfigError, match="needs a SLURM cluster"):
        plan("train", None, ["-m", "hparams_search=lr_random", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}/s"])
    assert not (tmp_path / "s").exists()
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "invocations.yaml").write_text("[]")
    discard_if_empty(Plan(tmp_path / "t", created=True))  # the launcher refused after the plan: nothing ran
    assert not (tmp_path / "t").exists()
    (tmp_path / "u" / "0" / ".hydra").mkdir(parents=True)
    discard_if_empty(Plan(tmp_path / "u", created=True))  # a job ran: the sweep dir stays
    assert (tmp_path / "u" / "0").is_dir()


def test_parallel_jobs_split_the_cores(monkeypatch):
    import os

    from dltool.commands.sweep import JOB_THREADS, compose_full, split_threads

    hc = compose_full("train", None, ["hparams_search=lr_random", "hydra/launcher=local", "hydra.launcher.n_jobs=2",
                                      "hydra.sweeper.n_jobs=2"]).hydra
    split_threads(hc, True)
    assert os.environ[JOB_THREADS] == str(max(1, (os.cpu_count() or 1) // 2))
    split_threads(compose_full("train", None, ["hparams_search=lr_random"]).hydra, True)
    assert JOB_THREADS not in os.environ  # sequential jobs keep every core
    with pytest.raises(ConfigError, match="hydra.sweeper.n_jobs=2 runs trials side by side"):
        split_threads(compose_full("train", None, ["hparams_search=lr_random", "hydra.sweeper.n_jobs=2"]).hydra, True)
