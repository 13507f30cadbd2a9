"""Optimizers and schedules: every entry steps; schedule values; decay only on weights."""

import math

import pytest
import torch

from dltool.catalog import OPTIMIZERS, SCHEDULERS
from dltool.config.schema import ModelConfig, OptimizerConfig, SchedulerConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.train.optim import build_optimizer, build_scheduler, param_groups


def tiny():
    return build_model(ModelConfig(layers=[{"fc": 8}, "batchnorm", "relu", {"fc": 3}]), (4,), 3).model


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_reduces_a_simple_loss(name):
    torch.manual_seed(0)
    model = tiny()
    opt = build_optimizer(model, OptimizerConfig(name=name, lr=0.05 if name != "sgd" else 0.5, momentum=0.0))
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first * 0.8


def lrs(name, epochs=10, **kw):
    model = tiny()
    opt = build_optimizer(model, OptimizerConfig(name="sgd", lr=1.0))
    sched, interval = build_scheduler(opt, SchedulerConfig(name=name, **kw), epochs, 5, "min", 1.0)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # (no gradients: a no-op, but keeps torch's step-order check quiet)
        if interval == "epoch":
            sched.step()
        elif interval == "plateau":
            sched.step(1.0)  # never improves
        else:
            for _ in range(5):
                opt.step()
                sched.step()
    return out


# options that make each schedule change the lr within 10 epochs (a new scheduler must be added here)
CHANGING = {"none": {}, "step": {"step_size": 3}, "multistep": {"milestones": [2, 5]}, "exponential": {"gamma": 0.9},
            "cosine": {}, "plateau": {"patience": 1}, "onecycle": {}}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_builds_and_steps(name):
    assert name in CHANGING, f"add scheduler {name!r} to CHANGING with options under which it changes the lr"
    values = lrs(name, **CHANGING[name])
    assert all(math.isfinite(v) and v > 0 for v in values)
    if name == "none":
        assert values == [1.0] * 10
    else:  # the schedule moved the lr and ends below its peak
        assert len(set(values)) > 1 and values[-1] < max(values), values


def test_schedule_values():
    assert lrs("step", step_size=3, gamma=0.5)[:7] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert lrs("multistep", milestones=[2, 5], gamma=0.1)[:6] == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01])
    assert lrs("exponential", gamma=0.9)[:3] == pytest.approx([1, 0.9, 0.81])
    cos = lrs("cosine", epochs=4)
    assert cos == pytest.approx([1, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])
    warm = lrs("cosine", epochs=6, warmup_epochs=2, warmup_start_factor=0.1)
    assert warm[:3] == pytest.approx([0.1, 0.55, 1.0])
    plateau = lrs("plateau", patience=1, factor=0.5)
    assert plateau[0] == 1 and plateau[-1] < 0.1
    one = lrs("onecycle", max_lr=2.0)
    assert max(one) > 1.0 and one[-1] < one[len(one) // 2]


def test_weight_decay_spares_biases_and_norm_params():
    groups = param_groups(tiny(), 0.1, False)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert sorted(p.dim() for p in decayed) == [2, 2]  # the two weight matrices only


def test_bad_optimizer_settings_are_refused():
    with pytest.raises(ConfigError, match="optimizer.name='adm' is not known. Did you mean 'adam'"):
        build_optimizer(tiny(), OptimizerConfig(name="adm"))
    with pytest.raises(ConfigError, match="nesterov"):
        build_optimizer(tiny(), OptimizerConfig(name="sgd", momentum=0.0, nesterov=True))
