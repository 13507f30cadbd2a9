"""Every model config builds and trains (forward + backward) on the inputs it is meant for; the new blocks
(branches, conv1d causal/dilated, conv3d, rnn/lstm/gru, locally_connected) compute what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from dltool.config.compose import config_dir
from dltool.config.schema import InitConfig, ModelConfig
from dltool.errors import ConfigError
from dltool.models.blocks import LocallyConnected2d
from dltool.models.builder import build_model
from dltool.models.init import initialize
from dltool.models.summary import totals
from tests.conftest import make_config, run_cli

# config name -> the (input shape, classes) it is meant for. A new configs/model/*.yaml must be added here.
INTENDED: dict[str, list[tuple[tuple[int, ...], int]]] = {
    "mlp": [((2,), 3), ((1, 8, 8), 10)],
    "cnn_digits": [((1, 8, 8), 10)],
    "lenet": [((1, 28, 28), 10), ((3, 32, 32), 10)],
    "alexnet_small": [((3, 32, 32), 10)],
    "vgg_small": [((3, 32, 32), 10), ((1, 32, 32), 10)],
    "resnet_small": [((3, 32, 32), 10), ((1, 8, 8), 10)],
    "inception_small": [((3, 32, 32), 10), ((3, 32, 32), 100)],
    "lstm": [((8, 8), 10), ((30, 5), 4)],
    "gru": [((8, 8), 10), ((30, 5), 4)],
    "wavenet_small": [((8, 8), 10), ((5, 30), 4)],
    "linear_softmax": [((2,), 3), ((3, 32, 32), 10)],
    "linear": [((10,), 1), ((20,), 5)],
    "linear_svm": [((2,), 3), ((1, 8, 8), 10)],
    "resnet18": [((3, 32, 32), 10), ((1, 28, 28), 10)],
    "vgg11": [((3, 32, 32), 10)],
    "mobilenet_v3_small": [((3, 32, 32), 10)],
    "torchvision": [((3, 64, 64), 10), ((1, 64, 64), 2)],
}
MODEL_FILES = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def spec_of(name: str) -> ModelConfig:
    return make_config(f"model={name}").model


@pytest.mark.parametrize("name", MODEL_FILES)
def test_every_model_config_trains_on_its_inputs(name: str) -> None:
    assert name in INTENDED, f"configs/model/{name}.yaml: add its intended input shapes to INTENDED"
    spec = spec_of(name)
    for shape, classes in INTENDED[name]:
        torch.manual_seed(0)
        built = build_model(spec, shape, classes)
        initialize(built.model, InitConfig(), built.layer_inits)
        x = torch.randn(4, *shape)
        y = built.model(x)
        assert y.shape == (4, classes), (name, shape)
        nn.functional.cross_entropy(y, torch.arange(4) % classes).backward()
        params = list(built.model.parameters())
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params), (name, shape)
        assert sum(p.grad.abs().sum() > 0 for p in params) >= len(params) - 2  # gradients reach (nearly) all
        n = sum(p.numel() for p in params)
        assert totals(built)["params"] == n
        assert sum(r.params for r in built.trace) == n, f"{name}: summary rows do not add up to torch's count"


@pytest.mark.slow
def test_summary_cli_totals_agree_with_torch(tmp_path: Path) -> None:
    res = run_cli("summary", "model=inception_small", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    total = re.search(r"total\s*│\s*│\s*│\s*([\d,]+)", res.stdout)
    built = build_model(spec_of("inception_small"), (1, 8, 8), 10)
    assert total and int(total.group(1).replace(",", "")) == sum(p.numel() for p in built.model.parameters())
    assert "br1.path2.conv" in res.stdout and "branches" in res.stdout


def layers(*items: object, shape: tuple[int, ...] = (3, 8, 8), classes: int = 4):
    return build_model(ModelConfig(layers=list(items)), shape, classes)


def test_branches_concatenate_channels_and_name_paths() -> None:
    b = layers({"branches": [[{"conv": {"filters": 4, "kernel": 1}}],
                             [{"conv": {"filters": 6, "kernel": 3, "padding": 1}}, "relu"],
                             [{"pool": {"kernel": 3, "stride": 1, "padding": 1}}], []]},
               "global_avg_pool", {"fc": 4})
    assert b.trace[0].name == "br1" and b.trace[0].out_shape == (4 + 6 + 3 + 3, 8, 8)
    names = [r.name for r in b.trace]
    assert "br1.path1.conv1" in names and "br1.path2.conv2" in names and "br1.path3.pool1" in names
    x = torch.randn(2, 3, 8, 8)
    out = b.model.layers.br1(x)
    assert torch.equal(out[:, -3:], x)  # the empty path passes the input through


def test_branch_shape_mismatch_names_the_block_and_path() -> None:
    with pytest.raises(ConfigError) as e:
        layers("relu", {"branches": [[{"conv": {"filters": 4, "kernel": 1}}],
                                     [{"conv": {"filters": 4, "kernel": 3}}]]}, "flatten", {"fc": 4})
    msg = str(e.value)
    assert "branches block br1" in msg and "path 2 outputs 4x6x6" in msg and "path 1 outputs 4x8x8" in msg
    assert msg.count(". ") == 0 and msg.endswith(".")


def test_residual_mismatch_names_the_block() -> None:
    with pytest.raises(ConfigError, match=r"residual block res1\): the block maps 3x8x8 to 4x6x6 but projection=none"):
        layers({"residual": {"layers": [{"conv": {"filters": 4}}], "projection": "none"}}, "flatten", {"fc": 4})
    with pytest.raises(ConfigError, match=r"residual block res1\): the block maps 3x8x8 to 4x6x6, and no 1x1"):
        layers({"residual": [{"conv": {"filters": 4}}]}, "flatten", {"fc": 4})


@pytest.mark.slow
@pytest.mark.parametrize("spec", [
    "layers=[{branches: [[{conv: {filters: 4, kernel: 1}}], [{conv: {filters: 4, kernel: 3}}]]},flatten,{fc: 10}]",
    "layers=[{residual: {layers: [{conv: {filters: 4}}], projection: none}},flatten,{fc: 10}]",
])
def test_mismatched_block_fails_before_training_in_one_sentence(tmp_path: Path, spec: str) -> None:
    res = run_cli("train", f"model.{spec}", "trainer.epochs=1", cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "block" in res.stderr
    assert re.search(r"(branches block br1|residual block res1)", res.stderr)
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("best.pt"))


def test_causal_conv1d_never_sees_the_future() -> None:
    b = layers({"conv1d": {"filters": 3, "kernel": 2, "dilation": 4, "padding": "causal"}},
               {"conv1d": {"filters": 3, "kernel": 3, "dilation": 2, "padding": "causal"}}, "global_avg_pool",
               {"fc": 4}, shape=(2, 16))
    assert b.trace[0].out_shape == (3, 16) and b.trace[1].out_shape == (3, 16)
    stack = nn.Sequential(b.model.layers.conv1, b.model.layers.conv2)
    x = torch.randn(1, 2, 16)
    x2 = x.clone()
    x2[..., 10:] = torch.randn(1, 2, 6)  # change the future from t=10 on
    assert torch.allclose(stack(x)[..., :10], stack(x2)[..., :10])
    assert not torch.allclose(stack(x)[..., 10:], stack(x2)[..., 10:])


def test_conv1d_dilation_arithmetic_and_conv3d_shapes() -> None:
    b = layers({"conv1d": {"filters": 4, "kernel": 3, "dilation": 2}}, "flatten", {"fc": 4}, shape=(2, 20))
    assert b.trace[0].out_shape == (4, 16)  # 20 - 2*(3-1) = 16
    v = layers({"conv3d": {"filters": 4, "kernel": [3, 3, 3], "padding": [0, 1, 1]}}, {"pool": [1, 2, 2]},
               "global_avg_pool", {"fc": 4}, shape=(1, 5, 8, 8))
    assert v.trace[0].out_shape == (4, 3, 8, 8) and v.trace[1].out_shape == (4, 3, 4, 4)
    with pytest.raises(ConfigError, match="conv3d works on CxTxHxW volumes"):
        layers({"conv3d": 4}, "flatten", {"fc": 4})


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_return_modes(kind: str) -> None:
    for ret, shape in [("last", (12,)), ("mean", (12,)), ("max", (12,)), ("sequence", (7, 12))]:
        b = layers({kind: {"hidden": 6, "layers": 2, "bidirectional": True, "dropout": 0.1, "return": ret}},
                   "flatten", {"fc": 4}, shape=(7, 5))
        assert b.trace[0].out_shape == shape
    b = layers({kind: {"hidden": 6, "bidirectional": True}}, {"fc": 4}, shape=(7, 5))
    wrapper = b.model.layers[0]
    x = torch.randn(3, 7, 5)
    out, _ = wrapper.rnn(x)
    last = wrapper(x)  # forward direction's final step, backward direction's first step
    assert torch.allclose(last[:, :6], out[:, -1, :6]) and torch.allclose(last[:, 6:], out[:, 0, 6:])
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    assert b.trace[0].macs == 7 * 2 * gates * 6 * (5 + 6)


def test_recurrent_needs_sequences_and_dropout_needs_layers() -> None:
    with pytest.raises(ConfigError, match="read TxF sequences"):
        layers({"lstm": 8}, {"fc": 4})
    with pytest.raises(ConfigError, match="needs layers >= 2"):
        layers({"lstm": {"hidden": 8, "dropout": 0.2}}, {"fc": 4}, shape=(5, 3))
    b = layers("rows", {"lstm": 8}, {"fc": 4}, shape=(1, 8, 8))  # an image read row by row
    assert b.trace[0].out_shape == (8, 8)


def test_locally_connected_equals_conv_when_its_weights_are_tied() -> None:
    b = layers({"locally_connected": {"filters": 5, "kernel": 3, "stride": 1, "padding": 1}}, "flatten", {"fc": 4})
    lc: LocallyConnected2d = b.model.layers.local1
    conv = nn.Conv2d(3, 5, 3, padding=1)
    with torch.no_grad():
        for w in lc.weight_views():
            w.copy_(conv.weight)
        lc.bias.copy_(conv.bias[:, None, None].expand(5, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(lc(x), conv(x), atol=1e-5)
    assert b.trace[0].params == 8 * 8 * 5 * 3 * 9 + 5 * 8 * 8  # untied: one filter bank per position
    assert b.trace[0].macs == 8 * 8 * 5 * 3 * 9


def test_locally_connected_init_uses_per_position_fans() -> None:
    b = layers({"locally_connected": {"filters": 64, "kernel": 3}}, "flatten", {"fc": 4}, shape=(16, 10, 10))
    initialize(b.model, InitConfig(scheme="kaiming_normal"))
    w = b.model.layers.local1.weight
    assert abs(w.std().item() - (2 / (16 * 9)) ** 0.5) < 0.01  # He: std sqrt(2 / fan_in), fan_in = C*k*k
