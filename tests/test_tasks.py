"""Regression, binary, multi-label and imbalanced classification, end to end on real data, every number checked
against scikit-learn on the same split / the same saved predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.datasets import load_digits, make_multilabel_classification
from sklearn.linear_model import LinearRegression

from dltool.commands.evaluate import OPTIONS as EVAL_OPTIONS
from dltool.commands.evaluate import run_evaluate
from dltool.commands.predict import OPTIONS as PREDICT_OPTIONS
from dltool.commands.predict import run_predict
from dltool.data.build import build_data
from dltool.train import checkpoint
from dltool.train.run import train
from tests.conftest import make_config

QUIET = ("trainer.diagnostics=false", "trainer.loggers=[csv]", "trainer.progress=false")
LINEAR = ("experiment=diabetes_linear", "trainer.batch_size=300", "optimizer.lr=0.1", "trainer.epochs=80", *QUIET)


def original(y: torch.Tensor, target_norm: dict) -> np.ndarray:
    return (y * target_norm["std"] + target_norm["mean"]).numpy()


@pytest.fixture(scope="module")
def sklearn_r2() -> float:
    """scikit-learn's LinearRegression on dltool's own train split of diabetes, R² on its test split."""
    d = build_data(make_config("data=diabetes", "loss=mse").data)
    fit = LinearRegression().fit(d.train.x.numpy(), original(d.train.y, d.target_norm))
    return float(skm.r2_score(original(d.test.y, d.target_norm), fit.predict(d.test.x.numpy())))


def test_regression_targets_are_standardized_on_the_training_split_only():
    d = build_data(make_config("data=diabetes", "loss=mse").data)
    assert d.task == "regression" and d.num_classes == 1 and d.class_names == ["progression"]
    assert (len(d.train), len(d.val), len(d.test)) == (300, 53, 89)  # 442 rows: 20% test, 15% of the rest val
    raw = torch.tensor(__import__("sklearn.datasets", fromlist=["x"]).load_diabetes().target, dtype=torch.float32)
    train_raw = torch.from_numpy(original(d.train.y, d.target_norm))[:, 0]
    assert torch.allclose(d.target_norm["mean"], train_raw.mean(0, keepdim=True), atol=1e-3)
    assert abs(d.train.y.mean().item()) < 1e-5 and abs(d.train.y.std(unbiased=False).item() - 1) < 1e-4
    assert abs(d.target_norm["mean"].item() - raw.mean().item()) > 1e-3  # not the whole set's statistics


@pytest.fixture(scope="module")
def linear(tmp_path_factory) -> tuple[Path, dict]:
    """Linear regression on diabetes, trained once for the tests below (full batch, 80 Adam steps)."""
    run = tmp_path_factory.mktemp("linear") / "run"
    return run, train(make_config(*LINEAR), run)


def test_linear_regression_matches_scikit_learn(linear, sklearn_r2):
    tmp_path, summary = linear
    assert summary["task"] == "regression" and "test_acc" not in summary
    assert abs(summary["test_r2"] - sklearn_r2) < 0.05, (summary["test_r2"], sklearn_r2)
    pred = json.loads((tmp_path / "summary.json").read_text())
    assert pred["test_r2"] == pytest.approx(summary["test_r2"])
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert {"val_mae", "val_rmse", "val_r2"} <= set(rows[0]) and "train_acc" not in rows[0]


@pytest.mark.slow
def test_an_mlp_does_no_worse_than_linear_regression(tmp_path, sklearn_r2):
    summary = train(make_config("experiment=diabetes_mlp", *QUIET), tmp_path)
    assert summary["test_r2"] >= sklearn_r2 - 0.05, (summary["test_r2"], sklearn_r2)


def test_evaluate_and_predict_speak_original_units(linear, tmp_path):
    run, summary = linear
    res = run_evaluate(str(run), dict(EVAL_OPTIONS), {})
    assert res["metrics"]["r2"] == pytest.approx(summary["test_r2"], abs=1e-6)
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    true = np.array([float(r["actual_progression"]) for r in rows])
    pred = np.array([float(r["predicted_progression"]) for r in rows])
    assert res["metrics"]["mae"] == pytest.approx(skm.mean_absolute_error(true, pred), rel=1e-5)
    assert res["metrics"]["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(true, pred)), rel=1e-5)
    assert res["metrics"]["r2"] == pytest.approx(skm.r2_score(true, pred), abs=1e-5)
    assert 25 < true.mean() < 346 and (run / "pred_vs_actual.png").stat().st_size > 5000
    assert (run / "residuals.png").is_file()
    # predict: rows of a CSV with the data set's feature names, values in the targets' units
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(d.feature_names)
        w.writerows(d.data[:5].tolist())
    out = run_predict(str(run), [str(tmp_path / "rows.csv")], dict(PREDICT_OPTIONS))
    values = np.array(out["values"])[:, 0]
    assert out["task"] == "regression" and values.shape == (5,) and 25 < values.mean() < 346
    ck = checkpoint.load(run / "checkpoints" / "best.pt")
    assert ck["task"] == "regression" and set(ck["target_norm"]) == {"mean", "std"}


@pytest.mark.slow
def test_binary_screen_reaches_auroc_098(tmp_path):
    summary = train(make_config("experiment=breast_cancer_mlp", *QUIET), tmp_path)
    assert summary["task"] == "binary" and summary["test_auroc"] >= 0.98
    res = run_evaluate(str(tmp_path), dict(EVAL_OPTIONS), {})
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    t = np.array([int(float(r["true_malignant"])) for r in rows])
    p = np.array([float(r["prob_malignant"]) for r in rows])
    assert t.sum() == 42 and len(t) == 114  # stratified: 212/569 malignant kept in the test split
    assert res["metrics"]["auroc"] == pytest.approx(skm.roc_auc_score(t, p), abs=1e-6)
    assert res["metrics"]["recall"] == pytest.approx(skm.recall_score(t, p >= 0.5))
    assert res["metrics"]["ap"] == pytest.approx(skm.average_precision_score(t, p), abs=1e-6)
    tuned = run_evaluate(str(tmp_path), {**EVAL_OPTIONS, "threshold": "tune"}, {})
    assert 0 < tuned["threshold"] < 1 and tuned["threshold_source"].startswith("tuned on the validation split")
    assert tuned["metrics"]["recall"] == pytest.approx(skm.recall_score(t, p >= tuned["threshold"]))


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory) -> Path:
    """A multi-label run on scikit-learn's make_multilabel_classification (600 x 20, 5 labels), evaluated."""
    root = tmp_path_factory.mktemp("multilabel")
    x, y = make_multilabel_classification(n_samples=600, n_features=20, n_classes=5, n_labels=2, random_state=0)
    np.savez(root / "ml.npz", x=x.astype(np.float32), y=y)
    train(make_config("data=arrays", f"data.path={root / 'ml.npz'}", "data.task=multilabel", "model=mlp", "loss=bce",
                      "trainer.epochs=30", "optimizer.lr=0.003", "trainer.monitor=val_macro_f1", "trainer.mode=max",
                      *QUIET), root / "run")
    run_evaluate(str(root / "run"), dict(EVAL_OPTIONS), {})
    return root / "run"


