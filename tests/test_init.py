"""Initializers: every scheme runs, has the textbook statistics, spares biases; zeros are refused."""

import math

import pytest
import torch

from dltool.catalog import INITIALIZERS
from dltool.config.schema import InitConfig, ModelConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.models.init import initialize


def big_mlp():
    return build_model(ModelConfig(layers=[{"fc": 400}, "relu", {"fc": 10}]), (800,), 10)


@pytest.mark.parametrize("scheme", sorted(set(INITIALIZERS) - {"constant"}))  # constant: refused, below
def test_every_scheme_initializes_weights_and_sets_biases(scheme):
    built = big_mlp()
    before = built.model.layers.fc1.weight.clone()
    initialize(built.model, InitConfig(scheme=scheme, bias=0.01, value=0.5))
    w, b = built.model.layers.fc1.weight, built.model.layers.fc1.bias
    assert torch.isfinite(w).all()
    if scheme == "default":
        assert torch.equal(w, before)
    else:
        assert not torch.equal(w, before)
        assert torch.all(b == 0.01)


def test_kaiming_normal_std_is_sqrt_2_over_fan_in():
    built = big_mlp()
    initialize(built.model, InitConfig(scheme="kaiming_normal"))
    assert built.model.layers.fc1.weight.std().item() == pytest.approx(math.sqrt(2 / 800), rel=0.03)


def test_xavier_uniform_bound_and_normal_std():
    built = big_mlp()
    initialize(built.model, InitConfig(scheme="xavier_uniform"))
    bound = math.sqrt(6 / (800 + 400))
    assert built.model.layers.fc1.weight.abs().max().item() <= bound
    initialize(built.model, InitConfig(scheme="normal", std=0.01))
    assert built.model.layers.fc1.weight.std().item() == pytest.approx(0.01, rel=0.03)


def test_orthogonal_rows_are_orthonormal():
    built = big_mlp()
    initialize(built.model, InitConfig(scheme="orthogonal"))
    w = built.model.layers.fc1.weight  # (400, 800)
    assert torch.allclose(w @ w.T, torch.eye(400), atol=1e-4)


@pytest.mark.parametrize("spec", [InitConfig(scheme="constant", value=0.0), InitConfig(scheme="constant", value=0.5),
                                  InitConfig(scheme="normal", std=0.0), InitConfig(scheme="xavier_uniform", gain=0.0),
                                  InitConfig(scheme="uniform", scale=0.0)])
def test_all_zero_weights_are_refused_with_the_symmetry_reason(spec):
    with pytest.raises(ConfigError, match="symmetry"):
        initialize(big_mlp().model, spec)


def test_per_layer_init_overrides_the_global_scheme():
    built = build_model(ModelConfig(layers=[{"fc": {"units": 400, "init": {"scheme": "normal", "std": 0.5}}},
                                            "relu", {"fc": 10}]), (800,), 10)
    initialize(built.model, InitConfig(scheme="normal", std=0.01), built.layer_inits)
    assert built.model.layers.fc1.weight.std().item() == pytest.approx(0.5, rel=0.05)
    assert built.model.layers.fc2.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_batchnorm_scale_is_left_at_one():
    built = build_model(ModelConfig(layers=[{"fc": 20}, "batchnorm", {"fc": 10}]), (8,), 10)
    initialize(built.model, InitConfig(scheme="normal", std=0.3, bias=0.1))
    assert torch.all(built.model.layers.bn1.weight == 1) and torch.all(built.model.layers.bn1.bias == 0)
