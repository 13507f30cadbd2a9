"""Plug-ins (dltool/plugins.py) and the example package examples/dltool_example_plugin: entries used from YAML like
built-ins, recorded in the run dir, required again by evaluate/predict/export/resume, and never loaded from a
config, an override or a run directory."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score

from dltool import plugins
from dltool.errors import ConfigError
from tests.plugin_env import install, uninstall

CNN = ("model.layers=[{conv: {filters: 8, kernel: 3, padding: 1}}, relu, {se_block: {reduction: 4}}, flatten, "
       "{fc: {units: 10}}]")
QUICK = ["trainer.epochs=1", "trainer.diagnostics=false", "trainer.loggers=[csv]", "hydra.run.dir=run"]
YAML = """defaults:
  - train
  - override loss: focal
  - _self_
model:
  layers:
    - conv: {filters: 8, kernel: 3, padding: 1}
    - relu
    - se_block: {reduction: 4}
    - flatten
    - fc: {units: 10}
loss:
  options: {gamma: 1.0}
trainer:
  epochs: 2
  metrics: [top2]
  callbacks: [{epoch_log: {filename: log.jsonl}}]
  loggers: [csv]
  diagnostics: false
"""


@pytest.fixture
def example(tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch)
    yield
    uninstall()


def fingerprint(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_entry_points_register_every_example_entry_with_its_package(example):
    got = {g: {n: (p.origin, p.version) for n, p in plugins.table(g).items()} for g in plugins.GROUPS}
    where = ("package dltool-example-plugin", "0.1.0")
    assert got == {"layers": {"se_block": where}, "losses": {"focal": where}, "metrics": {"top2": where},
                   "callbacks": {"epoch_log": where}, "datasets": {"whitespace_table": where},
                   "augmentations": {"salt_pepper": where}, "models": {"small_mlp": where}}


def test_list_plugins_shows_origin_and_options(example, cli):
    r = cli("list", "plugins")
    assert r.returncode == 0
    row = next(line for line in r.stdout.splitlines() if "se_block" in line)
    assert "reduction=4" in row and "dltool-example-plugin 0.1.0" in row
    r = cli("list", "losses", "augmentations")
    row = next(line for line in r.stdout.splitlines() if "focal" in line)
    assert "loss.options" in row and "gamma=2.0" in row
    row = next(line for line in r.stdout.splitlines() if "salt_pepper" in line)
    assert "amount=0.05, p=1.0" in row


@pytest.mark.slow
def test_se_block_params_and_macs_are_counted_like_a_built_in_layer(example, cli):
    from dltool.config.schema import ModelConfig
    from dltool.models.builder import build_model

    built = build_model(ModelConfig(layers=[{"conv": {"filters": 8, "padding": 1}}, {"se_block": 4}, "flatten",
                                            {"fc": 10}]), (1, 8, 8), 10)
    se = next(r for r in built.trace if r.kind == "se_block")
    assert (se.name, se.in_shape, se.out_shape) == ("se_block1", (8, 8, 8), (8, 8, 8))
    assert se.params == (8 * 2 + 2) + (2 * 8 + 8)  # fc1 8->2, fc2 2->8, with biases
    assert se.macs == 8 * 2 + 2 * 8  # the two Linear layers (the mean and the product are not mult-adds of a layer)
    r = cli("summary", "model.layers=[{conv: {filters: 8, padding: 1}}, {se_block: 4}, flatten, {fc: 10}]")
    row = next(line for line in r.stdout.splitlines() if "se_block1" in line)
    assert [c.strip() for c in row.split("│")[1:-1]][:4] == ["se_block1", "se_block", "8x8x8", "42"]


def test_focal_loss_with_gamma_0_is_cross_entropy_and_top2_agrees_with_sklearn(example):
    focal, top2 = plugins.get("losses", "focal").obj, plugins.get("metrics", "top2").obj
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(50, 5, generator=g), torch.randint(0, 5, (50,), generator=g)
    assert float(focal({"gamma": 0.0}, None)(logits, y)) == pytest.approx(float(torch.nn.functional.cross_entropy(
        logits, y)), rel=1e-6)
    p = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    assert float(focal({"gamma": 2.0}, None)(logits, y)) == pytest.approx(float((-(1 - p) ** 2 * p.log()).mean()))
    assert top2(logits, y) == pytest.approx(top_k_accuracy_score(y.numpy(), logits.numpy(), k=2, labels=range(5)))


@pytest.mark.slow
def test_train_with_every_plugin_then_evaluate_predict_export_resume_and_refuse_without_it(example, cli, tmp_path):
    (tmp_path / "se.yaml").write_text(YAML)
    r = cli("train", "se.yaml", "hydra.run.dir=run")
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "run"
    records = json.loads((run / "plugins.json").read_text())
    assert {(x["group"], x["name"]) for x in records} == {("layers", "se_block"), ("losses", "focal"),
                                                          ("metrics", "top2"), ("callbacks", "epoch_log")}
    assert all(x["origin"] == "package dltool-example-plugin" and x["version"] == "0.1.0" for x in records)
    hooks = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [h["hook"] for h in hooks] == ["fit_start", "epoch_end", "epoch_end", "fit_end"]
    n_train = int(re.search(r"(\d+)/\d+/\d+ examples", (run / "train.log").read_text()).group(1))
    assert [h["batches"] for h in hooks[1:3]] == [math.ceil(n_train / 64)] * 2  # on_batch_end once per batch
    rows = (run / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    for h, row in zip(hooks[1:3], rows[1:]):  # the callback saw the same logs metrics.csv records
        values = dict(zip(head, row.split(",")))
        assert h["val_loss"] == pytest.approx(float(values["val_loss"]))
        assert 0 < float(values["val_top2"]) <= 1 and float(values["val_top2"]) >= float(values["val_acc"])
    assert cli("evaluate", str(run), "topk=2").returncode == 0
    ev, summary = (json.loads((run / name).read_text()) for name in ("eval.json", "summary.json"))
    assert ev["acc"] == pytest.approx(summary["test_acc"]) and ev["loss"] == pytest.approx(summary["test_loss"])
    assert ev["top2"] == pytest.approx(ev["topk_acc"])  # the plug-in metric against evaluate's own top-k accuracy
    export = cli("export", str(run), "--format", "onnx")
    assert export.returncode == 0 and (run / "export" / "model.onnx").is_file(), export.stdout
    assert "passed" in export.stdout  # onnxruntime's outputs equal PyTorch's (export verifies)
    assert cli("train", f"resume={run}", "trainer.epochs=3").returncode == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    uninstall()
    before = fingerprint(tmp_path)
    for args in (["evaluate", str(run)], ["train", f"resume={run}", "trainer.epochs=4"], ["diagnose", str(run)],
                 ["export", str(run)]):
        r = cli(*args)
        lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1, (args, lines)
        assert "plug-in" in lines[0] and "dltool-example-plugin 0.1.0" in lines[0] and "install" in lines[0]
    assert fingerprint(tmp_path) == before


@pytest.mark.slow
def test_a_plugin_data_set_reads_a_file_and_trains(example, cli, tmp_path):
    from sklearn.datasets import load_iris

    d = load_iris()
    np.savetxt(tmp_path / "iris.txt", np.column_stack([d.data, d.target]))
    r = cli("train", "data=whitespace_table", f"data.options.path={tmp_path / 'iris.txt'}",
            "model.layers=[{small_mlp: {hidden: 8}}]", *QUICK)
    assert r.returncode == 0, r.stdout + r.stderr
    names = {(x["group"], x["name"]) for x in json.loads((tmp_path / "run" / "plugins.json").read_text())}
    assert names == {("datasets", "whitespace_table"), ("models", "small_mlp")}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["params"] == 4 * 8 + 8 + 8 * 3 + 3
    counts = re.search(r"(\d+)/(\d+)/(\d+) examples", (tmp_path / "run" / "train.log").read_text()).groups()
    assert sum(map(int, counts)) == 150  # every row of the file, split into train/val/test
    cfg = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: whitespace_table" in cfg and "label_column: -1" in cfg


@pytest.mark.slow
def test_plugin_options_are_checked_like_built_in_ones(example, cli):
    r = cli("train", CNN.replace("reduction", "reductoin"), *QUICK)
    assert r.returncode == 2 and "Did you mean 'reduction'" in r.stdout + r.stderr
    r = cli("train", "loss=focal", "loss.options.gama=1", *QUICK)
    assert r.returncode == 2 and "Did you mean 'gamma'" in r.stdout + r.stderr
    r = cli("train", "loss=focal", "loss.options.gamma=high", *QUICK)
    assert r.returncode == 2 and "loss.options.gamma='high'" in r.stdout + r.stderr
    r = cli("train", "data=whitespace_table", *QUICK)
    assert r.returncode == 2 and "data.options.path is required" in r.stdout + r.stderr
    r = cli("train", "loss=cross_entropy", "+loss.options.gamma=1", *QUICK)
    assert r.returncode == 2 and "built into dltool" in r.stdout + r.stderr


def test_a_name_clash_is_one_sentence_naming_both(example):
    with pytest.raises(ConfigError, match=r"'conv'.*clashes with dltool's built-in layer 'conv'"):
        plugins.register_layer("conv", lambda o, s, c: None, "another conv")
    plugins.table("layers")
    with pytest.raises(ConfigError, match=r"clashes with the plug-in layer 'se_block' from package "
                                          r"dltool-example-plugin 0.1.0"):
        plugins.register_layer("se_block", lambda o, s, c: None, "mine")


# ---------------------------------------------------------------- --plugins FILE
LAYER_FILE = '''import dltool
from torch import nn


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


dltool.register_layer("scale", lambda o, shape, ctx: (Scale(o["factor"]), shape), "x * factor",
                      options={"factor": 2.0})
'''


@pytest.mark.slow
def test_a_plugins_file_is_recorded_with_its_hash_and_required_again(cli, tmp_path):
    plugins.reset()
    f = tmp_path / "my_layers.py"
    f.write_text(LAYER_FILE)
    layers = "model.layers=[flatten, {scale: {factor: 0.5}}, {fc: {units: 10}}]"
    try:
        r = cli("--plugins", str(f), "train", layers, *QUICK)
        assert r.returncode == 0, r.stdout + r.stderr
        (rec,) = json.loads((tmp_path / "run" / "plugins.json").read_text())
        assert rec == {"group": "layers", "name": "scale", "origin": f"file {f.resolve()}",
                       "version": "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()}
        plugins.reset()
        r = cli("evaluate", "run")
        assert r.returncode == 2 and f"dltool --plugins {f.resolve()}" in r.stdout + r.stderr
        assert cli("--plugins", str(f), "evaluate", "run").returncode == 0
        plugins.reset()
        f.write_text(LAYER_FILE + "# changed\n")
        r = cli("--plugins", str(f), "evaluate", "run")
        assert r.returncode == 2 and "the same version or file" in r.stdout + r.stderr
    finally:
        plugins.reset()


# ---------------------------------------------------------------- nothing a config names runs
EVIL = "import pathlib\npathlib.Path(__file__).with_suffix('.ran').write_text('ran')\n"


@pytest.mark.parametrize("args", [
    ["train", "+plugins=EVIL"],  # an override naming a file
    ["train", "trainer.callbacks=[EVIL]"],  # a callback named by path
    pytest.param(["train", "model.layers=[flatten, {evil_mod.layer: {}}, {fc: 10}]"],  # a layer named by module path
                 marks=pytest.mark.slow),  # refused when the model is built (after the data is loaded)
    ["train", "loss.name=evil_mod:loss"],  # a loss named by module:function
    ["train", "conf.yaml"],  # a config file with a plugins key
])
def test_configs_and_overrides_cannot_load_a_plugin(cli, tmp_path, args, monkeypatch):
    plugins.reset()
    evil = tmp_path / "evil_mod.py"
    evil.write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf.yaml").write_text(f"defaults:\n  - train\n  - _self_\nplugins: [{evil}]\n")
    r = cli(*[a.replace("EVIL", str(evil)) for a in args], "trainer.epochs=1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert not evil.with_suffix(".ran").exists() and "evil_mod" not in __import__("sys").modules
    assert not (tmp_path / "outputs").exists()


def test_a_recorded_plugin_file_is_only_compared_never_imported(cli, tmp_path):
    """The check runs before any checkpoint is read: a run dir of placeholder files is enough to show it."""
    plugins.reset()
    evil = tmp_path / "evil_plugin.py"
    evil.write_text(EVIL)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).write_bytes(b"")
    (run / "config.yaml").write_text("model: {name: x}\n")
    (run / "plugins.json").write_text(json.dumps([{"group": "layers", "name": "linear_x", "origin": f"file {evil}",
                                                   "version": "sha256:0"}]))
    before = fingerprint(tmp_path)
    for args in (["evaluate", "run"], ["predict", "run", str(evil)], ["export", "run"], ["diagnose", "run"],
                 ["train", "resume=run", "trainer.epochs=2"]):
        r = cli(*args)
        lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and f"dltool --plugins {evil}" in lines[0], (args, lines)
    assert not evil.with_suffix(".ran").exists() and fingerprint(tmp_path) == before
    (run / "plugins.json").write_text('{"not": "a list"}')
    r = cli("evaluate", "run")
    assert r.returncode == 2 and "not a plug-in record written by dltool" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_run_dir_naming_a_plugin_file_is_only_compared_never_imported(cli, tmp_path):
    plugins.reset()
    assert cli("train", "model=linear", *QUICK).returncode == 0
    evil = tmp_path / "evil_plugin.py"
    evil.write_text(EVIL)
    run = tmp_path / "run"
    (run / "plugins.json").write_text(json.dumps([{"group": "layers", "name": "linear_x", "origin": f"file {evil}",
                                                   "version": "sha256:0"}]))
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg + f"plugins: [{evil}]\n")
    before = fingerprint(tmp_path)
    for args in (["evaluate", "run"], ["predict", "run", str(evil)], ["train", "resume=run", "trainer.epochs=2"]):
        r = cli(*args)
        assert r.returncode == 2 and "linear_x" in r.stdout + r.stderr, args
    (run / "plugins.json").unlink()
    r = cli("evaluate", "run")
    assert r.returncode == 2 and "plugins" in r.stdout + r.stderr  # the stored config's unknown key: refused
    assert not evil.with_suffix(".ran").exists()
    assert {p: b for p, b in fingerprint(tmp_path).items() if p.name != "plugins.json"} == \
        {p: b for p, b in before.items() if p.name != "plugins.json"}


def test_plugins_flag_only_before_the_command(cli, tmp_path):
    evil = tmp_path / "evil_mod.py"
    evil.write_text(EVIL)
    r = cli("train", "--plugins", str(evil), "trainer.epochs=1")
    assert r.returncode == 2 and "goes before the command" in r.stdout + r.stderr
    assert not evil.with_suffix(".ran").exists()
    r = cli("--plugins", str(tmp_path / "missing.py"), "train")
    assert r.returncode == 2 and "expected an existing Python file" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_plugins_file_layer_trains_under_ddp_ranks_and_python_entries_are_refused_there(cli, tmp_path):
    plugins.reset()
    f = tmp_path / "my_layers.py"
    f.write_text(LAYER_FILE)
    layers = "model.layers=[flatten, {scale: {factor: 0.5}}, {fc: {units: 10}}]"
    ddp = ["trainer.devices=2", "trainer.device=cpu"]
    try:
        r = cli("--plugins", str(f), "train", layers, *ddp, *QUICK)
        assert r.returncode == 0, r.stdout + r.stderr
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["params"] == 64 * 10 + 10 and summary["epochs_run"] == 1
        assert json.loads((tmp_path / "run" / "plugins.json").read_text())[0]["name"] == "scale"
        plugins.reset()
        plugins.register_layer("half", lambda o, shape, ctx: (torch.nn.Identity(), shape), "x (from Python)")
        r = cli("train", "model.layers=[flatten, half, {fc: {units: 10}}]", *ddp, *QUICK[:-1], "hydra.run.dir=run2")
        assert r.returncode == 2 and "registered from Python" in r.stdout + r.stderr
    finally:
        plugins.reset()


@pytest.mark.slow
def test_a_plugin_augmentation_gets_p_per_example_and_its_own_options(example):
    from dltool.data.augment import parse, table

    (name, opts), = parse([{"salt_pepper": {"amount": 0.25, "p": 0.5}}], "sequence")
    assert (name, opts) == ("salt_pepper", {"amount": 0.25, "p": 0.5})
    op = table()["salt_pepper"]
    x = torch.full((400, 1, 10, 10), 0.3)
    out = op(x, opts, torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1)  # (N, 100)
    touched = changed.any(1)
    assert 0.4 < float(touched.float().mean()) < 0.6  # p=0.5 of the examples
    assert 0.2 < float(changed[touched].float().mean()) < 0.3  # amount=0.25 of their values
    assert set(out[changed.view_as(out)].unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ConfigError, match="Did you mean 'amount'"):
        parse([{"salt_pepper": {"amout": 0.1}}])


@pytest.mark.slow
def test_training_with_a_plugin_augmentation_records_it(example, cli, tmp_path):
    r = cli("train", "augment.ops=[{salt_pepper: {amount: 0.1}}]", "model=mlp", *QUICK)
    assert r.returncode == 0, r.stdout + r.stderr
    (rec,) = json.loads((tmp_path / "run" / "plugins.json").read_text())
    assert (rec["group"], rec["name"]) == ("augmentations", "salt_pepper")


@pytest.mark.slow
def test_a_plugin_layer_is_initialized_penalized_and_frozen_like_a_built_in(example):
    from dltool.train.losses import penalized_params
    from dltool.train.run import prepare
    from tests.conftest import make_config

    p = prepare(make_config(CNN, "init=normal", "init.std=0.02", "trainer.diagnostics=false"))
    se = p.built.model.layers.se_block1
    for w in (se.fc1.weight.detach(), se.fc2.weight.detach()):  # init.scheme=normal reached them
        assert float(w.std()) == pytest.approx(0.02, rel=0.5) and float(w.abs().max()) < 0.1
    decayed = {id(t) for t in penalized_params(p.built.model, make_config().regularization)}
    assert id(se.fc1.weight) in decayed and id(se.fc1.bias) not in decayed  # weights only, as for fc/conv
    frozen = prepare(make_config(CNN, "model.freeze=[se_block1]", "trainer.diagnostics=false")).built.model
    assert not any(t.requires_grad for t in frozen.layers.se_block1.parameters())
    assert all(t.requires_grad for t in frozen.layers.conv1.parameters())


@pytest.mark.slow
def test_the_example_package_installs_with_pip_and_a_fresh_dltool_process_uses_it(tmp_path):
    """The real thing once: pip builds the package from its pyproject.toml into a folder, and a new `dltool`
    process with that folder on PYTHONPATH lists and trains with its entries."""
    import os
    import subprocess
    import sys

    from tests.conftest import run_cli

    pytest.importorskip("setuptools")  # --no-build-isolation builds with the environment's setuptools
    from tests.plugin_env import EXAMPLE

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(EXAMPLE)], check=True, capture_output=True, cwd=tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    listed = run_cli("list", "plugins", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "dltool-example-plugin 0.1.0" in listed.stdout
    ran = run_cli("train", CNN, "loss=focal", "trainer.metrics=[top2]", *QUICK, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    names = {r["name"] for r in json.loads((tmp_path / "run" / "plugins.json").read_text())}
    assert names == {"se_block", "focal", "top2"}


def test_used_finds_plugin_layers_inside_blocks_and_not_in_option_values():
    from dltool.plugins import layer_names

    layers = [{"conv": {"padding": "same"}}, {"repeat": {"n": 2, "layers": ["se", {"residual": {"layers": ["a"]}}]}},
              {"branches": [["b"], [{"c": {"units": 3}}]]}]
    assert layer_names(layers) == {"conv", "repeat", "se", "residual", "a", "branches", "b", "c"}


@pytest.mark.slow
def test_a_model_registered_in_python_is_named_in_model_layers_and_measured(tmp_path):
    from dltool.config.schema import ModelConfig
    from dltool.models.builder import build_model

    def tiny(options, shape, num_classes):  # a user's own nn.Module, any output shape
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(shape), options["hidden"]),
                                   torch.nn.ReLU(), torch.nn.Linear(options["hidden"], num_classes))

    plugins.register_model("tiny_net", tiny, "flatten, fc hidden, relu, fc classes", options={"hidden": 16})
    try:
        built = build_model(ModelConfig(layers=[{"tiny_net": {"hidden": 12}}]), (1, 8, 8), 10)
        (rec,) = built.trace
        assert (rec.name, rec.out_shape, rec.params) == ("tiny_net1", (10,), 64 * 12 + 12 + 12 * 10 + 10)
        assert rec.macs == 64 * 12 + 12 * 10
        with pytest.raises(ConfigError, match="clashes with the plug-in model 'tiny_net'"):
            plugins.register_layer("tiny_net", tiny, "a layer of the same name")
    finally:
        plugins.unregister("models", "tiny_net")


@pytest.mark.slow
def test_gradcheck_and_sanity_check_run_through_a_plugin_layer_and_loss(example, cli):
    """The plug-in layer's backward agrees with the numerical gradient, and the net can overfit a batch with focal."""
    layers = "model.layers=[{conv: {filters: 4, padding: 1}}, relu, {se_block: 2}, flatten, {fc: 10}]"
    r = cli("gradcheck", layers, "loss=focal")
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if "se_block1.fc" in line]
    assert len(rows) == 4 and all(line.rstrip(" │").endswith("ok") for line in rows)
    r = cli("overfit-sanity-check", layers, "loss=focal")
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("stored", ["trainer: {callbacks: [evil_mod:run]}", "trainer: {metrics: [evil_mod.metric]}",
                                    pytest.param("model: {layers: [flatten, evil_mod.layer, {fc: 10}]}",
                                                 marks=pytest.mark.slow),  # refused when the model is built
                                    "loss: {name: evil_mod}", "data: {name: evil_mod}"])
