"""`dltool gradcheck`: every layer type passes; a layer with a wrong backward fails and is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dltool.catalog import LAYERS
from dltool.commands.gradcheck import GradcheckOptions, check_model
from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.train.losses import build_loss
from tests.conftest import make_config, run_cli

# One small input per input kind a layer may take: image CxHxW, feature vector, 2-D (sequence TxF / signal CxL),
# volume CxTxHxW,
# each with a shape-keeping layer with weights in front, so the gradient must pass back through the layer tested.
SHAPES = {(2, 6, 6): {"conv": {"filters": 2, "kernel": 1}}, (6,): {"fc": 6}, (5, 4): {"fc": 4},
          (2, 3, 4, 4): {"conv3d": {"filters": 2, "kernel": 1}}}
# Hand-written specs for layers whose defaults alone cannot build a model (e.g. nested layer lists).
# A layer type may also carry its own `example` (a layer item) in dltool.catalog.LAYERS.
EXAMPLES: dict[str, list] = {}


def layer_item(kind: str) -> object:
    """`kind` with small values for its required options (those whose default is None)."""
    entry = LAYERS[kind]
    example = getattr(entry, "example", None)
    if example is not None:
        return example
    required = {k: 4 for k, v in entry.defaults.items() if v is None}
    return {kind: required} if required else kind


def candidate_specs(kind: str) -> list[tuple[tuple[int, ...], list]]:
    """The layer inside a tiny classifier: before flatten+fc, or after them (for final-only layers)."""
    if kind in EXAMPLES:
        return [(shape, EXAMPLES[kind]) for shape in SHAPES]
    item = layer_item(kind)
    return [(shape, spec) for shape, pre in SHAPES.items()
            for spec in ([pre, item, "flatten", {"fc": 3}], [pre, "flatten", {"fc": 3}, item])]


def tiny_model(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    errors = []
    for shape, spec in candidate_specs(kind):
        try:
            return build_model(ModelConfig(layers=spec), shape, 3).model, shape
        except ConfigError as ex:
            errors.append(f"{spec} on {shape}: {ex}")
    pytest.fail(f"no test model builds for layer {kind!r}; add a spec to EXAMPLES in {__file__}:\n" + "\n".join(errors))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_layer_type_passes(kind: str) -> None:
    torch.manual_seed(0)
    model, shape = tiny_model(kind)
    x, y = torch.randn(4, *shape), torch.tensor([0, 1, 2, 1])
    results = check_model(model, build_loss(make_config().loss), x, y, GradcheckOptions(max_elements=12))
    assert len(results) >= 4, f"{kind}: expected the weights before and after the layer to be checked"
    failed = [(r.name, r.max_rel_error) for r in results if not r.passed]
    assert not failed, f"{kind}: {failed}"
    assert all(r.checked + r.kinks == min(12, torch.Size(r.shape).numel()) for r in results)
    assert sum(r.checked for r in results) > 0


class WrongBackward(torch.autograd.Function):
    """y = 2x, but the backward pass returns 2.001 * grad: a typical small analytic-gradient bug."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return 2.001 * g


class Buggy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return WrongBackward.apply(x)


def test_a_wrong_backward_is_caught() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), Buggy(), nn.Linear(5, 3))
    results = check_model(model, nn.CrossEntropyLoss(), torch.randn(4, 6), torch.tensor([0, 1, 2, 0]),
                          GradcheckOptions())
    status = {r.name: r.passed for r in results}
    assert status == {"0.weight": False, "0.bias": False, "3.weight": True, "3.bias": True}
    assert min(r.max_rel_error for r in results if not r.passed) > 1e-4


@pytest.mark.parametrize("overrides", [("model=mlp", "loss=hinge", "regularization=l2", "regularization.l1=1e-3"),
                                       ("loss=squared_hinge",), ("model=mlp", "loss=bce"), ("loss=mse",)])
def test_losses_and_penalties_pass(overrides: tuple[str, ...]) -> None:
    from dltool.commands.gradcheck import build_for_check

    cfg = make_config(*overrides)
    opts = GradcheckOptions(max_elements=8)
    model, x, y, (penalty, _) = build_for_check(cfg, opts)
    assert (penalty is not None) == ("regularization=l2" in overrides)
    results = check_model(model, build_loss(cfg.loss), x, y, opts, lambda m: penalty)
    assert all(r.passed for r in results), [(r.name, r.max_rel_error) for r in results]


def test_command_in_process_reports_every_tensor(cli) -> None:
    proc = cli("gradcheck", "model=mlp", "gradcheck.max_elements=4", "gradcheck.examples=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "fc1.weight" in proc.stdout and "fc3.bias" in proc.stdout


@pytest.mark.slow
def test_cli_default_config_passes(tmp_path: Path) -> None:
    proc = run_cli("gradcheck", "gradcheck.max_elements=10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "conv1.weight" in proc.stdout and "fc2.bias" in proc.stdout
    assert "float64" in proc.stdout and "h=1e-05" in proc.stdout
