"""Shapes without data: `dltool summary data.input_shape=...`, torchvision's registry as backbones, head vs loss."""

import pytest
import torch

from dltool.cli import main
from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.backbones import BACKBONES
from dltool.models.builder import build_model
from dltool.models.summary import totals
from dltool.train.run import prepare, train
from tests.conftest import make_config


def summary_text(capsys, *args: str) -> str:
    try:
        main(["summary", *args])
    except SystemExit as ex:
        assert not ex.code, capsys.readouterr()
    return capsys.readouterr().out


def test_summary_from_an_input_shape_loads_no_data(capsys):
    # data=imagefolder with a folder that does not exist: loading any data would fail
    out = summary_text(capsys, "data=imagefolder", "data.root=/nonexistent", "data.input_shape=[3,224,224]",
                       "data.num_classes=1000", "model=torchvision", "model.backbone=alexnet")
    assert "61,100,840" in out and "3x224x224" in out


def test_input_shape_needs_num_classes(capsys):
    with pytest.raises(SystemExit):
        main(["summary", "data.input_shape=[8]", "model=mlp"])
    assert "needs data.num_classes" in capsys.readouterr().err


def test_alexnet_has_torchvisions_parameter_count():
    built = build_model(ModelConfig(backbone="alexnet"), (3, 224, 224), 1000)
    assert totals(built)["params"] == 61_100_840


def test_every_torchvision_classifier_is_a_backbone(capsys):
    assert {"alexnet", "densenet121", "convnext_tiny", "efficientnet_b0", "regnet_y_400mf", "vit_b_16",
            "swin_t", "googlenet", "squeezenet1_1"} <= set(BACKBONES)
    with pytest.raises(SystemExit) as ex:
        main(["list", "backbones"])
    lines = capsys.readouterr().out.splitlines()
    assert ex.value.code == 0
    rows = {line.split()[1]: line.split()[3] for line in lines if line.count("│") == 3}
    assert rows["vit_b_16"] == "generic" and rows["resnet50"] == "resnet" and rows["efficientnet_b0"] == \
        "features_classifier" and len([n for n in rows if n in BACKBONES]) == len(BACKBONES)


@pytest.mark.parametrize("name", ["squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5", "googlenet"])
def test_registry_backbone_adapts_head_and_stem(name):
    built = build_model(ModelConfig(backbone=name), (1, 64, 64), 5)
    built.model.train()
    assert built.model(torch.zeros(2, 1, 64, 64)).shape == (2, 5)


def test_small_input_is_refused_where_unknown():
    with pytest.raises(ConfigError, match="small_input=true is only known"):
        build_model(ModelConfig(backbone="alexnet", small_input=True), (3, 32, 32), 10)


ONE_UNIT = ("data=spiral", "data.num_classes=2", "model=mlp", "model.layers.5={fc: {units: 1}}", "trainer.device=cpu")


@pytest.mark.slow
def test_one_output_unit_with_bce_trains_a_binary_problem(tmp_path):
    summary = train(make_config(*ONE_UNIT, "loss=bce", "trainer.epochs=40", "optimizer.lr=0.01"), tmp_path)
    assert summary["test_acc"] > 0.9


def test_head_size_is_checked_against_the_loss():
    with pytest.raises(ConfigError, match="only loss.name=bce reads"):
        prepare(make_config(*ONE_UNIT, "loss=cross_entropy"))
    with pytest.raises(ConfigError, match="outputs 3 values per example but the data has 2 classes"):
        prepare(make_config(*ONE_UNIT[:-2], "model.layers.5={fc: {units: 3}}", "trainer.device=cpu"))
