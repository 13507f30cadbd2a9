"""trainer.loggers=[..., mlflow]: everything read back with MLflow's own client and checked against the run dir's
files (config.yaml, metrics.csv, summary.json); a sweep is a parent run with one child per job."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ARGS = ("model=mlp", "trainer.epochs=2", "data.subset=300", "trainer.diagnostics=false",
        "trainer.loggers=[csv,mlflow]")


@pytest.fixture(scope="module")
def mlflow():
    """MLflow, imported by the tests that read it back (at the module's top, every pytest-xdist worker would import
    it while collecting, about a second each, also when these slow tests are deselected)."""
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("mlflow.tracking")
    return mlflow


def flat(d, prefix=""):
    """config.yaml flattened by hand: nested keys dotted, lists as JSON."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: json.dumps(d) if isinstance(d, list) else str(d)}


@pytest.mark.slow
def test_a_run_holds_params_metrics_artifacts_and_provenance_tags(tmp_path, cli, mlflow):
    ran = cli("train", *ARGS, "hydra.run.dir=run")
    assert ran.returncode == 0, ran.stderr
    run_dir = tmp_path / "run"
    ids = json.loads((run_dir / "mlflow.json").read_text())
    assert ids["uri"] == f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"  # the default store, inside outputs/
    client = mlflow.tracking.MlflowClient(tracking_uri=ids["uri"])
    run = client.get_run(ids["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "mlp_digits"
    assert run.data.params == flat(yaml.safe_load((run_dir / "config.yaml").read_text()))
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
               [(int(r["epoch"]), pytest.approx(float(r[key]), rel=1e-12)) for r in rows]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.metrics["test_acc"] == pytest.approx(summary["test_acc"])
    prov = summary["provenance"]
    assert run.data.tags["dltool.torch"] == prov["torch"] and run.data.tags["dltool.host"] == prov["host"]
    assert run.data.tags["dltool.data_fingerprint"] == prov["data_fingerprint"]
    assert run.data.tags["dltool.command"] == prov["command"]
    assert run.data.tags["dltool.stop_reason"] == summary["stop_reason"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "curves.png"} <= names
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.yaml",
                                                     tracking_uri=ids["uri"], dst_path=str(tmp_path / "dl")))
    assert local.read_text() == (run_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_a_sweep_is_a_parent_run_with_one_child_per_job_and_a_set_uri_is_used(tmp_path, cli, mlflow):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    ran = cli("train", "-m", *ARGS, "trainer.epochs=1", f"trainer.mlflow_uri={uri}", "trainer.seed=0,1",
              f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    parent = json.loads((tmp_path / "sweep" / "mlflow.json").read_text())
    assert parent["uri"] == uri and not (tmp_path / "outputs" / "mlflow.db").exists()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    assert client.get_run(parent["run_id"]).info.status == "FINISHED"
    children = client.search_runs([parent["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent['run_id']}'")
    assert sorted(r.info.run_name for r in children) == ["0", "1"]
    for r in children:
        job = tmp_path / "sweep" / r.info.run_name
        assert json.loads((job / "mlflow.json").read_text())["run_id"] == r.info.run_id
        assert r.data.params["trainer.seed"] == r.info.run_name
        best = json.loads((job / "summary.json").read_text())["best_value"]
        assert r.data.metrics["val_loss"] == pytest.approx(best)  # one epoch: its val_loss is the best


@pytest.mark.slow
def test_mlflow_is_imported_only_when_its_logger_is_chosen():
    code = ("import sys, dltool.cli, dltool.train.run, dltool.commands.train, dltool.commands.sweep; "
            "print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
