"""Sweeps: hparams_search/launcher configs, the sweep plan, and real `dltool train -m` runs read back by
`dltool sweep-report` (grid, Optuna random search, joblib, failed/diverged jobs, a continued study)."""

from __future__ import annotations

import copy
import csv
import json
import math
import sqlite3
import threading
from pathlib import Path

import pytest
import yaml

from dltool.commands.sweep import compose_full, plan
from dltool.commands.sweep_report import parse_spaces, report
from dltool.config.compose import SweepLoader, search_path
from dltool.errors import ConfigError
from tests.conftest import make_config, run_cli

FAST = ["model=mlp", "trainer.epochs=2"]


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def metrics_best(job_dir: Path, monitor: str = "val_loss") -> tuple[float, int]:
    """(best value, its epoch) straight from the job's metrics.csv."""
    rows = read_csv(job_dir / "metrics.csv")
    best = min(rows, key=lambda r: float(r[monitor]))
    return float(best[monitor]), int(best["epoch"])


def trials(db: Path) -> list[tuple]:
    """(number, state, value) of every trial in an Optuna SQLite storage."""
    with sqlite3.connect(db) as c:
        return c.execute("select t.number, t.state, v.value from trials t left join trial_values v "
                         "on t.trial_id = v.trial_id order by t.number").fetchall()


# --------------------------------------------------------------------------- configs and plan (fast)
@pytest.mark.parametrize("name,sampler", [("lr_random", "random"), ("lr_tpe", "tpe"), ("optuna", "random")])
def test_hparams_search_configs_compose(name, sampler):
    cfg = compose_full("train", None, [f"hparams_search={name}"])
    sw = cfg.hydra.sweeper
    assert sw._target_ == "hydra_plugins.dltool_optuna_sweeper.optuna_sweeper.OptunaSweeper"  # dltool's own sweeper
    assert sw.sampler.name == sampler and sw.pruner.name == "none" and "_target_" not in sw.sampler
    assert sw.max_failure_rate == 1.0 and str(sw.storage).endswith("/optuna.db")
    if name != "optuna":
        assert sw.params["optimizer.lr"] == "tag(log, interval(1e-5, 1e-1))"
        assert sw.params["model.dropout"] == "interval(0.0, 0.7)"


def test_slurm_launcher_config_composes():
    cfg = compose_full("train", None, ["hparams_search=lr_random", "hydra/launcher=slurm",
                                       "hydra.launcher.partition=gpu", "hydra.sweep.dir=/x/sweep"])
    la = cfg.hydra.launcher
    assert la._target_.endswith("SlurmLauncher")
    assert (la.partition, la.timeout_min, la.gpus_per_node, la.submitit_folder) == \
        ("gpu", 60, 1, "/x/sweep/.submitit/%j")


def test_joblib_launcher_config_composes():
    la = compose_full("train", None, ["hydra/launcher=local"]).hydra.launcher
    assert la._target_.endswith("JoblibLauncher") and la.n_jobs == 2


def test_cnn_dropout_is_one_searchable_key():
    cfg = make_config("model=cnn_digits", "model.dropout=0.55")
    assert [layer["dropout"]["p"] for layer in cfg.model.layers if isinstance(layer, dict) and "dropout" in layer] \
        == [0.55]


def test_plan_sets_direction_storage_and_continues(tmp_path):
    sweep = tmp_path / "s"
    args = ["-m", "hparams_search=lr_random", "trainer.monitor=val_acc", "trainer.mode=max", f"hydra.sweep.dir={sweep}"]
    first = plan("train", None, args)
    assert "hydra.sweeper.direction=maximize" in first.overrides
    assert sweep.is_dir() and not any(o.startswith("hydra.sweep.subdir") for o in first.overrides)
    (sweep / "0" / ".hydra").mkdir(parents=True)  # as if job 0 had run
    second = plan("train", None, args)
    # Optuna job dirs are trial numbers (unique in a continued study) and trial n draws with seed + n
    assert not any(o.startswith(("hydra.sweep.subdir", "hydra.sweeper.sampler.seed")) for o in second.overrides)
    grid = ["-m", "optimizer.lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}"]
    third = plan("train", None, grid)
    assert "hydra.sweep.subdir=r2_${hydra.job.num}" in third.overrides  # a grid sweep: no overwriting earlier jobs
    assert [i["prefix"] for i in yaml.safe_load((sweep / "invocations.yaml").read_text())] == ["", "", "r2_"]


