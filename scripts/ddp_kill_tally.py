"""Kill -9 + resume under DDP, N times: how many resumed runs equal the uninterrupted run bitwise (issue 19).

2 gloo ranks on CPU, an MLP with dropout 0.5, 4 epochs. Each round starts the run in its own session, sends
SIGKILL to the whole session (parent and ranks) at a point after last.pt reached an epoch, resumes it with
`dltool train resume=RUN` and compares every weight tensor with the uninterrupted run's.

    PYTHONPATH=. python scripts/ddp_kill_tally.py          # prints one line per kill point and the tally
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from tests.test_ddp_resume import DROPOUT, EPOCHS, kill_during, resume, train, weights

POINTS = [(1, 0.0), (1, 0.15), (2, 0.0), (2, 0.1), (3, 0.05)]  # (epoch in last.pt, then seconds) before SIGKILL


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="ddp_kill_tally_"))
    os.chdir(root)
    train(root / "whole", *DROPOUT, f"trainer.epochs={EPOCHS}")
    same_count = 0
    for i, (after, delay) in enumerate(POINTS):
        run = root / f"cut{i}"
        at = kill_during(run, after, delay, root)
        resume(run)
        a, b = weights(root / "whole"), weights(run)
        same = all(torch.equal(a[k], b[k]) for k in a)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        same_count += same
        print(f"kill after epoch {after} +{delay}s (last.pt at epoch {at}): bitwise={same} max|diff|={diff:.3g}",
              flush=True)
    print(f"TALLY {same_count} of {len(POINTS)} bitwise (run dirs in {root})", flush=True)


if __name__ == "__main__":  # the ranks are spawned: they import this module
    main()
