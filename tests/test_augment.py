"""Augmentation: every op on batches (shape, dtype, range, change, seeding), the v2 path, the wiring."""

from __future__ import annotations

import pytest
import torch

from dltool.catalog import AUGMENTATIONS as OPS
from dltool.config.schema import DataConfig
from dltool.data.augment import build_batched, build_v2, parse
from dltool.data.build import build_data
from dltool.errors import ConfigError
from tests.conftest import make_config

ALWAYS = {"vflip": {"p": 1.0}, "hflip": {"p": 1.0}, "invert": {"p": 1.0}, "blur": {"p": 1.0},
          "erase": {"p": 1.0, "scale": [0.1, 0.3]}, "rotate": {"degrees": 30}, "affine": {"scale": [0.7, 0.8]}}


def images(n: int = 16, c: int = 3, h: int = 12, w: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, c, h, w, generator=g)  # (N, C, H, W) in [0, 1]


@pytest.mark.parametrize("name", list(OPS))
def test_op_keeps_shape_dtype_range_and_changes_images(name):
    aug = build_batched([{name: ALWAYS.get(name, {})}], {"kind": "none"}, "image")
    x = images()
    out = aug(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    changed = (out - x).abs().flatten(1).amax(1) > 1e-4  # (N,) which examples changed
    assert changed.float().mean() > 0.5, f"{name} changed only {changed.sum()} of {len(x)} images"


@pytest.mark.parametrize("name", list(OPS))
def test_same_seed_same_batch_other_seed_other_batch(name):
    aug = build_batched([{name: ALWAYS.get(name, {})}], {"kind": "none"}, "image")
    x = images()
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    if name not in ("hflip", "vflip", "invert"):  # deterministic given p=1
        assert not torch.equal(a, aug(x, torch.Generator().manual_seed(8)))


def test_probability_zero_is_identity_and_half_touches_about_half():
    x = images(400, 1, 6, 6)
    assert torch.equal(build_batched([{"hflip": {"p": 0.0}}], {"kind": "none"}, "image")(
        x, torch.Generator().manual_seed(0)), x)
    out = build_batched([{"invert": {"p": 0.5}}], {"kind": "none"}, "image")(x, torch.Generator().manual_seed(0))
    share = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.4 < share < 0.6


def test_translate_shifts_by_whole_pixels():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    out = build_batched([{"translate": {"pad": 2}}], {"kind": "none"}, "image")(x, torch.Generator().manual_seed(0))
    pos = out.flatten(1).argmax(1)
    dy, dx = pos // 9 - 4, pos % 9 - 4
    assert out.flatten(1).sum(1).eq(1).all()  # the pixel moved, not blurred
    assert dy.abs().max() == 2 and dx.abs().max() == 2 and len(set(zip(dy.tolist(), dx.tolist()))) > 10


def test_standardized_batches_are_augmented_in_pixel_space():
    """invert on normalized inputs must mean 1 - pixel, then normalized again."""
    data = build_data(DataConfig(name="digits"))
    aug = build_batched(["invert"], data.norm, "image")
    x = data.train.x[:32]
    out = aug(x, torch.Generator().manual_seed(0))
    mean, std = data.norm["mean"].view(1, -1, 1, 1), data.norm["std"].view(1, -1, 1, 1)
    pixels, flipped = x * std + mean, out * std + mean
    touched = (out != x).flatten(1).any(1)
    assert touched.any()
    assert torch.allclose(flipped[touched], 1 - pixels[touched], atol=1e-5)


def test_zca_round_trip_and_pca_refused():
    data = build_data(DataConfig(name="digits", normalize="zca"))
    aug = build_batched([{"noise": {"std": 0.0}}], data.norm, "image")  # identity in pixel space
    x = data.train.x[:16]
    assert torch.allclose(aug(x, torch.Generator().manual_seed(0)), x, atol=1e-3)
    with pytest.raises(ConfigError, match="normalize=pca"):
        build_batched(["noise"], {"kind": "pca"}, "features")


@pytest.mark.parametrize("ops,match", [
    (["hflp"], "Did you mean 'hflip'"),
    ([{"hflip": {"prob": 0.5}}], "unknown option 'prob'"),
    ([{"hflip": {"p": 2}}], "p=2 must be a probability"),
    ([{"hflip": {}, "invert": {}}], "must be an op name"),
])
def test_bad_ops_are_one_sentence(ops, match):
    with pytest.raises(ConfigError, match=match):
        parse(ops)


def test_image_ops_refused_on_sequences_but_noise_works():
    with pytest.raises(ConfigError, match="needs image data"):
        parse(["hflip"], "sequence")
    aug = build_batched(["noise"], {"kind": "none"}, "sequence")
    x = torch.rand(4, 8, 8)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)


@pytest.mark.parametrize("name", list(OPS))
def test_v2_pipeline_per_image(name):
    t = build_v2([{name: ALWAYS.get(name, {})}])
    torch.manual_seed(0)
    x = images(1)[0]
    outs = [t(x) for _ in range(4)]
    assert all(o.shape == x.shape and o.dtype == x.dtype for o in outs)
    assert all(o.min() >= -1e-6 and o.max() <= 1 + 1e-6 for o in outs)
    assert any(not torch.allclose(o, x) for o in outs)


def test_prepare_wires_augment_to_training_only():
    from dltool.train.loop import evaluate
    from dltool.train.run import prepare

    cfg = make_config("augment=digits", "trainer.device=cpu", "trainer.epochs=1")
    p = prepare(cfg)
    assert p.setup.augment is not None
    val_before = p.data.val.x.clone()
    seen = []
    original = p.setup.augment
    p.setup.augment = lambda x, g: seen.append(x.shape[0]) or original(x, g)
    from dltool.train.loop import make_scaler, train_one_epoch

    g = torch.Generator().manual_seed(0)
    train_one_epoch(p.setup, p.data.train.batches(64, g), p.data.train.num_batches(64), g, make_scaler(p.setup))
    evaluate(p.setup.model, p.setup.loss_fn, p.data.val, 64, p.device)
    assert sum(seen) == len(p.data.train)  # every training example went through augmentation once
    assert torch.equal(p.data.val.x, val_before)  # validation data untouched
    assert prepare(make_config("trainer.device=cpu")).setup.augment is None  # augment=none
