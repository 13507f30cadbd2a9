"""The script a careful user would write instead of `dltool train` (the default main job), for scripts/bench.py.

    python scripts/hand_main_job.py OUT_DIR [--epochs 30] [--lrs 0.001] [--threads N]

Same job as dltool's default run: scikit-learn's digits (8x8, /16), a stratified 65/15/20 split (seed 0),
per-channel standardization from the training split, the same CNN (conv32-bn-relu x2, pool, conv64-relu, pool,
fc128-relu-dropout 0.3, fc10) with Kaiming-normal weights and zero biases, Adam (lr 1e-3) with a per-epoch
cosine schedule, batch 64, the data in memory; per epoch a validation pass, best.pt (on the best val_loss,
written to a temporary file then renamed) and last.pt, one metrics.csv row; at the end curves.png (loss and
accuracy), the best checkpoint's test accuracy and a summary.json. --lrs a,b,c runs one job per learning rate
in one process (the hand for-loop of a grid sweep); each job gets OUT_DIR/<n>.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# scikit-learn and matplotlib are imported where they are used, so that scripts/hand_small.py's `summary`
# (which imports cnn() from here) pays for torch only, as a user's summary script would


def data(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    y = torch.tensor(d.target)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.2, random_state=seed, stratify=y.numpy())
    train, val = train_test_split(rest, test_size=0.15 / 0.8, random_state=seed, stratify=y.numpy()[rest])
    mean, std = x[train].mean(dim=(0, 2, 3)), x[train].std(dim=(0, 2, 3)).clamp_min(1e-6)
    norm = lambda t: (t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)  # noqa: E731
    out = {k: (norm(x[i]), y[i]) for k, i in (("train", train), ("val", val), ("test", test))}
    out["norm"] = (mean, std)  # kept in the checkpoint, for evaluating and predicting later
    return out


def cnn() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding="same"), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding="same"), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        out = model(x[i:i + batch])
        loss += F.cross_entropy(out, y[i:i + batch], reduction="sum").item()
        correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    return loss / len(y), correct / len(y)


def save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in rows]
    a.plot(ep, [r["train_loss"] for r in rows], label="train")
    a.plot(ep, [r["val_loss"] for r in rows], label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(ep, [r["train_acc"] for r in rows], label="train")
    b.plot(ep, [r["val_acc"] for r in rows], label="val")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def job(splits: dict, out: Path, epochs: int, lr: float, seed: int = 0) -> dict:
    start = time.perf_counter()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    (xt, yt), (xv, yv) = splits["train"], splits["val"]
    gen = torch.Generator().manual_seed(seed)
    rows, best = [], math.inf
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"])
        for epoch in range(1, epochs + 1):
            model.train()
            total, correct = 0.0, 0
            for idx in torch.randperm(len(yt), generator=gen).split(64):
                xb, yb = xt[idx], yt[idx]
                opt.zero_grad(set_to_none=True)
                logits = model(xb)  # (B, 10)
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                opt.step()
                total += loss.item() * len(yb)
                correct += (logits.argmax(1) == yb).sum().item()
            lr_now = opt.param_groups[0]["lr"]
            sched.step()
            val_loss, val_acc = evaluate(model, xv, yv)
            row = {"epoch": epoch, "train_loss": total / len(yt), "train_acc": correct / len(yt),
                   "val_loss": val_loss, "val_acc": val_acc, "lr": lr_now}
            rows.append(row)
            writer.writerow(row.values())
            f.flush()
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                     "mean": splits["norm"][0], "std": splits["norm"][1]}
            if val_loss < best:
                best = val_loss
                save(state, out / "checkpoints" / "best.pt")
            save(state, out / "checkpoints" / "last.pt")
            print(f"{epoch:>3}/{epochs} train_loss {row['train_loss']:.4f} val_loss {val_loss:.4f} "
                  f"val_acc {val_acc:.4f}", flush=True)
    curves(rows, out / "curves.png")
    model.load_state_dict(torch.load(out / "checkpoints" / "best.pt", weights_only=True)["model"])
    test_loss, test_acc = evaluate(model, *splits["test"])
    summary = {"best_val_loss": best, "test_loss": test_loss, "test_acc": test_acc,
               "seconds": time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"best val_loss {best:.4f}, test accuracy {test_acc:.4f}", flush=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lrs", default="0.001", help="comma-separated learning rates: one job each, in this process")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = data()
    lrs = [float(v) for v in args.lrs.split(",")]
    for n, lr in enumerate(lrs):
        job(splits, args.out / str(n) if len(lrs) > 1 else args.out, args.epochs, lr)


if __name__ == "__main__":
    main()
