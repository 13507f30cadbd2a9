"""Losses against hand-computed values; penalties on weights but not biases; activity penalties."""

import math

import pytest
import torch

from dltool.catalog import LOSSES
from dltool.config.schema import ActivityConfig, LossConfig, ModelConfig, RegularizationConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.train.losses import LossContext, Penalty, build_loss, expected_initial_loss

SCORES = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])  # cs231n's SVM example
LABELS = torch.tensor([0, 1, 2])


REGRESSION = ("l1", "huber", "smooth_l1")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_finite_and_differentiable(name):
    logits = torch.randn(5, 4, requires_grad=True)
    if name in REGRESSION:  # regression-only losses: real-valued targets, one per output
        loss = build_loss(LossConfig(name=name), LossContext("regression"))(logits, torch.randn(5, 4))
    else:
        loss = build_loss(LossConfig(name=name))(logits, torch.tensor([0, 1, 2, 3, 0]))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_hinge_matches_cs231n_worked_example():
    # per-example losses 2.9, 0, 12.9 -> mean 5.27
    assert build_loss(LossConfig(name="hinge"))(SCORES, LABELS).item() == pytest.approx(5.2667, abs=1e-3)
    sq = (2.9 ** 2 + 0 + (6.3 ** 2 + 6.6 ** 2)) / 3
    assert build_loss(LossConfig(name="squared_hinge"))(SCORES, LABELS).item() == pytest.approx(sq, rel=1e-4)


def test_cross_entropy_with_zero_scores_is_log_c():
    loss = build_loss(LossConfig(name="cross_entropy"))(torch.zeros(4, 10), torch.tensor([1, 2, 3, 4]))
    assert loss.item() == pytest.approx(math.log(10)) == pytest.approx(expected_initial_loss("cross_entropy", 10))


def test_bce_single_logit_for_two_classes():
    loss = build_loss(LossConfig(name="bce"))(torch.zeros(3, 1), torch.tensor([0, 1, 1]))
    assert loss.item() == pytest.approx(math.log(2))


def test_l2_penalty_is_half_lambda_w_squared_on_weights_only():
    built = build_model(ModelConfig(layers=[{"fc": 4}, "batchnorm", {"fc": 2}]), (3,), 2)
    m = built.model
    pen = Penalty(m, RegularizationConfig(l2=0.1))
    expected = 0.5 * 0.1 * (m.layers.fc1.weight.pow(2).sum() + m.layers.fc2.weight.pow(2).sum())
    assert pen().item() == pytest.approx(expected.item())
    with_bias = Penalty(m, RegularizationConfig(l1=0.1, apply_to_bias=True, apply_to_norm=True))
    every = sum(p.abs().sum() for p in m.parameters())
    assert with_bias().item() == pytest.approx(0.1 * every.item(), rel=1e-6)


def test_activity_penalty_on_a_named_layer():
    built = build_model(ModelConfig(layers=[{"fc": 4}, "relu", {"fc": 2}]), (3,), 2)
    pen = Penalty(built.model, RegularizationConfig(activity=[ActivityConfig(layer="relu1", l1=0.5)]))
    x = torch.randn(6, 3)
    built.model.train()
    built.model(x)
    act = torch.relu(built.model.layers.fc1(x))
    assert pen().item() == pytest.approx(0.5 * act.abs().sum(1).mean().item(), rel=1e-5)


def test_activity_penalty_on_unknown_layer_suggests_names():
    built = build_model(ModelConfig(layers=[{"fc": 4}, "relu", {"fc": 2}]), (3,), 2)
    with pytest.raises(ConfigError, match=r"activity.layer='relu_1' is not known. Did you mean 'relu1'\?"):
        Penalty(built.model, RegularizationConfig(activity=[ActivityConfig(layer="relu_1", l1=0.5)]))
