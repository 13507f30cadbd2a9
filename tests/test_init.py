"""Initializers: every scheme runs, has the textbook statistics, spares biases; zeros are refused."""

import math
from pathlib import Path

import pytest
import torch

from dltool.catalog import INITIALIZERS
from dltool.config.schema import InitConfig, ModelConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.models.init import OUTPUT_GAIN, initialize
from dltool.train.losses import INIT_TOLERANCE, build_loss, expected_initial_loss
from tests.conftest import make_config


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


# the input each shipped model is meant for (its header comment): (C, H, W) images, (T, F) sequences, (C, L) signals
SHAPES = {"lstm": (8, 8), "gru": (8, 8), "wavenet_small": (1, 64), "lenet": (1, 28, 28), "cnn_digits": (1, 8, 8),
          "linear_softmax": (64,), "linear_svm": (64,), "mlp": (1, 8, 8)}
# > 1.3 s to build and run
HEAVY = {"alexnet_small", "inception_small", "resnet18", "torchvision", "vgg11", "mobilenet_v3_small"}
MODELS = sorted(p.stem for p in (Path(__file__).parent.parent / "configs" / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in HEAVY else m for m in MODELS])
def test_every_shipped_model_starts_near_the_textbook_loss(model):
    """The default init (kaiming_normal, small output layer) on standardized inputs and random labels: the loss at
    init within INIT_TOLERANCE of ln 10, in training mode as the first step sees it; the scores' std <= 0.15."""
    cfg = make_config(f"model={model}")
    shape = SHAPES.get(model, (3, 32, 32))
    torch.manual_seed(0)
    built = build_model(cfg.model, shape, 10)
    initialize(built.model, cfg.init, built.layer_inits)
    x, y = torch.randn(64, *shape), torch.randint(0, 10, (64,))
    with torch.no_grad():
        scores = built.model.train()(x)
    ce = torch.nn.functional.cross_entropy(scores, y).item()
    assert abs(ce - math.log(10)) / math.log(10) <= INIT_TOLERANCE and abs(ce - math.log(10)) < 0.05, ce
    assert scores.std().item() <= 0.15


@pytest.mark.parametrize("loss", ["mse", "squared_hinge", "hinge", "cross_entropy"])
def test_default_init_passes_the_init_check_for_every_loss(loss):
    """The MLP's scores ~ 0: each loss starts at its textbook value (1/C, (C-1) m^2, (C-1) m, ln C) within 5%."""
    cfg = make_config("model=mlp", f"loss={loss}")
    torch.manual_seed(0)
    built = build_model(cfg.model, (1, 8, 8), 10)
    initialize(built.model, cfg.init, built.layer_inits)
    x, y = torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,))
    with torch.no_grad():
        got = build_loss(cfg.loss)(built.model(x), y).item()
    expected = expected_initial_loss(loss, 10, 1.0)
    assert expected == {"mse": 0.1, "squared_hinge": 9.0, "hinge": 9.0, "cross_entropy": math.log(10)}[loss]
    assert abs(got - expected) / expected < 0.05, (got, expected)


def test_output_layer_is_small_only_under_kaiming_and_without_its_own_init():
    built = big_mlp()
    initialize(built.model, InitConfig(scheme="kaiming_normal"))
    assert built.model.layers.fc2.weight.std().item() == pytest.approx(OUTPUT_GAIN / math.sqrt(400), rel=0.05)
    initialize(built.model, InitConfig(scheme="xavier_normal", gain=1.0))  # the user's gain, on every layer
    assert built.model.layers.fc2.weight.std().item() == pytest.approx(math.sqrt(2 / 410), rel=0.05)
    built = build_model(ModelConfig(layers=[{"fc": 400}, "relu", {"fc": {"units": 10, "init": {"scheme": "normal",
                                                                                               "std": 0.5}}}]),
                        (800,), 10)
    initialize(built.model, InitConfig(scheme="kaiming_normal"), built.layer_inits)
    assert built.model.layers.fc2.weight.std().item() == pytest.approx(0.5, rel=0.05)
