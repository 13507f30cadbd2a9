"""Settings that run but mislead, caught before training (issue 21): a recurrent layer over one time step, bf16
autocast on a CPU without bf16 instructions. The refusals with exit 2 live in test_bad_inputs.py."""

from __future__ import annotations

import logging

import pytest
import torch

from dltool.config.schema import ModelConfig
from dltool.errors import ConfigError
from dltool.models.builder import build_model
from dltool.train.infer import cpu_has_bf16, resolve_precision


def test_a_recurrent_layer_on_one_time_step_is_refused():
    """(1, L) is one channel of L samples (a channels-first signal): a GRU would run a single step of L features."""
    layers = [{"gru": {"hidden": 8}}, {"fc": "num_classes"}]
    with pytest.raises(ConfigError, match=r"1x50 is 1 time step of 50 features"):
        build_model(ModelConfig(layers=layers), (1, 50), 3)
    assert build_model(ModelConfig(layers=layers), (50, 1), 3).trace[0].out_shape == (8,)


def test_bf16_flags_are_read_from_cpuinfo():
    assert cpu_has_bf16("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n") is False
    assert cpu_has_bf16("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n") is True
    assert cpu_has_bf16("Features\t: fp asimd bf16 i8mm\n") is True  # Arm
    assert cpu_has_bf16("") is None


def test_bf16_on_the_cpu_warns_only_without_bf16_instructions(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    warned = "emulates bf16 and runs several times slower" in caplog.text
    assert warned == (not cpu_has_bf16())  # this machine's own flags decide
