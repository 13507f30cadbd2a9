"""Issue 19: one gate for hydra keys on every route (each job a sweeper builds included), directories that are
reserved atomically and never shared, never written through a link, and stored configs read as data."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dltool.commands.rundir import reserve, write_text
from dltool.config.safety import check_hydra, gate, shipped_logging
from dltool.config.schema import validate
from dltool.errors import ConfigError
from hydra_plugins.dltool_optuna_sweeper._impl import OptunaSweeperImpl
from tests.conftest import call_main

TINY = ["model=mlp", "data.subset=120", "trainer.epochs=1", "trainer.eval_test=false", "trainer.diagnostics=false",
        "trainer.loggers=[csv]"]


@pytest.mark.parametrize("override", ["+hydra.job.env_set.PYTHONPATH=/tmp/x", "hydra.job.env_copy=[HOME]",
                                      "+hydra.job_logging.handlers.f.class=logging.FileHandler",
                                      "hydra/job_logging=disabled", "hydra.run.dir=elsewhere",
                                      "+x={_target_: os.system}", "hydra.sweeper.n_trials=3"])
def test_a_job_may_set_no_hydra_key_and_no_target(override):
    with pytest.raises(ConfigError, match="is refused"):
        gate([override], "a job", job=True)


@pytest.mark.parametrize("override,ok", [("hydra.run.dir=x", True), ("hydra.sweeper.n_trials=3", True),
                                         ("hydra/launcher=local", True), ("hydra/job_logging=dltool", True),
                                         ("hydra.launcher.n_jobs=2", True), ("optimizer.lr=0.1", True),
                                         ("hydra/job_logging=disabled", False), ("hydra.callbacks.x=1", False),
                                         ("+hydra.job.env_set.X=1", False), ("hydra.searchpath=[]", False),
                                         ("hydra.sweeper.custom_search_space=m.f", False),
                                         ("++hydra.job_logging.root.level=INFO", False),
                                         ("hydra.launcher._target_=os.system", False)])
def test_the_command_line_gate_is_an_allowlist(override, ok):
    if ok:
        gate([override])
    else:
        with pytest.raises(ConfigError, match="is refused"):
            gate([override])


def test_the_optuna_sweeper_gates_each_job_before_launching_it():
    """A job override carrying a hydra key is refused before the launcher (and Hydra's env/logging setup) sees it."""
    impl = OptunaSweeperImpl(None, None, "minimize", None, None, 1, 1, 0.0, None)
    launched = []
    impl.launcher = type("L", (), {"launch": lambda self, jobs, initial_job_idx: launched.append(jobs)})()
    with pytest.raises(ConfigError, match="hydra.job.env_set.PYTHONPATH"):
        impl.check_job(0, ["optimizer.lr=0.1", "+hydra.job.env_set.PYTHONPATH=/tmp/x"])
    assert launched == []


def test_check_hydra_refuses_params_that_reach_each_job():
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.params"):
        check_hydra(OmegaConf.create({"job_logging": shipped_logging("job_logging"),
                                      "hydra_logging": shipped_logging("hydra_logging"),
                                      "sweeper": {"params": {"optimizer.lr": "interval(0.1, 1)",
                                                             "+hydra.job.env_set.X": "1"}}}))


def test_two_claims_of_one_run_dir_at_once_get_it_once(tmp_path):
    """8 threads reserve the same explicit hydra.run.dir at the same moment: exactly one gets it (real mkdirs)."""
    target, start = tmp_path / "X", threading.Barrier(8)
    won, refused = [], []

    def claim() -> None:
        start.wait()
        try:
            won.append(reserve(target, explicit=True))
        except ConfigError as ex:
            refused.append(str(ex))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won == [target] and len(refused) == 7
    assert all("already exists" in r for r in refused)


def test_generated_names_started_in_the_same_second_get_their_own_dirs(tmp_path):
    start, got = threading.Barrier(6), []

    def claim() -> None:
        start.wait()
        got.append(reserve(tmp_path / "outputs" / "2026_run", explicit=False))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 6 and {p.name for p in got} == {"2026_run", *[f"2026_run_{i}" for i in range(2, 7)]}


def test_an_empty_dir_the_user_made_is_taken_once(tmp_path):
    (tmp_path / "E").mkdir()
    assert reserve(tmp_path / "E", explicit=True) == tmp_path / "E"
    with pytest.raises(ConfigError, match="already exists"):
        reserve(tmp_path / "E", explicit=True)


def test_write_text_never_follows_a_planted_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_text(run, run / "eval.json", "{}")
    (run / "sub").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_text(run, run / "sub" / "x.json", "{}")
    assert outside.read_text() == "keep" and not (tmp_path / "x.json").exists()
    write_text(run, run / "ok.json", "{}")
    assert (run / "ok.json").read_text() == "{}"


@pytest.mark.slow
def test_a_sweep_can_start_from_a_config_file(tmp_path, monkeypatch):
    """`dltool train my.yaml -m optimizer.lr=a,b` runs the two jobs (it used to end in Hydra's usage dump)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLTOOL_NO_PROGRESS", "1")
    (tmp_path / "my.yaml").write_text("defaults:\n  - train\n  - _self_\ntrainer:\n  epochs: 1\n")
    code = call_main(["train", "my.yaml", "-m", "optimizer.lr=0.01,0.001", *TINY[:2], *TINY[3:],
                      "hydra.sweep.dir=sw"])
    assert code == 0
    lrs = sorted(yaml.safe_load((tmp_path / "sw" / str(i) / "config.yaml").read_text())["optimizer"]["lr"]
                 for i in (0, 1))
    assert lrs == [0.001, 0.01]


@pytest.mark.slow
def test_a_second_search_in_the_same_sweep_dir_never_overwrites_job_0(tmp_path, monkeypatch):
    """Two in-memory Optuna searches with one hydra.sweep.dir: the second's job is r1_0, job 0 stays as it was."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLTOOL_NO_PROGRESS", "1")
    args = ["train", "-m", "hparams_search=lr_random", "hydra.sweeper.n_trials=1", "hydra.sweeper.storage=null",
            "hydra.sweep.dir=sw", *TINY]
    assert call_main(args) == 0
    first = (tmp_path / "sw" / "0" / "summary.json").read_bytes()
    assert call_main(args) == 0
    assert (tmp_path / "sw" / "0" / "summary.json").read_bytes() == first
    second = json.loads((tmp_path / "sw" / "r1_0" / "summary.json").read_text())
    assert Path(second["run_dir"]).name == "r1_0"


def test_a_stored_interpolation_is_refused_and_the_secret_never_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLTOOL_SECRET", "s3cr3t")
    with pytest.raises(ConfigError, match=r"oc\.env:DLTOOL_SECRET") as ex:
        validate({"name": "${oc.env:DLTOOL_SECRET}"}, stored=True)
    assert "s3cr3t" not in str(ex.value)
    assert validate({"name": "${oc.env:DLTOOL_SECRET}"}).name == "s3cr3t"  # a user's own command line: resolved
