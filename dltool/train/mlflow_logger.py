"""trainer.loggers=[..., mlflow]: one MLflow run per training run (loaded only when chosen: mlflow imports slowly).

- params: the resolved config, flattened to dotted keys (model.layers as one string);
- metrics: every number of each epoch's logs at step = epoch, then the test metrics at the end;
- artifacts: config.yaml, summary.json and the figures (*.png) of the run dir;
- tags: the provenance of summary.json (versions, host, command, git, data fingerprint) as `dltool.*`.

Tracking URI: trainer.mlflow_uri, or by default a SQLite store outputs/mlflow.db with artifacts in
outputs/mlartifacts (MLflow's recommended local backend; its plain-file store is deprecated). The run id is kept
in RUN_DIR/mlflow.json, so a resumed run (also a requeued one) continues the same MLflow run. A sweep is one
parent run (created by the sweep, id in SWEEP_DIR/mlflow.json) and each job a child run of it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from dltool.train.callbacks import LAST, Callback, FitState

log = logging.getLogger(__name__)

RUN_FILE = "mlflow.json"  # {"uri", "run_id", "experiment_id"} in a run dir (or a sweep dir: the parent run)
PARENT_TAG = "mlflow.parentRunId"


def default_uri(outputs: Path) -> str:
    return f"sqlite:///{(outputs / 'mlflow.db').resolve()}"


def client_and_experiment(uri: str, name: str, outputs: Path) -> tuple[MlflowClient, str]:
    """The client for uri and the id of experiment `name` (created, with artifacts under outputs/ for the default
    store, when it does not exist yet)."""
    outputs.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return client, exp.experiment_id
    local = uri.startswith("sqlite:///") and uri == default_uri(outputs)
    where = (outputs / "mlartifacts" / name).resolve().as_uri() if local else None
    return client, client.create_experiment(name, artifact_location=where)


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; lists stay one value (model.layers is one param)."""
    if not isinstance(d, dict):
        return {prefix: json.dumps(d) if isinstance(d, (list, dict)) else str(d)}
    out: dict[str, str] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def provenance_tags(p: dict) -> dict[str, str]:
    return {f"dltool.{k}": str(v) for k, v in flatten(p).items()}


def start_parent(sweep_dir: Path, name: str, uri: str | None, outputs: Path) -> str:
    """The sweep's parent run (its id also in SWEEP_DIR/mlflow.json, where each job finds it)."""
    uri = uri or default_uri(outputs)
    client, exp = client_and_experiment(uri, name, outputs)
    run = client.create_run(exp, run_name=sweep_dir.name, tags={"dltool.sweep_dir": str(sweep_dir)})
    (sweep_dir / RUN_FILE).write_text(json.dumps({"uri": uri, "run_id": run.info.run_id, "experiment_id": exp}))
    return run.info.run_id


def end_parent(sweep_dir: Path) -> None:
    f = sweep_dir / RUN_FILE
    if f.is_file():
        ids = json.loads(f.read_text())
        MlflowClient(tracking_uri=ids["uri"]).set_terminated(ids["run_id"], "FINISHED")


class MLflowLogger(Callback):
    """Logs to one MLflow run; see the module docstring."""

    priority = LAST

    def __init__(self, run_dir: Path, cfg: dict, uri: str | None, outputs: Path) -> None:
        self.run_dir, self.cfg = Path(run_dir), cfg
        parent = self.run_dir.parent / RUN_FILE  # a sweep job: the sweep's parent run
        ids = json.loads(parent.read_text()) if parent.is_file() else None
        self.uri = uri or (ids["uri"] if ids else default_uri(outputs))
        self.parent_id = ids["run_id"] if ids else None
        self.outputs = outputs
        self.client: MlflowClient | None = None
        self.run_id = ""

    def on_fit_start(self, state: FitState) -> None:
        own = self.run_dir / RUN_FILE
        if own.is_file():  # a resumed run continues its MLflow run
            ids = json.loads(own.read_text())
            self.client, self.run_id = MlflowClient(tracking_uri=ids["uri"]), ids["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.client, exp = client_and_experiment(self.uri, str(self.cfg.get("name", "dltool")), self.outputs)
        tags = {"dltool.run_dir": str(self.run_dir)} | ({PARENT_TAG: self.parent_id} if self.parent_id else {})
        run = self.client.create_run(exp, run_name=self.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(self.cfg).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        own.write_text(json.dumps({"uri": self.uri, "run_id": self.run_id, "experiment_id": exp}))

    def on_epoch_end(self, state: FitState, logs: dict) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(logs["epoch"])) for k, v in logs.items()
                   if k not in ("epoch", "best") and isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, state: FitState) -> None:
        if state.preempted and self.client is not None:
            self.client.set_terminated(self.run_id, "KILLED")  # the resume sets it RUNNING again

    def on_summary(self, summary: dict) -> None:
        """After summary.json: test metrics, provenance tags, artifacts; the run ends."""
        now = int(time.time() * 1000)
        tests = [Metric(k, float(summary[k]), now, int(summary["epochs_run"])) for k in ("test_loss", "test_acc")
                 if isinstance(summary.get(k), (int, float))]
        tags = [RunTag(k, v[:5000]) for k, v in provenance_tags(summary.get("provenance") or {}).items()]
        tags.append(RunTag("dltool.stop_reason", str(summary.get("stop_reason", ""))[:5000]))
        self.client.log_batch(self.run_id, metrics=tests, tags=tags)
        for f in ["config.yaml", "summary.json", *sorted(p.name for p in self.run_dir.glob("*.png"))]:
            if (self.run_dir / f).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / f))
        self.client.set_terminated(self.run_id, "FAILED" if summary.get("diverged") else "FINISHED")
