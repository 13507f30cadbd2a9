"""dltool.models.params: one rule for layer names, norm layers and weights vs biases, read by init, optim and L1/L2."""

from __future__ import annotations

import pytest
from torch import nn

from dltool.config.schema import InitConfig, ModelConfig, RegularizationConfig
from dltool.models.builder import build_model
from dltool.models.init import bias_tensors, initialize, weight_tensors
from dltool.models.params import decayed, is_norm, is_under, layer_of, own_params, role, short_name
from dltool.train.losses import penalized_params
from dltool.train.optim import param_groups

LAYERS = [{"conv": {"filters": 4, "padding": 1}}, "batchnorm", "relu",
          {"residual": {"layers": [{"conv": {"filters": 4, "padding": 1}}, "relu"]}},
          {"locally_connected": {"filters": 2, "kernel": 3}}, "flatten", {"fc": 3}]


@pytest.fixture
def model() -> nn.Module:
    return build_model(ModelConfig(layers=LAYERS), (2, 6, 6), 3).model


def test_names_as_the_summary_shows_them() -> None:
    assert short_name("layers.res1.body.conv2") == "res1.conv2"
    assert short_name("layers.res1.shortcut") == "res1.shortcut"
    assert layer_of("layers.res1.body.conv2.weight") == "res1.conv2"
    assert layer_of("layers.fc1.bias") == "fc1"
    assert is_under("res1.conv2", "res1") and is_under("res1", "res1") and not is_under("res10.conv1", "res1")


def test_roles(model: nn.Module) -> None:
    roles = {(short_name(m), p): role(mod, p) for m, mod, p, _ in own_params(model)}
    assert roles == {("conv1", "weight"): "weight", ("conv1", "bias"): "bias", ("bn1", "weight"): "norm",
                     ("bn1", "bias"): "norm", ("res1.conv2", "weight"): "weight", ("res1.conv2", "bias"): "bias",
                     ("local1", "weight"): "weight", ("local1", "bias"): "bias", ("fc1", "weight"): "weight",
                     ("fc1", "bias"): "bias"}
    local = dict(model.named_modules())["layers.local1"]
    assert local.bias.dim() == 3  # why the rule is not nanoGPT's p.dim() >= 2: this bias would count as a weight
    assert is_norm(nn.GroupNorm(2, 4)) and is_norm(nn.LayerNorm(4)) and not is_norm(nn.Linear(2, 2))
    lstm = nn.LSTM(3, 4)
    assert {p: role(lstm, p) for p, _ in lstm.named_parameters()} == {
        "weight_ih_l0": "weight", "weight_hh_l0": "weight", "bias_ih_l0": "bias", "bias_hh_l0": "bias"}


@pytest.mark.parametrize("to_bias,to_norm", [(False, False), (True, False), (False, True), (True, True)])
def test_decay_rule(to_bias: bool, to_norm: bool) -> None:
    bn, fc = nn.BatchNorm1d(3), nn.Linear(3, 3)
    assert decayed(fc, "weight", to_bias, to_norm)
    assert decayed(fc, "bias", to_bias, to_norm) is to_bias
    assert decayed(bn, "weight", to_bias, to_norm) is to_norm and decayed(bn, "bias", to_bias, to_norm) is to_norm


def ids(tensors) -> set[int]:
    return {id(t) for t in tensors}


def test_init_optimizer_and_penalty_agree_on_what_a_weight_is(model: nn.Module) -> None:
    weights = ids(p for _, mod, n, p in own_params(model) if role(mod, n) == "weight")
    penalized = ids(penalized_params(model, RegularizationConfig(l2=1e-3)))
    decayed_group = [g for g in param_groups(model, 0.1, False) if g["weight_decay"] == 0.1]
    assert penalized == weights == ids(decayed_group[0]["params"])
    initialized = {short_name(n) for n, m in model.named_modules() if weight_tensors(m)}
    assert initialized == {"conv1", "res1.conv2", "local1", "fc1"}  # local1 through its per-position views
    biases = ids(b for m in model.modules() for b in bias_tensors(m))
    assert biases == ids(p for _, mod, n, p in own_params(model) if role(mod, n) == "bias")
    everything = ids(penalized_params(model, RegularizationConfig(l2=1e-3, apply_to_bias=True, apply_to_norm=True)))
    assert everything == ids(model.parameters())
    assert ids(p for g in param_groups(model, 0.1, True) for p in g["params"] if g["weight_decay"]) == everything


def test_layer_init_override_reaches_a_layer_inside_a_residual_block(model: nn.Module) -> None:
    initialize(model, InitConfig(scheme="kaiming_normal"), {"res1.conv2": {"scheme": "uniform", "scale": 1e-3}})
    inner = dict(model.named_modules())["layers.res1.body.conv2"]
    outer = dict(model.named_modules())["layers.conv1"]
    assert 0 < inner.weight.abs().max() <= 1e-3 and outer.weight.abs().max() > 1e-2
