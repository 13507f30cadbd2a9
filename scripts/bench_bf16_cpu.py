"""Epoch time of trainer.precision=bf16 against 32 on the CPU (the figure dltool's bf16-on-CPU warning quotes).

    python scripts/bench_bf16_cpu.py [MODEL ...]      # default: cnn_digits and mlp, 3 epochs each, one thread
"""

from __future__ import annotations

import statistics
import sys
import tempfile

import torch

from dltool.config.compose import compose
from dltool.config.schema import validate
from dltool.train.run import train


def epoch_seconds(model: str, precision: str) -> float:
    cfg = validate(compose("train", None, [f"model={model}", f"trainer.precision={precision}", "trainer.epochs=3",
                                           "trainer.threads=1", "trainer.diagnostics=false", "trainer.loggers=[]",
                                           "trainer.eval_test=false", "trainer.device=cpu", "trainer.progress=false"]))
    with tempfile.TemporaryDirectory() as d:
        train(cfg, d)
        ck = torch.load(f"{d}/checkpoints/last.pt", weights_only=True)
    return statistics.median(float(h["time"]) for h in ck["history"][1:])  # epoch 1 pays the warm-up


def main(models: list[str]) -> None:
    for model in models or ["cnn_digits", "mlp"]:
        t32, tbf = epoch_seconds(model, "32"), epoch_seconds(model, "bf16")
        print(f"{model}: 32-bit {t32:.3f} s/epoch, bf16 autocast {tbf:.3f} s/epoch: {tbf / t32:.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
