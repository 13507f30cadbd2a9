"""`dltool summary`'s mult-adds and parameters against torchvision's published figures; activation memory.

Models are built as `dltool summary` builds them: on the `meta` device (no weights downloaded, nothing computed),
at the crop size of the weight set whose figures are compared. scripts/summary_vs_torchvision.py runs the same
comparison over torchvision's whole classification registry.
"""

from __future__ import annotations

import pytest
import torch
from torchvision import models

from dltool.config.schema import ModelConfig
from dltool.models.builder import build_model
from dltool.models.summary import totals
from dltool.models.trace import count_macs


def built(name: str, size: int, device: str = "meta"):
    return build_model(ModelConfig(name=name, backbone=name, small_input=False), (3, size, size), 1000, device=device)


@pytest.mark.parametrize("name, weights", [
    ("resnet18", "IMAGENET1K_V1"), ("vit_b_16", "IMAGENET1K_V1"), ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1"),
    pytest.param("swin_t", "IMAGENET1K_V1", marks=pytest.mark.slow),
    pytest.param("maxvit_t", "IMAGENET1K_V1", marks=pytest.mark.slow),
    ("mobilenet_v3_small", "IMAGENET1K_V1"),
])
def test_mult_adds_and_parameters_agree_with_torchvision(name, weights):
    """Within 2% of weights.meta["_ops"] (GFLOPS counted as multiply-adds), parameters exactly; vit_b_16's SWAG
    weights are at 384 px (built with image_size=384: a 24x24 patch grid)."""
    w = models.get_model_weights(name)[weights]
    size = w.transforms().crop_size[0]
    t = totals(built(name, size))
    assert t["params"] == w.meta["num_params"]
    assert t["macs"] / 1e9 == pytest.approx(w.meta["_ops"], rel=0.02)
    assert name != "vit_b_16" or size == {"IMAGENET1K_V1": 224, "IMAGENET1K_SWAG_E2E_V1": 384}[weights]


def test_vit_at_a_size_it_cannot_tile_is_one_sentence():
    from dltool.errors import ConfigError

    with pytest.raises(ConfigError, match="model.backbone=vit_b_16 cannot be built for 3x100x100"):
        built("vit_b_16", 100)


def test_activation_memory_counts_every_executed_module_output_once():
    """resnet18 at 224: every leaf module's output of one real forward pass (each call, ReLUs included), float32:
    29.9 MB; the container rows (layer1, ...) add nothing of their own."""
    b = built("resnet18", 224, device="cpu")
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel()))
             for m in b.model.modules() if not list(m.children())]
    with torch.no_grad():
        b.model.eval()(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert totals(b)["activation_bytes"] == 4 * sum(sizes) and round(4 * sum(sizes) / 1e6, 1) == 29.9


def test_recurrent_and_attention_ops_are_counted():
    """An LSTM by its gate formula (torch's counter sees 0 in the fused kernel); attention's matrix products too."""
    lstm = torch.nn.LSTM(8, 16, batch_first=True)
    _, macs = count_macs(lstm, torch.zeros(2, 5, 8))
    assert macs == 5 * 4 * 16 * (8 + 16)  # per example: T * gates * hidden * (inputs + hidden)
    class SelfAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    _, macs = count_macs(SelfAttention(), torch.zeros(1, 10, 32))
    proj = 4 * 10 * 32 * 32  # q, k, v and output projections
    products = 2 * 10 * 10 * 32  # q k^T and attention x v over the heads
    assert macs == proj + products