def test_plan_refuses_a_direction_against_the_mode(tmp_path):
    with pytest.raises(ConfigError, match="contradicts trainer.mode=min"):
        plan("train", None, ["-m", "hparams_search=lr_random", "hydra.sweeper.direction=maximize",
                             f"hydra.sweep.dir={tmp_path}/s"])


@pytest.mark.parametrize("overrides,message", [
    (["hparams_search=lr_random", "hydra.sweeper.n_trails=3"], "Did you mean 'n_trials'"),
    (["hydra/launcher=joblib", "hydra.launcher.njobs=3"], "Did you mean 'n_jobs'"),
    (["hydra/launcher=jobli"], "Did you mean 'joblib'"),
    (["hparams_search=optuna", "optimizer.lrr=tag(log, interval(1e-4, 1))"], "Did you mean 'optimizer.lr'"),
])
def test_sweep_typos_fail_in_one_sentence_before_any_job(overrides, message, tmp_path):
    from dltool.config.compose import compose

    with pytest.raises(ConfigError, match=message):
        compose("train", None, overrides)
        plan("train", None, ["-m", *overrides, f"hydra.sweep.dir={tmp_path}/s"])
    assert not (tmp_path / "s").exists()


def test_parse_spaces_reads_intervals_logs_and_lists():
    spaces = parse_spaces(["optimizer.lr=tag(log, interval(1e-5, 1e-1))", "model.dropout=interval(0.0, 0.7)",
                           "regularization.l2=0,1e-4,1e-2", "trainer.epochs=2", "hparams_search=lr_random"])
    assert set(spaces) == {"optimizer.lr", "model.dropout", "regularization.l2"}
    lr = spaces["optimizer.lr"]
    assert (lr.low, lr.high, lr.log) == (1e-5, 1e-1, True)
    assert spaces["model.dropout"].log is False and spaces["regularization.l2"].values == [0, 1e-4, 1e-2]


def fake_job(sweep: Path, name: str, lr: float, summary: dict) -> None:
    d = sweep / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"optimizer.lr={lr}", "trainer.epochs=3"]))
    (d / "summary.json").write_text(json.dumps(summary))


@pytest.mark.slow
def test_report_ranks_keeps_failures_and_warns_at_the_edge(tmp_path, cli):
    ok = {"monitor": "val_loss", "mode": "min", "best_epoch": 3, "stop_reason": "finished all 3 epochs", "seconds": 1.0}
    fake_job(tmp_path, "0", 1e-4, {**ok, "best_value": 0.9})
    fake_job(tmp_path, "1", 1e-2, {**ok, "best_value": 0.2})
    fake_job(tmp_path, "2", 1e-3, {**ok, "best_value": 0.5})
    fake_job(tmp_path, "3", 10.0, {"failed": True, "error": "RuntimeError: boom"})
    fake_job(tmp_path, "4", 1e-3, {})
    (tmp_path / "4" / "summary.json").unlink()  # killed mid-run: no summary.json
    out = report(tmp_path)
    assert [(j.name, j.status) for j in out["jobs"]][-2:] == [("3", "failed"), ("4", "unfinished")]
    assert [j.name for j in out["jobs"]][:3] == ["1", "2", "0"] and out["best"].name == "1"
    assert out["spaces"]["optimizer.lr"].log  # 1e-4 .. 10 spans five decades: a log axis
    rows = read_csv(tmp_path / "sweep.csv")
    assert rows[3]["status"] == "failed" and rows[3]["stop_reason"] == "RuntimeError: boom"
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert out["warnings"] == []  # 1e-2 sits inside 1e-4..10 (the failed job's value counts as tried)
    (tmp_path / "3" / "summary.json").write_text(json.dumps({**ok, "best_value": 0.1}))
    assert "high edge" in report(tmp_path)["warnings"][0]  # now lr=10, the largest value tried, is best
    r = cli("sweep-report", str(tmp_path))  # the command: table on stdout, the warning in dltool's style on stderr
    assert r.returncode == 0 and "finished all 3 epochs" in r.stdout
    assert r.stderr.startswith("warning: the best job (3) has optimizer.lr=10") and "high edge" in r.stderr


