"""Compare `dltool summary`'s totals with torchvision's published figures over its whole classification registry.

For every weight set of every model in `torchvision.models.list_models(module=torchvision.models)`: build the
model as `dltool summary` does (model=torchvision, model.small_input=false, 1000 classes, on the `meta` device, so
nothing is computed or allocated, even vit_h_14 at 518 px) at the weight set's crop size, and compare
mult-adds with weights.meta["_ops"] (GFLOPS, counted as multiply-adds) and parameters with meta["num_params"].
googlenet and inception_v3 are built without their auxiliary heads (dltool trains one output); inception_v3's
published parameter count includes its heads (googlenet's does not), so for those two a count with the heads on
(aux_logits=True) that matches is accepted and said.

    python scripts/summary_vs_torchvision.py [NAME ...]      # no names: the whole registry (a few minutes)
"""

from __future__ import annotations

import sys
import time

import torch
from torchvision import models

from dltool.config.schema import ModelConfig
from dltool.models.builder import build_model
from dltool.models.summary import totals

TOLERANCE = 0.02  # mult-adds within 2% of the published figure
AUX = {"googlenet", "inception_v3"}


def crop(weights: models.WeightsEnum) -> int:
    size = getattr(weights.transforms(), "crop_size", [224])
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def aux_params(name: str) -> int:
    """Parameters with the auxiliary heads on, as torchvision publishes them."""
    with torch.device("meta"):
        net = models.get_model_builder(name)(weights=None, aux_logits=True, init_weights=False)
    return sum(p.numel() for p in net.parameters())


def compare(name: str) -> list[tuple]:
    rows = []
    for w in models.get_model_weights(name):
        size = crop(w)
        t = totals(build_model(ModelConfig(name=name, backbone=name, small_input=False), (3, size, size), 1000,
                               device="meta"))
        gmacs, published = t["macs"] / 1e9, float(w.meta["_ops"])
        params = t["params"]
        if name in AUX and params != w.meta["num_params"] and aux_params(name) == w.meta["num_params"]:
            params = -aux_params(name)  # matches with the auxiliary heads on (negative: said in the table)
        rows.append((f"{name}:{w.name}", size, gmacs, published, gmacs / published, params, w.meta["num_params"],
                     t["params"]))
    return rows


def main(names: list[str]) -> int:
    names = names or models.list_models(module=models)
    t0, ok, total, bad = time.perf_counter(), 0, 0, []
    print(f"{'model:weights':52s} {'px':>4s} {'dltool G':>10s} {'published':>10s} {'ratio':>7s}  params")
    for name in names:
        for key, size, got, pub, ratio, params, pub_params, own in compare(name):
            fine = abs(ratio - 1) <= TOLERANCE and abs(params) == pub_params
            ok, total = ok + fine, total + 1
            note = "" if abs(params) == pub_params else f"  params {params:,} vs {pub_params:,}"
            note += f"  (published with the aux heads; dltool builds {own:,} without)" if params < 0 else ""
            print(f"{key:52s} {size:4d} {got:10.3f} {pub:10.3f} {ratio:7.4f}  {'ok' if fine else 'OFF'}{note}",
                  flush=True)
            if not fine:
                bad.append(key)
    print(f"\n{ok} of {total} weight sets ({len(names)} models) agree within {TOLERANCE:.0%} in mult-adds and exactly "
          f"in parameters; off: {', '.join(bad) or 'none'} ({time.perf_counter() - t0:.0f} s)")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
