"""The classification metrics of every validation (dltool/train/metrics.py) against scikit-learn's own functions."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
import torch

from dltool.train.metrics import classification, split_metrics


def sklearn_four(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    c = p.shape[1]
    pred = p.argmax(axis=1)
    out = {"acc": skm.accuracy_score(y, pred),
           "macro_f1": skm.f1_score(y, pred, labels=range(c), average="macro", zero_division=0),
           "balanced_acc": skm.balanced_accuracy_score(y, pred), "auroc": float("nan")}
    if len(np.unique(y)) == c:
        out["auroc"] = (skm.roc_auc_score(y, p[:, 1]) if c == 2 else
                        skm.roc_auc_score(y, p, multi_class="ovr", labels=range(c)))
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(z), dim=1).numpy()


CASES = [  # (seed, n, classes, logit scale, distinct rows: many equal scores, AUROC's ties; None: all distinct)
    (0, 270, 10, 3.0, None), (1, 50, 2, 1.0, None), (2, 40, 3, 2.0, 4), (3, 500, 5, 0.5, 20), (4, 7, 3, 1.0, None),
    (5, 1000, 10, 8.0, 50), (6, 30, 4, 1.0, 2),
]


@pytest.mark.parametrize(("seed", "n", "c", "scale", "rows"), CASES)
def test_the_four_classification_metrics_are_scikit_learns(seed, n, c, scale, rows):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])  # every class among the targets
    z = rng.normal(size=(n, c)) * scale
    z[np.arange(n), y] += scale * rng.random(n)  # better than chance, not perfect
    p = softmax(z.astype(np.float32))
    if rows is not None:  # each example's scores one of a few rows: ties within every column
        p = p[rng.integers(0, rows, n)]
    ours, theirs = classification(p, y), sklearn_four(p, y)
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k] == pytest.approx(theirs[k], abs=1e-12), k


def test_absent_and_never_predicted_classes_and_perfect_scores():
    y = np.array([0, 0, 1, 1, 1, 3, 3, 0, 1, 4])  # class 2 never occurs
    z = np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32)
    z[:, 3] -= 100  # class 3 is never predicted
    ours, theirs = classification(softmax(z), y), sklearn_four(softmax(z), y)
    assert np.isnan(ours["auroc"]) and np.isnan(theirs["auroc"])
    for k in ("acc", "macro_f1", "balanced_acc"):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-12), k
    y = np.arange(6) % 3
    perfect = classification(np.eye(3, dtype=np.float32)[y], y)
    assert perfect == {"acc": 1.0, "macro_f1": 1.0, "balanced_acc": 1.0, "auroc": 1.0}
    constant = classification(np.full((6, 3), 1 / 3, dtype=np.float32), y)  # every score tied
    assert constant["auroc"] == 0.5 == skm.roc_auc_score(y, np.full((6, 3), 1 / 3), multi_class="ovr")


def test_split_metrics_of_logits_and_of_one_logistic_output():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(60) % 2
    one = torch.randn(60, 1, generator=g) + y[:, None]  # one logistic output for two classes
    m = split_metrics("classification", one, y)
    p1 = torch.sigmoid(one[:, 0]).numpy()
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, (one[:, 0] > 0).long(), average="macro"), abs=1e-12)
    logits = torch.randn(60, 4, generator=g)
    y4 = torch.arange(60) % 4
    m4 = split_metrics("classification", logits, y4)
    ref = sklearn_four(torch.softmax(logits, 1).numpy(), y4.numpy())
    assert m4 == pytest.approx(ref, abs=1e-12)