def test_a_stored_run_config_naming_a_module_is_refused_without_importing_it(cli, tmp_path, monkeypatch, stored):
    plugins.reset()
    (tmp_path / "evil_mod.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.yaml").write_text(stored + "\n")
    before = fingerprint(tmp_path)
    r = cli("train", "resume=run", "trainer.epochs=5")
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "evil_mod" in lines[0], lines
    assert not (tmp_path / "evil_mod.ran").exists() and "evil_mod" not in __import__("sys").modules
    assert fingerprint(tmp_path) == before


@pytest.mark.slow
def test_trainer_monitor_may_name_a_plugin_metric(example):
    from tests.conftest import make_config

    cfg = make_config("trainer.metrics=[top2]", "trainer.monitor=val_top2", "trainer.mode=max")
    assert (cfg.trainer.monitor, cfg.trainer.metrics) == ("val_top2", ["top2"])
    with pytest.raises(ConfigError, match=r"trainer.monitor='val_top3'.* Did you mean 'val_top2'"):
        make_config("trainer.metrics=[top2]", "trainer.monitor=val_top3", "trainer.mode=max")
    with pytest.raises(ConfigError, match=r"trainer.metrics\[0\]='top3' is not known. Did you mean 'top2'"):
        make_config("trainer.metrics=[top3]")


