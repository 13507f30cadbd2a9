"""`dltool evaluate`: numbers equal training's test accuracy and scikit-learn's metrics; one-sentence errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from sklearn import metrics as skm

from dltool.cli import main
from dltool.commands.evaluate import load_split, metrics, predict_logits
from dltool.train.restore import restore
from tests.conftest import call_main, copy_of_default_run, run_cli


@pytest.fixture(scope="module")
def trained(default_run_3, tmp_path_factory) -> Path:
    """A short (three-epoch) default training run, shared by the tests of this file: a copy of the session's run
    (`dltool train` itself is tested in test_cli; evaluate reads only the run dir's files)."""
    return copy_of_default_run(default_run_3, tmp_path_factory, "evaluate")


def test_evaluate_accuracy_equals_training_summary(trained: Path, cli) -> None:
    summary = json.loads((trained / "summary.json").read_text())
    proc = cli("evaluate", str(trained))
    assert proc.returncode == 0, proc.stderr
    ev = json.loads((trained / "eval.json").read_text())
    assert ev["acc"] == summary["test_acc"]
    assert ev["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert ev["examples"] == 360 and ev["split"] == "test" and ev["topk"] == 3
    assert f"{summary['test_acc']:.4f}" in proc.stdout
    assert "macro avg" in proc.stdout and "weighted avg" in proc.stdout and "confusion matrix" in proc.stdout
    assert (trained / "confusion_matrix.png").stat().st_size > 5000
    assert sum(map(sum, ev["confusion_matrix"])) == 360


def test_metrics_agree_with_sklearn(trained: Path) -> None:
    r = restore(str(trained), "best", "cpu")
    x, y, names, _ = load_split(r, "test")
    logits, _ = predict_logits(r, x, y, 64)
    m = metrics(logits, y, 3)
    pred = logits.argmax(1).numpy()
    labels = list(range(10))
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["topk_acc"] == pytest.approx(skm.top_k_accuracy_score(y, logits.numpy(), k=3, labels=labels), abs=1e-12)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    p, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert m["per_class"]["precision"] == pytest.approx(p.tolist())
    assert m["per_class"]["recall"] == pytest.approx(rc.tolist())
    assert m["per_class"]["f1"] == pytest.approx(f1.tolist())
    assert m["per_class"]["support"] == sup.tolist()
    for avg in ("macro", "weighted"):
        p, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert [m[f"{avg}_avg"][k] for k in ("precision", "recall", "f1")] == pytest.approx([p, rc, f1])
    assert names == [str(i) for i in range(10)]


def test_metrics_with_unpredicted_and_absent_classes() -> None:
    """Class 3 is never predicted, class 2 never occurs: zero-division cases as scikit-learn counts them."""
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 0, 1, 1, 1, 3, 3, 0, 1, 4])
    logits = torch.randn(10, 5, generator=g)
    logits[:, 3] -= 100
    m = metrics(logits, y, 2)
    pred = logits.argmax(1)
    labels = list(range(5))
    for avg in ("macro", "weighted"):
        p, r, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert [m[f"{avg}_avg"][k] for k in ("precision", "recall", "f1")] == pytest.approx([p, r, f1])
    assert m["topk_acc"] == pytest.approx(skm.top_k_accuracy_score(y, logits, k=2, labels=labels))
    assert m["per_class"]["support"][2] == 0 and m["per_class"]["precision"][3] == 0


def test_single_logit_binary_metrics() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    y = torch.tensor([1, 1, 0, 0])
    m = metrics(logits, y, 5)
    assert m["acc"] == 0.5 and m["topk"] == 2 and m["topk_acc"] == 1.0
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]


@pytest.mark.slow
def test_checkpoint_file_alone_and_other_split(trained: Path, tmp_path: Path, cli) -> None:
    lone = tmp_path / "model.pt"
    shutil.copy(trained / "checkpoints" / "best.pt", lone)
    proc = cli("evaluate", str(lone))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((trained / "summary.json").read_text())
    assert json.loads((tmp_path / "eval_model.json").read_text())["acc"] == summary["test_acc"]
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(trained), "split=val", "checkpoint=last", "topk=2", "device=cpu"])
    assert exit_info.value.code == 0
    ev = json.loads((trained / "eval_val_last.json").read_text())
    last_epoch = (trained / "metrics.csv").read_text().splitlines()[-1].split(",")
    header = (trained / "metrics.csv").read_text().splitlines()[0].split(",")
    assert ev["acc"] == pytest.approx(float(last_epoch[header.index("val_acc")]), abs=1e-12)
    assert ev["examples"] == 216 and ev["topk"] == 2
    assert (trained / "confusion_matrix_val_last.png").is_file()


def test_evaluate_errors_are_one_sentence(trained: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    shutil.copy(trained / "config.yaml", empty)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes((trained / "checkpoints" / "best.pt").read_bytes()[:4000])
    arch = tmp_path / "arch"
    shutil.copytree(trained, arch)
    cfg = yaml.safe_load((arch / "config.yaml").read_text())
    cfg["model"]["layers"][11] = {"fc": {"units": 64}}
    (arch / "config.yaml").write_text(yaml.safe_dump(cfg))
    cases = [((str(empty),), "has no checkpoints/best.pt"), ((str(trunc),), "cannot be read: it is truncated, corrupt"),
             ((str(arch),), "fc1.weight is 128x256 in the checkpoint but 64x256 in the config"),
             ((str(trained), "split=holdout"), "split='holdout' is not available"),
             ((str(trained), "topk=3", "spilt=val"), "Did you mean 'split'"),
             ((str(tmp_path / "nothing"),), "neither a run directory nor a checkpoint file")]
    for args, phrase in cases[1:]:  # in-process: the same main() the console script runs
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (args, err)
        assert phrase in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 3  # one sentence (soft-wrapped at most)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *cases[0][0]])
    assert exit_info.value.code == 2 and cases[0][1] in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_console_command_end_to_end(trained: Path, tmp_path: Path) -> None:
    """The real `python -m dltool evaluate` in a new process: report on stdout, one sentence on a mistake."""
    proc = run_cli("evaluate", str(trained), "split=val", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "macro avg" in proc.stdout and (trained / "eval_val.json").is_file()
    proc = run_cli("evaluate", str(tmp_path / "nothing"), cwd=tmp_path)
    assert proc.returncode == 2 and "neither a run directory nor a checkpoint file" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["signal", "imagefolder"])
def test_evaluate_matches_training_for_relayout_and_streamed_data(tmp_path: Path, setup: str) -> None:
    """Data the loader reshapes (layout=signal) or streams from disk is rebuilt exactly as in training."""
    if setup == "signal":
        args = ["experiment=digits_wavenet", "trainer.epochs=2"]
    else:
        from tests.fakedata import write_imagefolder

        root = write_imagefolder(tmp_path / "imgs", per_class=20)
        args = ["data=imagefolder", f"data.root={root}", "model=lenet", "trainer.epochs=2"]
    run = tmp_path / "run"
    assert call_main(["train", *args, f"hydra.run.dir={run}"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert call_main(["evaluate", str(run)]) == 0
    assert json.loads((run / "eval.json").read_text())["acc"] == summary["test_acc"]
