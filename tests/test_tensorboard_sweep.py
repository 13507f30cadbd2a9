"""The HParams dashboard end to end: a real `dltool train -m` sweep, its event files read back by tensorboard's own
reader (the multiplexer `tensorboard --logdir SWEEP` uses) and the hparams plugin's data, checked against each job's
metrics.csv."""

from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util.tensor_util import make_ndarray


def plugin_data(mux: EventMultiplexer, run: str, tag: str) -> plugin_data_pb2.HParamsPluginData:
    return plugin_data_pb2.HParamsPluginData.FromString(mux.SummaryMetadata(run, tag).plugin_data.content)


def values(mux: EventMultiplexer, run: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar as the server reads it (scalars are stored as tensors since TF 2)."""
    return [(e.step, float(make_ndarray(e.tensor_proto))) for e in mux.Tensors(run, tag)]


@pytest.mark.slow  # a Hydra multirun of two jobs: 10-20 s on 2 busy cores
def test_sweep_jobs_show_their_lr_and_final_metrics_in_the_hparams_dashboard(tmp_path, cli):
    sweep = tmp_path / "sweep"
    r = cli("train", "-m", "model=mlp", "trainer.epochs=2", "data.subset=200", "trainer.eval_test=false",
            "optimizer.lr=0.01,0.1", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    mux = EventMultiplexer(size_guidance={"scalars": 0, "tensors": 0}).AddRunsFromDirectory(str(sweep)).Reload()
    assert set(mux.Runs()) == {"0", "1"}  # one TensorBoard run per job
    seen = {}
    for job in ("0", "1"):
        rows = list(csv.DictReader(open(sweep / job / "metrics.csv")))
        assert len(rows) == 2
        tags = mux.GetAccumulator(job).Tags()["tensors"]
        assert {hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG,
                hp_metadata.SESSION_END_INFO_TAG} <= set(tags)
        exp = plugin_data(mux, job, hp_metadata.EXPERIMENT_TAG).experiment
        assert "optimizer.lr" in {h.name for h in exp.hparam_infos}
        assert {m.name.tag for m in exp.metric_infos} >= {"hparam/best_val_loss", "hparam/val_acc"}
        hp = plugin_data(mux, job, hp_metadata.SESSION_START_INFO_TAG).session_start_info.hparams
        seen[job] = hp["optimizer.lr"].number_value
        assert hp["model.name"].string_value == "mlp"
        best = min(rows, key=lambda x: float(x["val_loss"]))  # the run's best epoch (trainer.monitor=val_loss)
        metrics = {t: values(mux, job, t)[-1][1] for t in ("hparam/best_val_loss", "hparam/val_loss",
                                                                   "hparam/val_acc", "hparam/train_loss")}
        assert metrics["hparam/best_val_loss"] == pytest.approx(float(best["val_loss"]), rel=1e-6)
        for key in ("val_loss", "val_acc", "train_loss"):
            assert metrics[f"hparam/{key}"] == pytest.approx(float(best[key]), rel=1e-6), key
        for key in ("val_acc", "lr"):  # and the per-epoch scalars of the run
            assert values(mux, job, key) == \
                [(int(x["epoch"]), pytest.approx(float(x[key]), rel=1e-6)) for x in rows], key
    assert sorted(seen.values()) == [pytest.approx(0.01), pytest.approx(0.1)]
