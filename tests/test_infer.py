"""One batched-inference helper (dltool.train.infer) behind training's validation, evaluate and predict."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from dltool.commands.evaluate import predict_logits
from dltool.commands.predict import outputs
from dltool.config.schema import TrainConfig
from dltool.data.splits import TensorSplit
from dltool.train.infer import autocast, infer
from dltool.train.loop import evaluate
from dltool.train.metrics import probabilities
from dltool.train.restore import Restored
from tests.test_structure import import_graph


def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    return model, torch.randn(50, 6), torch.randint(0, 3, (50,))


def test_infer_is_eval_mode_batched_and_exact() -> None:
    model, x, y = tiny()
    model.train()  # infer must switch dropout off
    out = infer(model, TensorSplit(x, y).batches(7), torch.device("cpu"), "32", nn.CrossEntropyLoss(),
                keep_logits=True)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert torch.allclose(out.logits, logits, atol=1e-6) and out.logits.dtype == torch.float32
    assert out.loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert out.acc == pytest.approx((logits.argmax(1) == y).double().mean().item())
    whole = evaluate(model, nn.CrossEntropyLoss(), TensorSplit(x, y), 7, torch.device("cpu"))
    assert whole["loss"] == pytest.approx(out.loss, rel=1e-6) and whole["acc"] == pytest.approx(out.acc)
    assert whole["macro_f1"] == pytest.approx(f1_score(y, logits.argmax(1), average="macro"))
    unlabelled = infer(model, ((x[i:i + 7], None) for i in range(0, 50, 7)), torch.device("cpu"), keep_logits=True)
    assert unlabelled.loss is None and unlabelled.acc is None and torch.equal(unlabelled.logits, out.logits)


def test_predict_uses_the_same_precision_as_evaluate(tmp_path: Path) -> None:
    model, x, _ = tiny()
    model.eval()
    cfg = TrainConfig()
    cfg.trainer = dataclasses.replace(cfg.trainer, precision="bf16")
    r = Restored(cfg, {"norm": {"kind": "none"}}, model, torch.device("cpu"), tmp_path / "best.pt", tmp_path)
    values, indices = probabilities("classification", outputs(r, x, 16)).topk(3, dim=1)
    logits, _ = predict_logits(r, x, None, 16)
    with torch.no_grad(), autocast(torch.device("cpu"), "bf16"):
        manual = model(x).float()
    assert torch.equal(logits, manual)
    p = probabilities("classification", logits)
    assert torch.allclose(values, p.topk(3, dim=1).values) and torch.equal(indices, p.topk(3, dim=1).indices)
    with torch.no_grad():
        full = probabilities("classification", model(x))
    assert not torch.allclose(values, full.topk(3, dim=1).values, atol=1e-6)  # bf16 really applied


def test_predict_does_not_reach_into_evaluate() -> None:
    assert "dltool.commands.evaluate" not in import_graph()["dltool.commands.predict"]
