"""Model builder: shape inference, names, blocks, the errors a bad spec gets, and summary counts."""

import pytest
import torch

from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.models.summary import as_text, totals


def model(layers, shape, classes=10, **kw):
    return build_model(ModelConfig(layers=layers, **kw), shape, classes)


def test_conv_5x5_pad2_on_32x32x3_has_760_params_and_keeps_size():
    built = model([{"conv": {"filters": 10, "kernel": 5, "stride": 1, "padding": 2}}, "flatten",
                   {"fc": {"units": 10}}], (3, 32, 32))
    conv = built.trace[0]
    assert conv.out_shape == (10, 32, 32)
    assert conv.params == (5 * 5 * 3 + 1) * 10 == 760
    assert conv.macs == 32 * 32 * 10 * 5 * 5 * 3


def test_mlp_3_4_2_has_26_parameters():
    built = model([{"fc": 4}, "relu", {"fc": 2}], (3,), classes=2)
    assert totals(built)["params"] == 26 == sum(p.numel() for p in built.model.parameters())


def test_default_cnn_summary_agrees_with_torch(cfg_factory):
    cfg = cfg_factory()
    built = build_model(cfg.model, (1, 8, 8), 10)
    n = sum(p.numel() for p in built.model.parameters())
    assert totals(built)["params"] == n
    assert f"{n:,}" in as_text(built)


def test_names_count_per_kind():
    built = model([{"conv": 4}, "relu", {"conv": 4}, "relu", "pool", "flatten", {"fc": 10}], (1, 8, 8))
    assert [r.name for r in built.trace] == ["conv1", "relu1", "conv2", "relu2", "pool1", "flatten1", "fc1"]


def test_repeat_unrolls_with_continuing_names():
    built = model([{"repeat": {"n": 3, "layers": [{"conv": {"filters": 4, "padding": 1}}, "relu"]}},
                   "flatten", {"fc": 10}], (1, 6, 6))
    assert [r.name for r in built.trace][:6] == ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3"]


def test_residual_identity_and_projection():
    same = model([{"residual": [{"conv": {"filters": 2, "padding": 1}}, "relu"]}, "flatten", {"fc": 10}], (2, 4, 4))
    assert isinstance(same.model.layers.res1.shortcut, torch.nn.Identity)
    proj = model([{"residual": {"layers": [{"conv": {"filters": 8, "kernel": 3, "stride": 2, "padding": "same"}}]}},
                  "flatten", {"fc": 10}], (4, 8, 8))
    sc = proj.model.layers.res1.shortcut
    assert isinstance(sc, torch.nn.Conv2d) and sc.stride == (2, 2) and sc.out_channels == 8
    x = torch.randn(2, 4, 8, 8)
    block = proj.model.layers.res1
    assert torch.allclose(block(x), block.body(x) + sc(x))


def test_residual_that_cannot_be_projected_names_the_block():
    with pytest.raises(ConfigError, match=r"residual block res1.*3x3"):
        model([{"residual": [{"conv": {"filters": 2, "kernel": 2}}]}, "flatten", {"fc": 10}], (2, 4, 4))


def test_kernel_larger_than_input_fails_with_index_and_shape():
    with pytest.raises(ConfigError, match=r"layer 4 \(conv2: conv, input 4x2x2\).*smaller than the kernel"):
        model([{"conv": 4}, "relu", {"pool": {"kernel": 3, "stride": 3}}, {"conv": {"filters": 4, "kernel": 3}},
               "flatten", {"fc": 10}], (1, 8, 8))


def test_non_integer_output_size_shows_the_arithmetic():
    with pytest.raises(ConfigError, match=r"\(10 - 3 \+ 2\*0\)/2 \+ 1 = 4.5 is not a whole number"):
        model([{"conv": {"filters": 2, "kernel": 3, "stride": 2}}, "flatten", {"fc": 10}], (1, 10, 10))
    relaxed = model([{"conv": {"filters": 2, "kernel": 3, "stride": 2}}, "flatten", {"fc": 10}], (1, 10, 10),
                    strict_shapes=False)
    assert relaxed.trace[0].out_shape == (2, 4, 4)


def test_overlapping_pool_arithmetic_is_accepted():
    built = model([{"pool": {"kernel": 3, "stride": 2}}, "flatten", {"fc": 10}], (1, 13, 13))
    assert built.trace[0].out_shape == (1, 6, 6)


@pytest.mark.parametrize("layers, pattern", [
    ([{"cnv": 3}], r"layer='cnv' is not known. Did you mean 'conv'"),
    ([{"conv": {"filter": 3}}, "flatten", {"fc": 10}], r"unknown option 'filter'. Did you mean 'filters'"),
    ([{"fc": 10}], r"put a `flatten`"),
    (["flatten", "softmax", {"fc": 10}], r"softmax is only allowed as the final layer"),
    (["flatten", {"fc": 7}], r"outputs 7 values per example but the data has 10 classes"),
    (["flatten", {"dropout": 1.5}, {"fc": 10}], r"p=1.5"),
    ([], r"model.layers is empty"),
    ([{"conv": {"filters": "abc"}}, "flatten", {"fc": 10}], r"layer 1 \(conv1: conv.*wrong kind.*filters='abc'"),
    ([{"conv": {"filters": 4, "kernel": [1, 2, 3]}}, "flatten", {"fc": 10}], r"expected one number or two"),
])
def test_bad_specs_get_one_sentence(layers, pattern):
    with pytest.raises(ConfigError, match=pattern):
        model(layers, (1, 8, 8))


def test_softmax_as_last_layer_is_identity_for_the_loss():
    built = model(["flatten", {"fc": 10}, "softmax"], (1, 2, 2))
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(built.model(x), built.model.layers.fc1(x.flatten(1)))
