"""MixUp and CutMix (augment.mixup_alpha, augment.cutmix_alpha): the mixing against its definition, the soft
targets, training accuracy against the mixed targets, and the refusals where mixing does not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dltool.data.mixing import attach
from dltool.errors import ConfigError
from dltool.tasks import check_mixing
from dltool.train.metrics import correct


def batch(n: int = 8, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 6, 6, generator=g), torch.arange(n) % c


@pytest.mark.parametrize("shape", [(8, 3, 6, 6), (8, 7)])  # an image batch, and feature vectors
def test_mixup_is_lam_x_i_plus_one_minus_lam_x_j_with_the_same_lam_on_the_targets(shape):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    torch.manual_seed(5)
    mixed, soft = attach(5, 0.4, 0.0)(x, y)
    torch.manual_seed(5)  # the same draw, by hand: lam ~ Beta(alpha, alpha)
    lam = float(torch.distributions.Beta(torch.tensor([0.4]), torch.tensor([0.4])).sample(()))
    assert 0 < lam < 1
    j = torch.roll(torch.arange(8), 1)  # torchvision pairs each example with its neighbour in the batch
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[j], atol=1e-6)
    assert torch.allclose(soft, lam * F.one_hot(y, 5).float() + (1 - lam) * F.one_hot(y[j], 5).float(), atol=1e-6)
    assert mixed.shape == x.shape and soft.shape == (8, 5)


def test_cutmix_pastes_a_box_of_the_neighbour_and_mixes_targets_by_its_area():
    x, y = batch()
    torch.manual_seed(3)
    mixed, soft = attach(5, 0.0, 1.0)(x, y)
    j = torch.roll(torch.arange(8), 1)
    kept = (mixed == x).all(dim=1)  # (N, H, W): pixels still from x_i (continuous values: no accidental ties)
    pasted = (mixed == x[j]).all(dim=1)
    assert bool((kept | pasted).all()) and 0 < int(pasted.sum()) < pasted.numel()
    lam = kept[0].float().mean()  # one box for the whole batch: the same area everywhere
    assert torch.equal(kept, kept[:1].expand_as(kept))
    assert torch.allclose(soft, lam * F.one_hot(y, 5).float() + (1 - lam) * F.one_hot(y[j], 5).float(), atol=1e-6)


def test_training_accuracy_is_the_mixed_targets_share_of_the_predicted_class():
    y, j, lam = torch.tensor([0, 1, 2, 1]), torch.tensor([3, 0, 1, 2]), 0.7
    yj = y[j]
    soft = lam * F.one_hot(y, 3).float() + (1 - lam) * F.one_hot(yj, 3).float()
    logits = torch.tensor([[5.0, 0, 0], [0, 0, 5.0], [5.0, 0, 0], [0, 0, 5.0]])  # predicts 0, 2, 0, 2
    pred = logits.argmax(1)
    hand = sum(lam * float(p == a) + (1 - lam) * float(p == b) for p, a, b in zip(pred, y, yj))
    assert float(correct("classification", logits, soft)) == pytest.approx(hand)
    assert hand == pytest.approx(lam + (1 - lam))  # row 0 hits its first label, row 3 its second, rows 1-2 neither


@pytest.mark.parametrize("args,words", [
    (("regression", "mse", (10,), 0.2, 0.0), "needs task=classification"),
    (("multilabel", "bce", (10,), 0.2, 0.0), "mixed label sets"),
    (("classification", "hinge", (1, 8, 8), 0.2, 0.0), "loss.name=hinge cannot read"),
    (("classification", "cross_entropy", (30,), 0.0, 1.0), "not C x H x W"),
    (("classification", "cross_entropy", (1, 8, 8), -0.2, 0.0), "augment.mixup_alpha=-0.2 is not valid"),
])
def test_mixing_is_refused_in_one_sentence_where_it_does_not_apply(args, words):
    with pytest.raises(ConfigError, match=words):
        check_mixing(*args)
    check_mixing("classification", "cross_entropy", (1, 8, 8), 0.2, 1.0)  # the valid case passes
