"""The Python API (dltool/api.py): train from a dict, load, predict, evaluate; errors are exceptions, no Hydra state
is left behind, and `import dltool` does not import torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import dltool
from dltool import plugins

QUICK = ["trainer.epochs=2", "trainer.diagnostics=false", "trainer.loggers=[csv]", "trainer.progress=false"]


def test_import_dltool_is_torch_free_and_exports_the_api():
    code = "import sys, dltool; dltool.ConfigError; dltool.register_layer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert {"fit", "load", "evaluate", "Run", "ConfigError", "register_layer"} <= set(dir(dltool))


@pytest.mark.slow
def test_a_mistake_is_a_config_error_not_an_exit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(dltool.ConfigError, match="Did you mean 'epochs'"):
        dltool.fit({"trainer": {"epoch": 2}})
    assert not GlobalHydra.instance().is_initialized() and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_train_load_predict_evaluate_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLTOOL_NO_PROGRESS", "1")

    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    plugins.register_layer("double", lambda o, shape, ctx: (Double(), shape), "2 * x (built in Python)")
    try:
        run = dltool.fit({"model": {"name": "mine", "layers": ["flatten", "double", {"fc": 10}]}}, QUICK,
                           run_dir=tmp_path / "run")
        assert not GlobalHydra.instance().is_initialized()
        rows = (run.dir / "metrics.csv").read_text().splitlines()
        head = rows[0].split(",")
        val = [float(dict(zip(head, r.split(",")))["val_loss"]) for r in rows[1:]]
        assert run.summary["best_value"] == pytest.approx(min(val))
        (rec,) = json.loads((run.dir / "plugins.json").read_text())
        assert rec["name"] == "double" and rec["origin"].startswith("python ")
        from sklearn.datasets import load_digits

        x = torch.tensor(load_digits().images[:4], dtype=torch.float32)[:, None] / 16.0  # (4, 1, 8, 8) raw units
        np.save(tmp_path / "x.npy", x.numpy())
        got = dltool.load(run.dir).predict(x)
        assert [len(t) for t in got["top"]] == [3] * 4 and got["names"] == [str(i) for i in range(10)]
        model, norm = run.model, run.restored.ckpt["norm"]
        from dltool.data.normalize import apply_norm

        with torch.no_grad():
            p = torch.softmax(model(apply_norm(x, norm)), 1)
        assert [t[0][0] for t in got["top"]] == [str(int(i)) for i in p.argmax(1)]
        assert [t[0][1] for t in got["top"]] == pytest.approx(p.max(1).values.tolist(), rel=1e-5)
        from dltool.commands.predict import OPTIONS, run_predict  # what `dltool predict RUN x.npy` prints

        cli = run_predict(str(run.dir), [str(tmp_path / "x.npy")], dict(OPTIONS))
        assert [[n for n, _ in t] for t in cli["top"]] == [[n for n, _ in t] for t in got["top"]]
        ev = dltool.evaluate(run.dir, split="val")
        assert ev["loss"] == pytest.approx(min(val), rel=1e-5)  # best.pt is the epoch of the lowest val_loss
        again = dltool.fit(overrides=[f"resume={run.dir}", "trainer.epochs=3"])
        assert again.dir == run.dir and len((run.dir / "metrics.csv").read_text().splitlines()) == 4
    finally:
        plugins.unregister("layers", "double")
