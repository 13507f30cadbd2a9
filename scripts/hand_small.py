"""The hand scripts a user would write instead of dltool's small commands (scripts/bench.py case 8).

    python scripts/hand_small.py summary
    python scripts/hand_small.py evaluate HAND_RUN_DIR      (a run dir written by scripts/hand_main_job.py)
    python scripts/hand_small.py predict HAND_RUN_DIR EXAMPLES.npy
    python scripts/hand_small.py export HAND_RUN_DIR
    python scripts/hand_small.py overfit-sanity-check
    python scripts/hand_small.py gradcheck

Each does the same work as the dltool command on the default run: the layer table of the CNN; the test split's
accuracy, confusion matrix (scikit-learn) and its PNG with eval.json; top-3 classes of the examples in a .npy;
ONNX export (opset 18, dynamic batch) checked with onnxruntime on 64 test examples; Adam on 20 training
examples without dropout until the loss is under 0.01 (at most 500 steps); centered differences in float64 on
up to 30 elements of every parameter tensor, 4 examples.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hand_main_job as hj
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def load(run: Path) -> tuple[nn.Module, dict]:
    ck = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    model = hj.cnn()
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def summary() -> None:
    model, rows, total = hj.cnn(), [], 0
    x = torch.zeros(1, 1, 8, 8)
    for i, m in enumerate(model):
        x = m(x)
        n = sum(p.numel() for p in m.parameters())
        total += n
        rows.append(f"{i:>3} {type(m).__name__:<12} {'x'.join(map(str, x.shape[1:])):>10} {n:>8,}")
    print("\n".join(rows) + f"\ntotal parameters {total:,}")


def evaluate(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import accuracy_score, confusion_matrix

    model, _ = load(run)
    x, y = hj.data()["test"]
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    cm = confusion_matrix(y.numpy(), pred)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    fig.savefig(run / "confusion.png", dpi=100)
    acc = accuracy_score(y.numpy(), pred)
    (run / "eval.json").write_text(json.dumps({"accuracy": acc, "confusion": cm.tolist()}))
    print(f"test accuracy {acc:.4f}")


def predict(run: Path, path: Path) -> None:
    model, ck = load(run)
    x = torch.from_numpy(np.load(path)).float()
    x = (x - ck["mean"].view(1, -1, 1, 1)) / ck["std"].view(1, -1, 1, 1)
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
    top = p.topk(3, dim=1)
    for i, (v, k) in enumerate(zip(top.values, top.indices)):
        print(i, "  ".join(f"{int(c)}: {float(q):.3f}" for q, c in zip(v, k)))


def export(run: Path) -> None:
    import onnxruntime

    model, _ = load(run)
    x = hj.data()["test"][0][:64]
    out = run / "model.onnx"
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},), opset_version=18).save(str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        diff = float(np.abs(got - model(x).numpy()).max())
    print(f"exported {out}, max difference {diff:.2e}")


def sanity() -> None:
    x, y = hj.data()["train"]
    x, y = x[:20], y[:20]
    torch.manual_seed(0)
    model = hj.cnn()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # regularization off
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for step in range(1, 501):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    print(f"loss {first:.3f} -> {loss.item():.4f} in {step} steps: {'pass' if loss.item() < 0.01 else 'fail'}")


def gradcheck() -> None:
    x, y = hj.data()["train"]
    x, y = x[:4].double(), y[:4]
    torch.manual_seed(0)
    model = hj.cnn().double().eval()  # eval: dropout off, so every evaluation sees the same function
    model(x)
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    g, worst, h = torch.Generator().manual_seed(0), 0.0, 1e-5
    with torch.no_grad():
        for p, grad in zip(model.parameters(), grads):
            flat, gflat = p.view(-1), grad.reshape(-1)
            for i in torch.randperm(flat.numel(), generator=g)[:30].tolist():
                old = flat[i].item()
                flat[i] = old + h
                up = F.cross_entropy(model(x), y).item()
                flat[i] = old - h
                down = F.cross_entropy(model(x), y).item()
                flat[i] = old
                num = (up - down) / (2 * h)
                worst = max(worst, abs(num - gflat[i].item()) / max(abs(num) + abs(gflat[i].item()), 1e-12))
    print(f"max relative error {worst:.2e}: {'pass' if worst < 1e-6 else 'fail'}")


if __name__ == "__main__":
    cmd, rest = sys.argv[1], [Path(a) for a in sys.argv[2:]]
    {"summary": summary, "evaluate": evaluate, "predict": predict, "export": export,
     "overfit-sanity-check": sanity, "gradcheck": gradcheck}[cmd](*rest)
