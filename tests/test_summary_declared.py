"""`dltool summary` reads a built-in data set's shape from dltool/data/declared.py instead of loading the data:
every declared entry must equal what build_data really gives, and the printed table must not change."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dltool.config.schema import DataConfig
from dltool.data.build import build_data
from dltool.data.declared import SHAPES, declared
from tests.fakedata import write_cifar10, write_cifar100, write_mnist

VISION = {"mnist": lambda r: write_mnist(r), "fashion_mnist": lambda r: write_mnist(r, "FashionMNIST"),
          "cifar10": write_cifar10, "cifar100": write_cifar100}


@pytest.mark.parametrize("name", ["digits", "diabetes", "breast_cancer"])
def test_declared_shape_of_an_embedded_data_set_is_what_build_data_gives(name):
    data = build_data(DataConfig(name=name))
    assert declared(DataConfig(name=name)) == (tuple(data.input_shape), data.num_classes) == SHAPES[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VISION))
def test_declared_shape_of_a_torchvision_data_set_is_what_build_data_gives(tmp_path, name):
    VISION[name](tmp_path)
    data = build_data(DataConfig(name=name, root=str(tmp_path), download=False))
    assert declared(DataConfig(name=name)) == (tuple(data.input_shape), data.num_classes) == SHAPES[name]


def test_every_declared_name_is_covered_by_a_test():
    assert set(SHAPES) == {"digits", "diabetes", "breast_cancer"} | set(VISION)


@pytest.mark.parametrize("override", ["data.layout=signal", "data.normalize=pca", "data.normalize=zca",
                                      "data.image_size=[16, 16]", "data.grayscale=true", "data.subset=100",
                                      "data.folds=5", "data.num_classes=7"])
def test_keys_that_change_or_check_the_shape_load_the_data(override):
    key, value = override.removeprefix("data.").split("=")
    values = {"signal": "signal", "pca": "pca", "zca": "zca", "[16, 16]": [16, 16], "true": True}
    cfg = DataConfig(name="digits", **{key: values.get(value, int(value) if value.isdigit() else value)})
    assert declared(cfg) is None
    assert declared(DataConfig(name="digits", num_classes=10)) == ((1, 8, 8), 10)
    assert declared(DataConfig(name="csv")) is None


@pytest.mark.parametrize("args", [[], ["model=mlp", "data=breast_cancer", "loss=bce"]])
def test_summary_table_is_the_same_with_the_declared_shape_and_with_the_loaded_data(cli, args):
    fast = cli("summary", *args)
    loaded = cli("summary", *args, "data.subset=1000")  # data.subset: the data set is loaded to learn the shape
    assert fast.returncode == loaded.returncode == 0, (fast.stderr, loaded.stderr)
    assert fast.stdout == loaded.stdout and "mult-adds" in fast.stdout


def test_summary_with_a_wrong_num_classes_is_still_one_sentence(cli):
    r = cli("summary", "data.num_classes=7")
    assert r.returncode == 2 and "data.num_classes=7" in r.stderr and "10 classes" in r.stderr


@pytest.mark.slow
def test_summary_of_the_default_run_does_not_import_scikit_learn():
    code = ("import sys; from dltool.cli import main\ntry:\n    main(['summary'])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\nassert 'sklearn' not in sys.modules, 'sklearn imported'\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
