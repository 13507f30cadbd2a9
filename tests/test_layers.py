"""Every layer in the vocabulary builds, infers its shape, runs forward/backward; bad specs fail clearly."""

import pytest
import torch

from dltool.catalog import LAYERS
from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model

# Input shapes (no batch axis) to try for a layer, in order: images, vectors, signals, sequences, volumes.
CANDIDATE_SHAPES = [(4, 8, 8), (12,), (4, 16), (6, 4), (2, 4, 6, 6)]
REQUIRED_SAMPLES = {"filters": 6, "units": 5, "hidden": 4}  # values for options that have no default


def sample_params(kind: str) -> dict:
    return {k: REQUIRED_SAMPLES[k] for k, v in LAYERS[kind].defaults.items() if v is None and k in REQUIRED_SAMPLES}


def build_single(kind: str, shape: tuple) -> tuple:
    """A model of just this layer (+ flatten and fc head so the output is class scores)."""
    params = sample_params(kind)
    layer = {kind: params} if params else kind
    layers = [layer, "flatten", {"fc": {"units": 3}}] if kind != "softmax" else ["flatten", {"fc": {"units": 3}}, kind]
    return build_model(ModelConfig(layers=layers), shape, 3)


def first_buildable(kind: str):
    errors = []
    for shape in CANDIDATE_SHAPES:
        try:
            return build_single(kind, shape), shape
        except ConfigError as ex:
            errors.append(str(ex))
    pytest.fail(f"{kind} builds on none of {CANDIDATE_SHAPES}: {errors}")


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_layer_builds_runs_and_backprops(kind):
    built, shape = first_buildable(kind)
    x = torch.randn(4, *shape)
    out = built.model(x)
    assert out.shape == (4, 3)
    out.sum().backward()
    grads = [p.grad for p in built.model.parameters()]
    assert all(g is not None for g in grads)
    # the trace's output shapes match what torch produced, layer by layer
    assert built.trace[-1].out_shape == (3,)
    assert sum(r.params for r in built.trace) == sum(p.numel() for p in built.model.parameters())


def test_aliases_build_the_same_layer():
    for alias in ("dense", "linear", "inner_product"):
        built = build_model(ModelConfig(layers=[{alias: {"units": 3}}]), (4,), 3)
        assert isinstance(built.model.layers.fc1, torch.nn.Linear)


def test_conv_same_padding_keeps_size_and_strided_same_rounds_up():
    built = build_model(ModelConfig(layers=[{"conv": {"filters": 2, "kernel": 3, "padding": "same"}},
                                            {"conv": {"filters": 2, "kernel": 3, "stride": 2, "padding": "same"}},
                                            "flatten", {"fc": 3}]), (1, 9, 9), 3)
    assert [r.out_shape for r in built.trace[:2]] == [(2, 9, 9), (2, 5, 5)]


def test_batchnorm_dimension_follows_input():
    img = build_model(ModelConfig(layers=["batchnorm", "flatten", {"fc": 3}]), (4, 5, 5), 3)
    vec = build_model(ModelConfig(layers=["batchnorm", {"fc": 3}]), (4,), 3)
    assert isinstance(img.model.layers.bn1, torch.nn.BatchNorm2d)
    assert isinstance(vec.model.layers.bn1, torch.nn.BatchNorm1d)


def test_maxout_takes_max_of_pieces():
    built = build_model(ModelConfig(layers=[{"maxout": {"pieces": 2}}, {"fc": 3}]), (6,), 3)
    m = built.model.layers.maxout1
    x = torch.tensor([[1.0, 5.0, -2.0, -3.0, 0.0, 0.5]])
    assert m(x).tolist() == [[5.0, -2.0, 0.5]]