@pytest.mark.slow
def test_multilabel_metrics_agree_with_scikit_learn_on_the_saved_predictions(multilabel):
    res = json.loads((multilabel / "eval.json").read_text())
    rows = list(csv.DictReader(open(multilabel / "predictions.csv")))
    names = res["class_names"]
    t = np.array([[int(float(r[f"true_{n}"])) for n in names] for r in rows])
    p = np.array([[float(r[f"prob_{n}"]) for n in names] for r in rows])
    q = (p >= 0.5).astype(int)
    m = res["metrics"]
    assert m["acc"] == pytest.approx(skm.accuracy_score(t, q))
    assert m["micro_f1"] == pytest.approx(skm.f1_score(t, q, average="micro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(t, q, average="macro"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(t, p, average="macro"), abs=1e-6)
    assert m["ap"] == pytest.approx(skm.average_precision_score(t, p, average="macro"), abs=1e-6)
    for k, row in enumerate(res["per_label"]):
        assert row["precision"] == pytest.approx(skm.precision_score(t[:, k], q[:, k], zero_division=0))
        assert row["recall"] == pytest.approx(skm.recall_score(t[:, k], q[:, k], zero_division=0))
        assert row["support"] == int(t[:, k].sum())
    assert m["macro_f1"] > 0.6  # it learned something: chance is far lower on 5 labels
    summary = json.loads((multilabel / "summary.json").read_text())
    assert summary["test_macro_f1"] == pytest.approx(m["macro_f1"], abs=1e-6)


@pytest.mark.slow
def test_multilabel_predict_lists_the_labels_over_the_threshold(multilabel, tmp_path):
    x, _ = make_multilabel_classification(n_samples=600, n_features=20, n_classes=5, n_labels=2, random_state=0)
    np.save(tmp_path / "x.npy", x[:3].astype(np.float32))
    out = run_predict(str(multilabel), [str(tmp_path / "x.npy")], dict(PREDICT_OPTIONS))
    assert out["task"] == "multilabel" and len(out["probabilities"]) == 3
    for probs, positive in zip(out["probabilities"], out["positive"]):
        assert positive == [n for n, v in zip(out["names"], probs) if v >= 0.5]


def test_csv_tags_and_several_target_columns(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    with open(tmp_path / "tags.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "tags", "t1", "t2"])
        for row in x:
            tags = [n for n, on in (("cat", row[0] > 0), ("dog", row[1] > 0)) if on] or ["bird"]
            w.writerow([*row, "|".join(tags), row[0] + row[1], row[2] * 2])
    d = build_data(make_config("data=csv", f"data.path={tmp_path / 'tags.csv'}", "data.label=tags",
                               "data.task=multilabel", "data.features=[a,b,c]", "loss=bce").data)
    assert d.class_names == ["bird", "cat", "dog"] and d.num_classes == 3
    xs = torch.cat([d.train.x, d.val.x, d.test.x])
    assert torch.all(torch.cat([d.train.y, d.val.y, d.test.y]).sum(1) >= 1) and xs.shape == (300, 3)
    r = build_data(make_config("data=csv", f"data.path={tmp_path / 'tags.csv'}", "data.label=[t1,t2]",
                               "data.task=regression", "data.features=[a,b,c]", "loss=mse").data)
    assert r.num_classes == 2 and r.class_names == ["t1", "t2"] and r.target_norm["mean"].shape == (2,)


def imbalanced_digits(path: Path) -> None:
    """Digits with class 3 downsampled to 1 in 20 (9 of 183 images): a 1:20 imbalance."""
    d = load_digits()
    keep = np.ones(len(d.target), bool)
    threes = np.flatnonzero(d.target == 3)
    keep[threes[9:]] = False
    np.savez(path, x=(d.images[keep, None] / 16.0).astype(np.float32), y=d.target[keep])


def recall_and_macro_f1(run: Path) -> tuple[float, float]:
    res = run_evaluate(str(run), {**EVAL_OPTIONS, "split": "train"}, {})
    cm = np.array(res["confusion_matrix"])
    return float(cm[3, 3] / cm[3].sum()), float(res["macro_f1"])


@pytest.mark.slow
def test_class_weights_and_the_balanced_sampler_help_the_rare_class(tmp_path):
    """On 1:20 imbalanced digits a linear softmax trained briefly mostly ignores the rare class; weighing it
    (loss.class_weights=balanced) or drawing it as often as the others (data.sampler=balanced) raises its recall
    and the macro-F1. Judged on the training split (the rare class has 6 training images, none may be in test)."""
    imbalanced_digits(tmp_path / "imb.npz")
    base = ("data=arrays", f"data.path={tmp_path / 'imb.npz'}", "model=linear", "optimizer=sgd",
            "optimizer.lr=0.01", "trainer.epochs=3", "scheduler=none", *QUIET)
    figures = {}
    for name, extra in (("plain", ()), ("weights", ("loss.class_weights=balanced",)),
                        ("sampler", ("data.sampler=balanced",))):
        train(make_config(*base, *extra), tmp_path / name)
        figures[name] = recall_and_macro_f1(tmp_path / name)
    (tmp_path / "figures.json").write_text(json.dumps(figures))
    for name in ("weights", "sampler"):
        assert figures[name][0] > figures["plain"][0], figures
        assert figures[name][1] > figures["plain"][1], figures


def test_balanced_class_weights_follow_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    from dltool.train.losses import LossContext, class_weights, pos_weights
    y = torch.tensor([0] * 50 + [1] * 5 + [2] * 20)
    want = compute_class_weight("balanced", classes=np.arange(3), y=y.numpy())
    got = class_weights("balanced", LossContext("classification", y, 3))
    assert np.allclose(got.numpy(), want)
    yb = torch.tensor([[1.0]] * 10 + [[0.0]] * 40)
    assert pos_weights("balanced", LossContext("binary", yb, 1)).tolist() == [4.0]


def test_balanced_sampler_draws_every_class_equally_often_and_reproducibly():
    from dltool.data.splits import TensorSplit
    from dltool.data.targets import sampler_weights
    y = torch.tensor([0] * 900 + [1] * 100)
    split = TensorSplit(torch.zeros(1000, 1), y, sampler_weights("balanced", "classification", y))
    a = split.order(torch.Generator().manual_seed(0))
    b = split.order(torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and len(a) == 1000
    drawn = torch.bincount(y[torch.cat([split.order(torch.Generator().manual_seed(s)) for s in range(20)])])
    assert abs(drawn[1].item() / drawn.sum().item() - 0.5) < 0.02


@pytest.mark.slow
def test_export_with_normalization_gives_original_units_in_onnxruntime(linear, tmp_path):
    import onnxruntime as ort
    from sklearn.datasets import load_diabetes

    from dltool.commands.export import OPTIONS as EXPORT_OPTIONS
    from dltool.commands.export import run_export
    run, _ = linear
    res = run_export(str(run), {**EXPORT_OPTIONS, "with_normalization": True, "out": str(tmp_path / "exp")})
    assert res["verification"]["passed"] and res["targets"]["in_graph"] and res["output"]["task"] == "regression"
    raw = load_diabetes().data[:5].astype(np.float32)
    session = ort.InferenceSession(res["path"])
    onnx_values = session.run(None, {session.get_inputs()[0].name: raw})[0][:, 0]
    with open(tmp_path / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(load_diabetes().feature_names)
        w.writerows(raw.tolist())
    predicted = np.array(run_predict(str(run), [str(tmp_path / "rows.csv")], dict(PREDICT_OPTIONS))["values"])[:, 0]
    assert np.allclose(onnx_values, predicted, rtol=1e-4) and 25 < onnx_values.mean() < 346


@pytest.mark.slow
def test_a_regression_sweep_ranks_its_jobs_by_val_r2(tmp_path, cli):
    sweep = tmp_path / "sweep"
    r = cli("train", "-m", "experiment=diabetes_linear", "trainer.epochs=15", "optimizer.lr=0.001,0.1",
            "trainer.diagnostics=false", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("done: best val_r2") == 2 and r.stdout.count("test_r2=") == 2
    rows = list(csv.DictReader(open(sweep / "sweep.csv")))
    best = {float(x["optimizer.lr"]): float(x["best_val_r2"]) for x in rows}
    assert best[0.1] > best[0.001] and "test_r2" in rows[0]
    summaries = {float(x["optimizer.lr"]): json.loads((sweep / x["job"] / "summary.json").read_text()) for x in rows}
    assert all(s["task"] == "regression" and s["best_value"] == pytest.approx(best[lr]) for lr, s in summaries.items())


def test_expected_initial_losses_for_standardized_targets_match_numerical_integrals():
    from scipy import integrate, stats

    from dltool.train.losses import expected_initial_loss
    for delta in (0.5, 1.0, 2.0):
        def huber(y, d=delta):
            return (0.5 * y * y if abs(y) < d else d * (abs(y) - 0.5 * d)) * stats.norm.pdf(y)
        want = integrate.quad(huber, -np.inf, np.inf)[0]
        assert expected_initial_loss("huber", 1, task="regression", delta=delta) == pytest.approx(want, rel=1e-4)
        assert expected_initial_loss("smooth_l1", 1, task="regression", delta=delta) == \
            pytest.approx(want / delta, rel=1e-4)
    assert expected_initial_loss("l1", 1, task="regression") == pytest.approx(
        integrate.quad(lambda y: abs(y) * stats.norm.pdf(y), -np.inf, np.inf)[0], rel=1e-6)
    assert expected_initial_loss("mse", 1, task="regression") == 1.0
    assert expected_initial_loss("bce", 5, task="multilabel") == pytest.approx(np.log(2))


def test_tuned_threshold_is_the_best_f1_of_the_candidates_and_bounded_on_large_splits():
    from dltool.train.metrics import tune_threshold
    rng = np.random.default_rng(0)
    y = (rng.random((5000, 1)) < 0.3).astype(np.float32)
    logits = torch.from_numpy(y * 1.5 + rng.normal(size=(5000, 1)).astype(np.float32) - 0.7)
    t, f1 = tune_threshold("binary", logits, torch.from_numpy(y))
    p = torch.sigmoid(logits).numpy()[:, 0]
    assert f1 == pytest.approx(skm.f1_score(y[:, 0], p >= t))
    grid = np.linspace(0.01, 0.99, 99)  # no fixed threshold on a fine grid beats the tuned one by more than noise
    assert f1 >= max(skm.f1_score(y[:, 0], p >= g) for g in grid) - 0.005
