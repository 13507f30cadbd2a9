"""Shared test helpers: compose the real config tree (no Hydra app), run the real `dltool` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dltool.config.compose import config_dir
from dltool.config.schema import TrainConfig, register_schemas, validate

torch.set_num_threads(1)  # tests run side by side on 2 cores; one thread each is fastest overall


def make_config(*overrides: str, name: str = "train") -> TrainConfig:
    """Compose configs/<name>.yaml with overrides and validate it, exactly as the CLI does."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return validate(compose(config_name=name, overrides=list(overrides)))


def run_cli(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m dltool ARGS` in cwd and return the finished process (stdout+stderr captured)."""
    full_env = {**os.environ, "DLTOOL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "160", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dltool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def cfg_factory():
    return make_config
