"""The JSON Schema of the config (dltool schema, configs/_schema/): generated from the key table, shipped beside the
configs, named by every shipped config file's modeline; every shipped config validates, a misspelt key fails."""

from __future__ import annotations

import functools
import json
import re
from importlib.metadata import version

import jsonschema
import pytest
import yaml
from omegaconf import OmegaConf

from dltool.config.compose import compose
from dltool.config.json_schema import config_schema, file_schema, schema_names, schema_text
from dltool.config.variants import config_dir

CONFIGS = config_dir()
SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if p.relative_to(CONFIGS).parts[0] != "hydra")
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.M)
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


@functools.cache
def validator(text: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(schema: dict, value: object) -> list[str]:
    return [e.message for e in validator(json.dumps(schema)).iter_errors(value)]


def test_the_shipped_schema_files_are_the_generated_ones():
    for name in schema_names():
        assert (CONFIGS / "_schema" / f"{name}.schema.json").read_text() == schema_text(name), name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_names_its_schema_and_validates(path):
    (target,) = MODELINE.findall(path.read_text())
    found = validator((path.parent / target).resolve().read_text())
    assert [e.message for e in found.iter_errors(yaml.safe_load(path.read_text()) or {})] == []


def test_a_misspelt_or_foreign_key_or_a_bad_value_fails_the_schema():
    config, optimizer = config_schema(), file_schema("optimizer")
    assert errors(config, {"optimizer": {"name": "adam", "lr": 0.01}}) == []
    assert errors(config, {"optimizer": {"lrr": 0.01}}) == ["Additional properties are not allowed ('lrr' was "
                                                            "unexpected)"]
    assert errors(config, {"trainr": {"epochs": 3}}) != []
    assert errors(optimizer, {"name": "adam", "momentum": 0.9}) != []  # adam does not read momentum, sgd does
    assert errors(optimizer, {"name": "sgd", "momentum": 0.9}) == []
    assert errors(optimizer, {"name": "sgdd"}) != []
    assert errors(config, {"trainer": {"epochs": 0}}) != []  # the range of config/checks.py: >= 1
    assert errors(config, {"trainer": {"epochs": 1.5}}) != []
    assert errors(config, {"trainer": {"precision": 16, "mode": "max"}}) == []
    assert errors(config, {"trainer": {"mode": "maximum"}}) != []
    assert errors(config, {"model": {"layers": [{"fc": {"units": "${data.num_classes}"}}], "dropout": 0.5}}) == []
    assert errors(file_schema("regularization"), {"activity": [{"layer": "fc1", "l1": 1e-5, "l3": 1}]}) != []


def composed(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose("train", None, overrides), resolve=True)


@pytest.mark.parametrize("experiment", [None, *(pytest.param(e, marks=pytest.mark.slow) for e in EXPERIMENTS)])
def test_the_composed_config_validates(experiment):
    cfg = composed([f"experiment={experiment}"] if experiment else [])
    assert "optimizer" in cfg and "trainer" in cfg
    assert errors(config_schema(), cfg) == []


def test_dltool_schema_prints_and_writes_the_shipped_schema(cli, tmp_path):
    ran = cli("schema")
    assert ran.returncode == 0 and ran.stdout == (CONFIGS / "_schema" / "config.schema.json").read_text()
    ran = cli("schema", "--group", "data", "--out", "data.json")
    assert ran.returncode == 0 and (tmp_path / "data.json").read_text() == schema_text("data")


def test_version_is_the_installed_distributions(cli):
    ran = cli("--version")
    assert ran.returncode == 0 and ran.stdout == f"dltool {version('dltool')}\n"