@pytest.mark.slow
def test_a_plugin_layer_has_signals_and_a_plugin_metric_picks_the_best_epoch(example, cli, tmp_path):
    """Per-layer signals reach the plug-in layer's parameters, and trainer.monitor=val_top2 (mode max) picks the
    epoch with the highest val_top2 in metrics.csv, in a real training run."""
    r = cli("train", CNN, "trainer.epochs=3", "trainer.metrics=[top2]", "trainer.monitor=val_top2",
            "trainer.mode=max", "trainer.loggers=[csv]", "hydra.run.dir=run")
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "run"
    signals = (run / "signals.csv").read_text().splitlines()
    se_rows = [line.split(",") for line in signals if line.split(",")[1].startswith("se_block1.")]
    assert len({row[1] for row in se_rows}) == 4  # the two Linear layers' weights and biases
    ratios = [float(row[3]) for row in se_rows if row[2] == "weight"]
    assert len(ratios) == 2 * 3 and all(r > 0 for r in ratios)  # update/weight ratios, both weights, every epoch
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    top2 = [float(v) for v in (row[rows[0].index("val_top2")] for row in rows[1:])]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["monitor"] == "val_top2" and summary["best_value"] == pytest.approx(max(top2))
    assert summary["best_epoch"] == top2.index(max(top2)) + 1


def test_list_plugins_says_so_when_none_is_loaded(cli):
    plugins.reset()
    r = cli("list", "plugins")
    assert r.returncode == 0 and r.stdout.strip().startswith("plug-ins: none loaded") and "┃" not in r.stdout