@pytest.mark.slow
def test_grid_sweep_in_process_and_each_job_logs_to_its_own_train_log(tmp_path, cli):
    sweep = tmp_path / "grid"
    r = cli("train", "-m", "model=mlp", "trainer.epochs=1", "optimizer.lr=1e-3,1e-2", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    # (Hydra's own "#1 : ..." launch line goes through logging, whose state other in-process tests of the same
    # worker may have changed; the subprocess sweep tests check it)
    assert r.stdout.count("done: best val_loss") == 2 and r.stdout.count("job 1 done") == 1
    rows = read_csv(sweep / "sweep.csv")
    assert sorted(float(x["optimizer.lr"]) for x in rows) == [1e-3, 1e-2]
    for x in rows:
        log = (sweep / x["job"] / "train.log").read_text()
        assert log.count("[INFO] epoch 1/1 ") == 1 and f"run mlp_digits in {sweep / x['job']}:" in log


# --------------------------------------------------------------------------- real sweeps (slow)
@pytest.mark.slow
def test_grid_sweep_2x2_and_report(tmp_path):
    sweep = tmp_path / "grid"
    r = run_cli("train", "-m", "trainer.epochs=2", "optimizer.lr=1e-3,1e-2", "regularization.l2=0,1e-4",
                f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("done: best val_loss") == 4 and "Launching" not in r.stdout
    assert all(r.stdout.count(f"#{i} : ") == 1 for i in range(4))  # Hydra's one launch line per job
    rows = read_csv(sweep / "sweep.csv")
    assert sorted((float(x["optimizer.lr"]), float(x["regularization.l2"])) for x in rows) == \
        [(1e-3, 0.0), (1e-3, 1e-4), (1e-2, 0.0), (1e-2, 1e-4)]
    for x in rows:
        overrides = yaml.safe_load((sweep / x["job"] / ".hydra" / "overrides.yaml").read_text())
        job = dict(o.split("=", 1) for o in overrides)
        assert float(job["optimizer.lr"]) == float(x["optimizer.lr"])
        assert float(job["regularization.l2"]) == float(x["regularization.l2"])
        stored = yaml.safe_load((sweep / x["job"] / "config.yaml").read_text())
        assert stored["optimizer"]["lr"] == float(x["optimizer.lr"])
        best, epoch = metrics_best(sweep / x["job"])
        assert float(x["best_val_loss"]) == pytest.approx(best, abs=1e-9) and int(x["best_epoch"]) == epoch
    values = [float(x["best_val_loss"]) for x in rows]
    assert values == sorted(values)  # best first
    again = run_cli("sweep-report", str(sweep), cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("finished all 2 epochs") == 4
    (sweep / rows[0]["job"] / "summary.json").unlink()  # as if the best job had been killed before its end
    out = report(sweep)
    assert [j.status for j in out["jobs"]] == ["ok"] * 3 + ["unfinished"]
    # the best so far, from metrics.csv
    assert out["jobs"][-1].best == pytest.approx(metrics_best(sweep / rows[0]["job"])[0])
    assert out["best"].name == rows[1]["job"]


def random_search(tmp_path: Path, name: str, *extra: str) -> list[dict]:
    sweep = tmp_path / name
    r = run_cli("train", "-m", "hparams_search=lr_random", *FAST, "hydra.sweeper.n_trials=6",
                f"hydra.sweep.dir={sweep}", *extra, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("done: best val_loss") == 6 and "Study name" not in r.stdout + r.stderr
    return read_csv(sweep / "sweep.csv")


@pytest.mark.slow
def test_random_log_search_and_joblib_give_the_same_results(tmp_path):
    rows = random_search(tmp_path, "seq")
    lrs = [float(x["optimizer.lr"]) for x in rows]
    assert all(1e-5 <= lr <= 1e-1 for lr in lrs)
    assert len({math.floor(math.log10(lr)) for lr in lrs}) >= 3  # log-uniform: several decades, not all near 0.1
    assert all(1e-6 <= float(x["regularization.l2"]) <= 1e-1 for x in rows)
    assert all(0.0 <= float(x["model.dropout"]) <= 0.7 for x in rows)
    best = min(rows, key=lambda x: metrics_best(tmp_path / "seq" / x["job"])[0])
    assert rows[0]["job"] == best["job"]  # the report's first row is the job with the lowest val_loss
    stored = trials(tmp_path / "seq" / "optuna.db")
    assert sorted(v for _, _, v in stored) == pytest.approx(sorted(float(x["best_val_loss"]) for x in rows))
    par = random_search(tmp_path, "par", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2")

    def key(x: dict) -> tuple:
        return x["optimizer.lr"], x["regularization.l2"], round(float(x["best_val_loss"]), 6)

    assert sorted(map(key, par)) == sorted(map(key, rows))


@pytest.mark.slow
def test_failed_and_diverged_jobs_do_not_stop_the_search(tmp_path):
    sweep = tmp_path / "bad"
    r = run_cli("train", "-m", "hparams_search=optuna", "optimizer=sgd", "optimizer.lr=choice(0.01, 1e6)",
                "trainer.batch_size=choice(64, 0)", "hydra.sweeper.n_trials=4", *FAST, f"hydra.sweep.dir={sweep}",
                cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # the sweep ran to the end; failed jobs make it exit non-zero, said last
    assert "2 job(s) failed" in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stdout + r.stderr
    rows = read_csv(sweep / "sweep.csv")
    assert [x["status"] for x in rows] == ["ok", "diverged", "failed", "failed"]
    assert rows[1]["stop_reason"].startswith("train_loss became nan") and float(rows[1]["optimizer.lr"]) == 1e6
    assert rows[2]["stop_reason"] == "trainer.batch_size=0 is not valid: use a whole number >= 1."
    stored = trials(sweep / "optuna.db")
    assert [s for _, s, _ in stored] == ["COMPLETE"] * 4  # finite worst values: the sweeper never saw a crash
    assert sorted(v for _, _, v in stored)[1:] == [1e9, 1e9, 1e9]


@pytest.mark.slow
def test_an_optuna_study_can_be_continued(tmp_path):
    sweep = tmp_path / "study"
    args = ["train", "-m", "hparams_search=lr_random", "model=mlp", "trainer.epochs=1", "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0 and "continuing it once it is finished" in r.stdout
    rows = read_csv(sweep / "sweep.csv")
    assert sorted(x["job"] for x in rows) == ["0", "1", "2", "3"]  # job dir = trial number
    assert [n for n, s, _ in trials(sweep / "optuna.db")] == [0, 1, 2, 3]
    first = {x["optimizer.lr"] for x in rows if x["job"] in ("0", "1")}
    assert first.isdisjoint(x["optimizer.lr"] for x in rows if x["job"] in ("2", "3"))  # no repeated trials


@pytest.mark.slow
def test_cmaes_sampler_runs_several_trials(tmp_path):
    """CMA-ES needs the `cmaes` package (a dependency in pyproject.toml): Optuna imports it at the second trial,
    the first one the strategy (not the random start) samples."""
    sweep = tmp_path / "cma"
    r = run_cli("train", "-m", "hparams_search=lr_random", "hydra/sweeper/sampler=cmaes", "model=mlp",
                "trainer.epochs=1", "data.subset=200", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_csv(sweep / "sweep.csv")
    assert len(rows) == 3 and all(x["status"] == "ok" for x in rows)
    assert len({x["optimizer.lr"] for x in rows}) == 3  # three different points of the search space
    assert len(trials(sweep / "optuna.db")) == 3


def test_a_copy_of_the_sweep_loader_leaves_its_cache_behind_while_trial_threads_fill_it():
    """The joblib launcher deep-copies Hydra's singletons (the app and its config loader) for every job, while the
    Optuna sweeper's other trial threads add their jobs' configs to the loader's cache: the copy must not iterate
    that cache (it raised 'dictionary changed size during iteration' in a 2-thread random search)."""
    loader = SweepLoader(search_path(None))
    loader.composed[("optimizer.lr=0.1",)] = {"a": 1}
    assert copy.deepcopy(loader).composed == {} and loader.composed == {("optimizer.lr=0.1",): {"a": 1}}
    stop = threading.Event()

    def fill() -> None:  # the cache's size changes all the time, its memory stays bounded
        i = 0
        while not stop.is_set():
            loader.composed[(f"optimizer.lr={i % 64}",)] = {"a": i}
            loader.composed.pop((f"optimizer.lr={(i + 32) % 64}",), None)
            i += 1

    thread = threading.Thread(target=fill)
    thread.start()
    try:
        copies = [copy.deepcopy(loader) for _ in range(200)]
    finally:
        stop.set()
        thread.join()
    assert all(c.composed == {} for c in copies) and len(loader.composed) > 1
