"""Preprocessing: mean subtraction, standardization, PCA/ZCA whitening, all from the training split only,
stored as plain data in the checkpoint and reproducible from it."""

from __future__ import annotations

import json

import pytest
import torch

from dltool.catalog import DATASETS
from dltool.config.schema import DataConfig
from dltool.data.build import build_data
from dltool.data.normalize import apply_norm, fit_norm
from dltool.data.splits import make_splits
from dltool.errors import ConfigError
from tests.conftest import run_cli


def raw_splits(**kw):
    c = DataConfig(name="digits", **kw)
    return make_splits(DATASETS["digits"](c), c)


def test_mean_and_standardize_use_train_stats_only():
    s = raw_splits()
    xtr = s["train"][0]
    for kind in ("mean", "standardize"):
        norm = fit_norm(xtr, kind, "image")
        assert torch.allclose(norm["mean"], xtr.mean(dim=(0, 2, 3)))
        out = apply_norm(xtr, norm)
        assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(1), atol=1e-5)
        expected_std = xtr.std(dim=(0, 2, 3)) if kind == "standardize" else torch.ones(1)
        assert torch.allclose(norm["std"], expected_std)
    test_mean = apply_norm(s["test"][0], fit_norm(xtr, "mean", "image")).mean()
    assert test_mean.abs() > 1e-4  # the test split is shifted by the train mean, not its own


def test_sequence_stats_are_per_feature():
    c = DataConfig(name="digits_rows")
    s = make_splits(DATASETS["digits_rows"](c), c)
    norm = fit_norm(s["train"][0], "standardize", "sequence")
    assert norm["mean"].shape == (8,)
    out = apply_norm(s["train"][0], norm)  # (N, T, F)
    assert torch.allclose(out.mean(dim=(0, 1)), torch.zeros(8), atol=1e-5)


@pytest.mark.parametrize("kind", ["pca", "zca"])
def test_whitening_decorrelates_the_training_split(kind):
    d = build_data(DataConfig(name="digits", normalize=kind, whiten_eps=1e-5))
    x = d.train.x.flatten(1)  # (N, D)
    cov = torch.cov(x.T)
    evals = torch.linalg.eigvalsh(cov)  # whitening: every direction has variance lambda/(lambda+eps) <= 1
    assert evals.max() < 1.01 and (evals > 0.95).sum() >= 40
    raw = torch.linalg.eigvalsh(torch.cov(raw_splits()["train"][0].flatten(1).T))
    assert raw.max() > 10 * raw[raw > 1e-6].min()  # ... while the raw pixels were far from white
    if kind == "pca":  # components are uncorrelated
        assert (cov - torch.diag(cov.diagonal())).abs().max() < 1e-3
    assert d.input_shape == ((64,) if kind == "pca" else (1, 8, 8))
    assert d.layout == ("features" if kind == "pca" else "image")


def test_pca_components_and_limits():
    d = build_data(DataConfig(name="digits", normalize="pca", pca_components=10))
    assert d.input_shape == (10,)
    var = d.train.x.var(dim=0)
    assert (var > 0.5).all()  # each kept component has about unit variance
    with pytest.raises(ConfigError, match="data.pca_components=100 must be between 1 and the input size 64"):
        build_data(DataConfig(name="digits", normalize="pca", pca_components=100))
    with pytest.raises(ConfigError, match="data.normalize='whiten' is not known"):
        build_data(DataConfig(name="digits", normalize="whiten"))


@pytest.mark.slow
def test_checkpoint_carries_the_statistics(tmp_path):
    """A run's best.pt holds the train-split statistics; applied to raw test data they give the test inputs."""
    r = run_cli("train", "-m", "data.normalize=standardize,zca", "model=mlp", "trainer.epochs=1",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = raw_splits()
    for i, kind in enumerate(("standardize", "zca")):
        assert "failed" not in json.loads((tmp_path / "sweep" / str(i) / "summary.json").read_text())
        ck = torch.load(tmp_path / "sweep" / str(i) / "checkpoints" / "best.pt", weights_only=True)
        assert ck["norm"]["kind"] == kind
        expected = build_data(DataConfig(name="digits", normalize=kind)).test.x
        assert torch.allclose(apply_norm(s["test"][0], ck["norm"]), expected, atol=1e-5)
