"""The baselines and generated data of scripts/bench.py's cases 2-5 (case 1 is bench_overhead.py's).

Each `*_rounds` function returns bench_overhead.Rounds: per-epoch seconds of both sides, alternating rounds.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import bench_overhead as bo
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from dltool.train.run import prepare


# ---------------------------------------------------------------------------------------------- generated data
def patterned(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, *shape) of 10 classes: noise plus a bright class-dependent row (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    x = rng.integers(0, 90, size=(n, *shape), dtype=np.uint8)
    x[np.arange(n), (2 * y + 3) % shape[0]] = 230
    return x, y.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's IDX format, uncompressed (what torchvision's MNIST reads from MNIST/raw/)."""
    header = struct.pack(">i", 0x0800 | array.ndim) + b"".join(struct.pack(">i", d) for d in array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, n_train: int, n_test: int) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = patterned(n, (28, 28), seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return root


def write_folder(root: Path, n: int) -> Path:
    """n 32x32 RGB PNGs in 10 class folders."""
    x, y = patterned(n, (32, 32, 3), 2)
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(x[i]).save(root / f"class{y[i]}" / f"{i:05d}.png")
    return root


# ---------------------------------------------------------------------------------------------- case 3: folders
def folder_hand(root: Path, model, epochs: int, batch: int, lr: float, workers: int, device: torch.device,
                precision: str) -> list[float]:
    """torchvision ImageFolder + DataLoader, the transforms dltool applies (RGB, resize, to float in [0, 1])."""
    tf = v2.Compose([v2.Resize((32, 32)), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    dl = DataLoader(ImageFolder(str(root), transform=tf), batch_size=batch, shuffle=True, num_workers=workers,
                    persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    times = [bo.sync()]
    for _ in range(epochs):
        for x, y in dl:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with bo.autocast(device, precision):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        times.append(bo.sync())
    return [b - a for a, b in zip(times, times[1:])][1:]


def folder_rounds(cfg, root: Path, rounds: int, epochs: int, workers: int) -> bo.Rounds:
    def setup(r: int) -> tuple:
        p = prepare(cfg)
        return p, copy.deepcopy(p.setup.model)

    def theirs(ctx: tuple) -> list[float]:
        p, model = ctx
        return folder_hand(root, model, epochs, cfg.trainer.batch_size, cfg.optimizer.lr, workers, p.device,
                           p.setup.precision)

    return bo.alternate(rounds, lambda ctx: bo.dltool_epochs(cfg, ctx[0]), theirs, setup)


def cache_rounds(cached_cfg, memory_cfg, rounds: int) -> bo.Rounds:
    """data.cache=true (epochs after the first) vs data.on_device=true (decoded up front): both dltool."""
    return bo.alternate(rounds, lambda _: bo.dltool_epochs(cached_cfg, prepare(cached_cfg)),
                        lambda _: bo.dltool_epochs(memory_cfg, prepare(memory_cfg)))


# ---------------------------------------------------------------------------------------------- case 4: Lightning
def lightning_available() -> bool:
    try:
        import lightning  # noqa: F401 - only to know whether case 4 can run (never a dltool dependency)
    except ImportError:
        return False
    return True


def lightning_epochs(model, data, epochs: int, batch: int, lr: float, device: torch.device,
                     precision: str) -> list[float]:
    """A default lightning.Trainer (checkpointing, logger, validation each epoch) on the same tensors."""
    import lightning as L  # noqa: N812 - only here: lightning is the benchmark's, not dltool's

    class Module(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, b, i):
            return F.cross_entropy(self.net(b[0]), b[1])

        def validation_step(self, b, i):
            out = self.net(b[0])
            self.log("val_loss", F.cross_entropy(out, b[1]))
            self.log("val_acc", (out.argmax(1) == b[1]).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    times: list[float] = []

    class Clock(L.Callback):
        def on_train_start(self, trainer, module):
            times.append(bo.sync())

        def on_train_epoch_end(self, trainer, module):
            times.append(bo.sync())

    train_dl = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=batch, shuffle=True)
    val_dl = DataLoader(TensorDataset(data.val.x, data.val.y), batch_size=batch)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # its subpackages set INFO on their own
        logging.getLogger(name).setLevel(logging.ERROR)  # no tips, model table or "fit stopped" lines in the output
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # defaults otherwise; the model summary is printed once before fitting (untimed), so it is switched off
        trainer = L.Trainer(max_epochs=epochs, default_root_dir=tmp, enable_progress_bar=False, callbacks=[Clock()],
                            enable_model_summary=False,
                            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                            precision="bf16-mixed" if precision == "bf16" else "32-true")
        trainer.fit(Module(model), train_dl, val_dl)
    return [b - a for a, b in zip(times, times[1:])][1:]


def lightning_rounds(cfg, rounds: int, epochs: int) -> bo.Rounds:
    """Rounds.ours: dltool; Rounds.theirs: Lightning (the ratio is dltool / Lightning: below 1 is faster)."""
    def setup(r: int) -> tuple:
        p = prepare(cfg)
        return p, copy.deepcopy(p.setup.model)

    def theirs(ctx: tuple) -> list[float]:
        p, model = ctx
        return lightning_epochs(model, p.data, epochs, cfg.trainer.batch_size, cfg.optimizer.lr, p.device,
                                p.setup.precision)

    return bo.alternate(rounds, lambda ctx: bo.dltool_epochs(cfg, ctx[0]), theirs, setup)


# ---------------------------------------------------------------------------------------------- case 5: start-up
HAND_SCRIPT = textwrap.dedent('''
    import sys, time
    import torch
    from torch import nn
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test, n_val = len(y) // 5, (len(y) - len(y) // 5) * 15 // 100
    te, va, tr = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    model = nn.Sequential(  # configs/model/cnn_digits.yaml
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    model.train()
    order = tr[torch.randperm(len(tr))]
    for i in range(0, len(order), 64):
        idx = order[i:i + 64]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[va]).argmax(1) == y[va]).float().mean().item()
    seconds = time.perf_counter() - t0
    torch.save(model.state_dict(), sys.argv[1])
    print(f"TRAIN_SECONDS {seconds}")
''')


def timed(cmd: list[str], cwd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DLTOOL_NO_PROGRESS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0, out.stdout


def startup_dltool(overrides: list[str]) -> float:
    """`dltool train trainer.epochs=1`: wall seconds minus the epoch's own time (metrics.csv `time`)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        wall, _ = timed([sys.executable, "-m", "dltool", "train", "trainer.epochs=1", f"hydra.run.dir={run}",
                         *overrides], tmp)
        with open(run / "metrics.csv") as f:
            epoch = float(next(csv.DictReader(f))["time"])
    return wall - epoch


def startup_hand() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "hand.py"
        script.write_text(HAND_SCRIPT)
        wall, out = timed([sys.executable, str(script), str(Path(tmp) / "model.pt")], tmp)
    return wall - float(out.split("TRAIN_SECONDS")[1])


def startup_rounds(rounds: int, overrides: list[str]) -> bo.Rounds:
    """Per round one start-up overhead each (seconds outside the training epoch); ratio and difference."""
    return bo.alternate(rounds, lambda _: [startup_dltool(overrides)], lambda _: [startup_hand()])


def difference(res: bo.Rounds) -> float:
    """Median over rounds of dltool's start-up overhead minus the hand script's (seconds)."""
    return statistics.median(a - b for a, b in zip(res.ours, res.theirs))
