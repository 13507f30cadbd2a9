"""Cost of batched augmentation per op: milliseconds per (256, 3, 32, 32) batch on the chosen device.

    python scripts/bench_augment.py [cpu|cuda]
"""

from __future__ import annotations

import sys
import time

import torch

from dltool.data.augment import OPS, build_batched


def bench(ops: list, x: torch.Tensor, reps: int = 20) -> float:
    aug = build_batched(ops, {"kind": "none"}, "image")
    g = torch.Generator().manual_seed(0)
    aug(x, g)  # warm-up
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        aug(x, g)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1000


def main() -> None:
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
    x = torch.rand(256, 3, 32, 32, device=device)
    for name in OPS:
        print(f"{name:10s} {bench([{name: {'p': 1.0}}], x):8.2f} ms/batch")
    every = [{name: {"p": 1.0}} for name in OPS]
    print(f"{'all ten':10s} {bench(every, x):8.2f} ms/batch")


if __name__ == "__main__":
    main()
