"""EMA, SWA, MixUp and CutMix against the default digits run (the numbers in README "The recipe").

usage: python scripts/knobs_digits.py [--seeds 0 1] [--out outputs/knobs] [--cifar-fake DIR] [KEY=VALUE ...]
Runs `dltool train`'s default config (cnn_digits, 30 epochs) once per variant and seed, in this process, and
prints the test accuracy (best.pt, or the averaged weights) and the run time of each. --cifar-fake DIR first
writes the tests' generated CIFAR-10-format images (tests/fakedata.py: 1,000 train, 400 test, 32x32x3) there and
trains on them (data=cifar10 data.root=DIR); KEY=VALUE overrides go to every run (e.g. model=lenet).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from dltool.config.compose import compose
from dltool.config.schema import register_schemas, validate
from dltool.train.run import train
from tests.fakedata import write_cifar10

VARIANTS = {
    "default": [],
    "ema 0.99": ["trainer.ema_decay=0.99"],
    "swa": [],  # trainer.swa_start=--swa-start
    "mixup 0.2": ["augment.mixup_alpha=0.2"],
    "cutmix 1.0": ["augment.cutmix_alpha=1.0"],
}
QUIET = ["trainer.device=cpu", "trainer.progress=false", "trainer.loggers=[csv]", "trainer.diagnostics=false"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="outputs/knobs")
    ap.add_argument("--cifar-fake", default=None)
    ap.add_argument("--swa-start", type=int, default=21)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    register_schemas()
    extra_all = list(a.overrides)
    if a.cifar_fake:
        write_cifar10(Path(a.cifar_fake), n_per_batch=200, n_test=400)
        extra_all += ["data=cifar10", f"data.root={a.cifar_fake}", "data.download=false"]
    rows = {}
    for name, extra in VARIANTS.items():
        accs, secs = [], []
        extra = [f"trainer.swa_start={a.swa_start}"] if name == "swa" else extra
        for seed in a.seeds:
            cfg = validate(compose("train", None, [*QUIET, *extra_all, *extra, f"trainer.seed={seed}"]))
            s = train(cfg, Path(a.out) / f"{name.replace(' ', '_')}_s{seed}")
            accs.append(s["test_acc"])
            secs.append(s["seconds"])
            print(f"{name:20s} seed {seed}: test_acc {s['test_acc']:.4f}  ({s['seconds']:.0f} s; {s['tested']})",
                  flush=True)
        rows[name] = {"test_acc": accs, "mean": statistics.mean(accs), "seconds": secs}
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
