"""EMA, SWA, MixUp and CutMix against the default digits run (the numbers in README "The recipe").

usage: python scripts/knobs_digits.py [--seeds 0 1] [--out outputs/knobs]
Runs `dltool train`'s default config (cnn_digits, 30 epochs) once per variant and seed, in this process, and
prints the test accuracy (best.pt, or the averaged weights) and the run time of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from dltool.config.compose import compose
from dltool.config.schema import register_schemas, validate
from dltool.train.run import train

VARIANTS = {
    "default": [],
    "ema 0.99": ["trainer.ema_decay=0.99"],
    "swa from epoch 21": ["trainer.swa_start=21"],
    "mixup 0.2": ["augment.mixup_alpha=0.2"],
    "cutmix 1.0": ["augment.cutmix_alpha=1.0"],
}
QUIET = ["trainer.device=cpu", "trainer.progress=false", "trainer.loggers=[csv]", "trainer.diagnostics=false"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="outputs/knobs")
    a = ap.parse_args()
    register_schemas()
    rows = {}
    for name, extra in VARIANTS.items():
        accs, secs = [], []
        for seed in a.seeds:
            cfg = validate(compose("train", None, [*QUIET, *extra, f"trainer.seed={seed}"]))
            s = train(cfg, Path(a.out) / f"{name.replace(' ', '_')}_s{seed}")
            accs.append(s["test_acc"])
            secs.append(s["seconds"])
            print(f"{name:20s} seed {seed}: test_acc {s['test_acc']:.4f}  ({s['seconds']:.0f} s; {s['tested']})",
                  flush=True)
        rows[name] = {"test_acc": accs, "mean": statistics.mean(accs), "seconds": secs}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
