"""Shared test helpers: compose the real config tree (no Hydra app), run the real `dltool` command."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

# The console reads its width when dltool is imported: tests read wide tables as a CI log gets them (160 columns,
# the same as run_cli's subprocesses), also under pytest-xdist, whose workers set COLUMNS=80.
os.environ["COLUMNS"] = "160"
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from dltool.cli import main
from dltool.config.compose import config_dir
from dltool.config.schema import TrainConfig, register_schemas, validate
from dltool.train import deferred


def pytest_sessionstart(session: pytest.Session) -> None:
    """torch on one thread before any test module is imported (tests run side by side on 2 cores; one thread each
    is fastest overall). Not in pytest-xdist's controller, which only hands tests out: it never imports torch nor
    dltool's train path (4 s of CPU the workers would share while they collect)."""
    if session.config.pluginmanager.has_plugin("dsession"):
        return
    import torch

    torch.set_num_threads(1)


# Hydra's compose costs ~0.15 s (more under load) and the tests compose the same few configs hundreds of times: the
# composed (unvalidated) tree is kept per (name, overrides, config store) and each call validates a private deep copy,
# so a test that changes its config never changes another's, and every call still runs our own checks.
_COMPOSED: dict[tuple, DictConfig] = {}


def _store_fingerprint() -> tuple:
    """What Hydra can compose from besides the files: every (group path, entry name) in the config store."""
    def walk(node: dict, path: str) -> list[str]:
        out = []
        for key, value in node.items():
            out += walk(value, f"{path}/{key}") if isinstance(value, dict) else [f"{path}/{key}"]
        return out
    return tuple(sorted(walk(ConfigStore.instance().repo, "")))


def make_config(*overrides: str, name: str = "train") -> TrainConfig:
    """Compose configs/<name>.yaml with overrides and validate it, exactly as the CLI does."""
    register_schemas()
    key = (name, str(config_dir()), overrides, _store_fingerprint())
    if key not in _COMPOSED:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            _COMPOSED[key] = compose(config_name=name, overrides=list(overrides))
    return validate(copy.deepcopy(_COMPOSED[key]))


@dataclass
class Ran:
    """What an in-process `dltool` call left: exit status and the captured terminal output."""

    returncode: int
    stdout: str
    stderr: str


def call_main(args: list[str]) -> int:
    """`dltool ARGS` in this process; -> its exit status (main always ends with sys.exit).

    Hydra's logging setup replaces the root logger's handlers (console streams bound to this test's captured
    stdout/stderr); they are closed afterwards and pytest's own handlers put back, so nothing leaks into the
    next test.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        main(list(args))
    except SystemExit as ex:
        return ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
    raise AssertionError("dltool.cli.main returned instead of exiting")


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path) -> Callable[..., Ran]:
    """cli(*ARGS) runs `dltool ARGS` in this process with tmp_path as the working directory (run dirs land there).

    The fast stand-in for a subprocess: the same main(), argv, Hydra app, console and exit status.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLTOOL_NO_PROGRESS", "1")

    def call(*args: str) -> Ran:
        capsys.readouterr()
        code = call_main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return call


def run_cli(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m dltool ARGS` in a new process in cwd (stdout+stderr captured): the real console command,
    kept for one end-to-end test per command; everything else uses the in-process `cli` fixture."""
    full_env = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "160", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dltool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def console_ranks():
    """DDP's CPU ranks forked from what this process built, as the console script starts them (dltool/cli.py main),
    instead of spawned as a Python caller's are: each spawned rank imports torch and dltool again (3-6 s on 2
    cores). tests/test_distributed.py checks that forked and spawned ranks train bitwise alike; a worker that ran
    torch on several threads spawns them anyway (distributed.start_method)."""
    deferred.detach_at_exit(True)
    try:
        yield
    finally:
        deferred.detach_at_exit(False)


@pytest.fixture
def cfg_factory():
    return make_config


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped (with the reason shown) on a machine without it."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def default_run_3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One three-epoch default run (cnn_digits, adam, cosine), trained once per session (per xdist worker) for
    test_evaluate, test_signals, test_predict, test_export and test_finetune. Modules take a copy
    (`copy_of_default_run`), so what one writes into its run dir (export/, eval files) never meets another's."""
    from dltool.train.run import train

    run = tmp_path_factory.mktemp("default_run_3") / "run"
    train(make_config("trainer.epochs=3", "trainer.progress=false"), run)
    return run


def copy_of_default_run(source: Path, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy of the shared default run (copying a run dir costs milliseconds; training it, seconds)."""
    run = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(source, run)
    return run
