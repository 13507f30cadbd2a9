"""Full-batch training of the spiral MLP: dltool's step-based trainer vs a hand-written loop, same process.

Both run the same model (same initial weights) on the same in-memory training split for the same number
of full-batch Adam steps, and validate every `--val-every` steps. dltool's time is the whole `train` call
(run dir, metrics.csv, best/last checkpoints at each validation point, curves.png, the final test pass);
rounds alternate which loop goes first, and the median ratio is reported (the machine may be shared).

    python scripts/bench_spiral.py [--steps 10000] [--val-every 1000] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from dltool.config.compose import config_dir
from dltool.config.schema import register_schemas, validate
from dltool.train.run import prepare, train


def hand_written(model, data, steps: int, val_every: int, lr: float) -> float:
    """What a PyTorch user writes for full-batch gradient descent with a validation pass every val_every steps."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y, vx, vy = data.train.x, data.train.y, data.val.x, data.val.y
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if step % val_every == 0:
            model.eval()
            with torch.no_grad():
                out = model(vx)
                val_loss, val_acc = F.cross_entropy(out, vy).item(), (out.argmax(1) == vy).float().mean().item()
            print(f"  hand step {step}: train_loss {loss.item():.4f} val_loss {val_loss:.4f} val_acc {val_acc:.3f}") \
                if step == steps else None
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--val-every", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    register_schemas()
    overrides = ["experiment=spiral_mlp", f"trainer.max_steps={args.steps}", f"trainer.val_every={args.val_every}",
                 "trainer.batch_size=100000", "trainer.device=cpu", "trainer.progress=false"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = validate(compose("train", overrides=overrides))
    ours, theirs, ratios = [], [], []
    for r in range(args.rounds):
        p = prepare(cfg)
        model = copy.deepcopy(p.setup.model)
        times: dict[str, float] = {}

        def run_ours() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                s = train(cfg, tmp, prepared=p)
                times["ours"] = time.perf_counter() - t0
            if r == 0:
                print(f"  dltool: {s['steps_run']} steps, best train_loss {s['best_value']:.4f}, "
                      f"test_acc {s.get('test_acc', float('nan')):.3f}")

        def run_theirs() -> None:
            times["hand"] = hand_written(model, p.data, args.steps, args.val_every, cfg.optimizer.lr)

        for run in ((run_ours, run_theirs) if r % 2 == 0 else (run_theirs, run_ours)):
            run()
        ours.append(times["ours"])
        theirs.append(times["hand"])
        ratios.append(times["ours"] / times["hand"])
        print(f"round {r + 1}: dltool {times['ours']:.2f}s  hand-written {times['hand']:.2f}s  "
              f"ratio {ratios[-1]:.3f}x")
    print(f"spiral_mlp full batch ({len(p.data.train)} points), {args.steps} steps, validation every "
          f"{args.val_every}, threads={args.threads}")
    print(f"dltool trainer : {statistics.median(ours):.2f}s median ({min(ours):.2f}s fastest)")
    print(f"hand-written   : {statistics.median(theirs):.2f}s median ({min(theirs):.2f}s fastest)")
    print(f"ratio          : {statistics.median(ratios):.3f}x median of {args.rounds} alternating rounds "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.5x)")


if __name__ == "__main__":
    main()
