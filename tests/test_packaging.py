"""The configs ship inside the wheel: a non-editable install finds them from any directory."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_contains_configs_and_runs_from_another_directory(tmp_path):
    wheel_dir, target, elsewhere = tmp_path / "wheel", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheel_dir), ROOT], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("dltool-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    code = "import dltool.config.compose as c; print(c.__file__); print(c.config_dir())"
    probe = subprocess.run([sys.executable, "-c", code],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    module_file, cfg_dir = probe.stdout.split()
    assert module_file.startswith(str(target)) and cfg_dir.startswith(str(target))
    assert (target / "dltool" / "configs" / "train.yaml").is_file()
    assert (target / "dltool" / "configs" / "model" / "mlp.yaml").is_file()
    # the JSON Schemas ship beside the configs, where their modelines point (`$schema=../_schema/model.schema.json`)
    assert (target / "dltool" / "configs" / "_schema" / "model.schema.json").is_file()
    assert "$schema=../_schema/model.schema.json" in (target / "dltool" / "configs" / "model" / "mlp.yaml").read_text()
    version = subprocess.run([sys.executable, "-m", "dltool", "--version"], cwd=elsewhere, env=env,
                             capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("dltool 0."), version.stdout + version.stderr
    out = subprocess.run([sys.executable, "-m", "dltool", "summary", "model=mlp"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "17,226" in out.stdout  # 64*128+128 + 128*64+64 + 64*10+10
    code = ("from dltool.commands.sweep import compose_full, is_optuna; "
            "import hydra_plugins.dltool_optuna_sweeper as p; print(p.__file__); "
            "print(is_optuna(compose_full('train', None, ['hparams_search=lr_random']).hydra.sweeper))")
    probe = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    plugin_file, found = probe.stdout.split()
    assert plugin_file.startswith(str(target)) and found == "True"  # Hydra finds dltool's sweeper in the wheel
