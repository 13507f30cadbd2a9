"""dltool's speed suite: each case measures dltool against its baseline in one run, alternating rounds (medians).

    python scripts/bench.py                       # cases 1-12, CPU (13, the whole test suite: --cases 13)
    python scripts/bench.py --cases 1,2 --rounds 3
    python scripts/bench.py --quick               # tiny sizes: a smoke test (the test suite runs this)
    python scripts/bench.py --device cuda         # cases 1-4 on a GPU: data on the device, trainer.precision=bf16
    python scripts/bench.py --cases 1 --variants  # case 1 also with trainer.channels_last and trainer.compile

Cases (ratio = dltool / baseline unless said otherwise):
  1  digits CNN (configs/model/cnn_digits.yaml), per-epoch time vs a hand-written loop          target <= 1.05x
  2  MNIST-size: 60,000 + 10,000 generated 28x28 images as real IDX files through data=mnist,
     LeNet, per-epoch time vs a hand loop over the same tensors                                target <= 1.05x
  3  20,000 generated 32x32 PNGs in class folders through data=imagefolder vs torchvision
     ImageFolder + DataLoader (same workers, same transforms): images/s ratio (dltool / theirs)  target >= 1.0x
     3b: data.cache=true epochs after the first vs data.on_device=true (in memory): time ratio
  4  a default lightning.Trainer on case 1's model, data and validation: Lightning / dltool     target >= 1.9x
  5  start-up: `dltool train trainer.epochs=1` wall time minus its epoch vs a hand script
     (import torch, build the model, train one epoch, save): the difference                    target <= +1.0 s
  6-11 the fixed costs of issue 22 (main job, sweep, small commands, terminal, CSV, DDP start-up): see
     scripts/bench_fixed.py
  12 the default test tier's wall time on 2 workers                                             target < 60 s
  13 the whole test suite's wall time on 2 workers (~15 min a round; not in the default --cases)  target < 8 min
Every per-epoch time drops each run's first (warm-up) epoch. Ends with a Markdown table for README's Speed section.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_overhead, bench_cases beside this file

import bench_cases as bc  # noqa: E402
import bench_fixed as bf  # noqa: E402
import bench_overhead as bo  # noqa: E402


@dataclass
class Row:
    case: str
    what: str
    ours: str  # dltool's figure, with its unit
    theirs: str  # the baseline's
    ratio: float
    target: str
    met: bool
    spread: str = ""


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    now = datetime.datetime.now(datetime.timezone.utc)
    return (f"CPU {cpu}, {cores} cores usable, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}{gpu}; {now:%Y-%m-%d %H:%M} UTC")


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.1f} ms/epoch"


def spread(res: bo.Rounds) -> str:
    return f"rounds {min(res.ratios):.3f}-{max(res.ratios):.3f}" if len(res.ratios) > 1 else "1 round"


def device_overrides(args) -> list[str]:
    if args.device == "cuda":
        return ["trainer.device=cuda", "trainer.precision=bf16", "data.on_device=true"]
    return ["trainer.device=cpu"]


def case1(args, extra: list[str] = (), label: str = "1", what: str = "digits CNN per epoch vs hand loop") -> Row:
    epochs = 3 if args.quick else args.epochs
    cfg = bo.compose_cfg(["model=cnn_digits", f"trainer.epochs={epochs}", *bo.BASE, *device_overrides(args), *extra])
    res = bo.overhead_rounds(cfg, args.rounds, epochs)
    return Row(label, what, ms(res.ours), ms(res.theirs), res.ratio, "<= 1.05x", res.ratio <= 1.05, spread(res))


def case2(args, tmp: Path) -> Row:
    n_train, n_test = (2000, 500) if args.quick else (60000, 10000)
    root = bc.write_mnist(tmp / "mnist", n_train, n_test)
    cfg = bo.compose_cfg(["data=mnist", f"data.root={root}", "data.download=false", "model=lenet", "trainer.epochs=2",
                          *bo.BASE, *device_overrides(args)])
    res = bo.overhead_rounds(cfg, args.rounds, 2)
    return Row("2", f"MNIST-size ({n_train:,}+{n_test:,} IDX), LeNet, per epoch vs hand loop", ms(res.ours),
               ms(res.theirs), res.ratio, "<= 1.05x", res.ratio <= 1.05, spread(res))


def case3(args, tmp: Path) -> list[Row]:
    n = 600 if args.quick else 20000
    root = bc.write_folder(tmp / "folder", n)
    workers = args.workers
    folder = ["data=imagefolder", f"data.root={root}", f"data.num_workers={workers}", "data.normalize=none",
              "data.val_fraction=0", "data.test_fraction=0", "trainer.monitor=train_loss", "model=lenet", *bo.BASE,
              *[o for o in device_overrides(args) if not o.startswith("data.")]]
    epochs, clock, bo.CLOCK = 3, bo.CLOCK, time.perf_counter  # worker processes: only wall time sees their work
    cfg = bo.compose_cfg([*folder, f"trainer.epochs={epochs}"])
    res = bc.folder_rounds(cfg, root, args.rounds, epochs, workers)
    ours, theirs = n / statistics.median(res.ours), n / statistics.median(res.theirs)
    ratio = ours / theirs  # images/s: higher is better for dltool
    rows = [Row("3", f"{n:,} PNGs 32x32, data=imagefolder vs ImageFolder+DataLoader ({workers} workers), images/s",
                f"{ours:,.0f} img/s", f"{theirs:,.0f} img/s", ratio, ">= 1.0x", ratio >= 1.0,
                f"rounds {min(1 / r for r in res.ratios):.3f}-{max(1 / r for r in res.ratios):.3f}")]
    cached = bo.compose_cfg([*folder, f"trainer.epochs={epochs}", "data.cache=true"])
    memory = bo.compose_cfg([*folder, f"trainer.epochs={epochs}", "data.on_device=true"])
    res = bc.cache_rounds(cached, memory, args.rounds)
    bo.CLOCK = clock
    rows.append(Row("3b", "data.cache=true epochs after the first vs data.on_device=true (in memory)", ms(res.ours),
                    ms(res.theirs), res.ratio, "~1.0x", res.ratio <= 1.10, spread(res)))
    return rows


def case4(args) -> Row | str:
    if not bc.lightning_available():
        return ("case 4 skipped: lightning is not importable here (it is never a dltool dependency); install it for "
                "the benchmark only with `pip install --no-deps lightning lightning-utilities torchmetrics`.")
    epochs = 3 if args.quick else args.epochs
    cfg = bo.compose_cfg(["model=cnn_digits", f"trainer.epochs={epochs}", *bo.BASE, *device_overrides(args)])
    res = bc.lightning_rounds(cfg, args.rounds, epochs)
    faster = 1 / res.ratio  # Lightning / dltool
    return Row("4", "default lightning.Trainer / dltool, case 1's model, data and validation", ms(res.ours),
               ms(res.theirs), faster, ">= 1.9x", faster >= 1.9,
               f"rounds {min(1 / r for r in res.ratios):.3f}-{max(1 / r for r in res.ratios):.3f}")


def case5(args) -> Row:
    res = bc.startup_rounds(args.rounds, [])
    diff = bc.difference(res)
    return Row("5", "start-up: `dltool train trainer.epochs=1` minus its epoch vs a hand script",
               f"{statistics.median(res.ours):.2f} s", f"{statistics.median(res.theirs):.2f} s", res.ratio,
               "<= +1.0 s", diff <= 1.0, f"difference {diff:+.2f} s")


def ratio_row(case: str, what: str, pair: bf.Pair, target: float, unit: str = "s",
              absolute: float | None = None) -> Row:
    """A Row from alternating pairs: the median ratio, met when <= target (or, with absolute, dltool's median
    figure under that many seconds)."""
    ours, theirs, ratio = statistics.median(pair.ours), statistics.median(pair.theirs), statistics.median(pair.ratios)
    met = ratio <= target or (absolute is not None and ours < absolute)
    goal = f"<= {target:.2f}x" + (f" or < {absolute:g} s" if absolute is not None else "")
    return Row(case, what, f"{ours:.2f} {unit}", f"{theirs:.2f} {unit}", ratio, goal, met,
               f"ratio min {min(pair.ratios):.2f} median {ratio:.2f} max {max(pair.ratios):.2f}; "
               f"dltool {bf.fmt(pair.ours, unit)}, baseline {bf.fmt(pair.theirs, unit)}")


def seconds_row(case: str, what: str, values: list[float], limit: float) -> Row:
    """An absolute target (seconds): the 'ratio' is the median over the limit."""
    med = statistics.median(values)
    return Row(case, what, f"{med:.2f} s", "-", med / limit, f"< {limit:g} s", med < limit,
               f"min {min(values):.2f} median {med:.2f} max {max(values):.2f} s")


def cases6to13(case: str, args, tmp: Path) -> list[Row]:
    rounds = args.rounds
    if case == "6":
        epochs = 2 if args.quick else 30
        cpu, mem = bf.case6(rounds, epochs, tmp)
        return [ratio_row("6", f"main job ({epochs} epochs) CPU time vs scripts/hand_main_job.py", cpu, 1.05),
                ratio_row("6m", "main job peak memory (RSS) vs the hand script", mem, 1.05, "MiB")]
    if case == "7":
        return [ratio_row("7", f"grid sweep, 4 jobs x {1 if args.quick else 3} epochs, wall vs a hand for-loop",
                          bf.case7(rounds, 1 if args.quick else 3, tmp), 1.15)]
    if case == "8":
        pairs = bf.case8(rounds, 1 if args.quick else 30, tmp)
        return [ratio_row("8", f"`dltool {name}` vs a hand script, wall", pair, 1.3, absolute=3.0)
                for name, pair in pairs.items()]
    if case == "9":
        t = bf.case9(rounds, tmp)
        return [seconds_row("9a", "`dltool train`: first line on the terminal after Enter", t.first, 1.0),
                seconds_row("9b", "`dltool train`: prompt back after the last line", t.tail, 0.3),
                seconds_row("9c", "`dltool list backbones`, wall", t.listing, 2.0),
                seconds_row("9d", f"Ctrl-C during training to exit (last.pt loadable: {all(t.last_ok)}; the "
                                  f"figures of the epochs run written {statistics.median(t.figures):.2f} s after the "
                                  f"signal, by a child after the exit)", t.interrupt, 1.0)]
    if case == "10":
        return [ratio_row("10", "CSV reader (data=csv, 20,000 x 10) vs np.loadtxt, in process", bf.case10(
            max(rounds, 5), tmp), 1.0)]
    if case == "11":
        s = bf.case11(rounds, tmp)
        ratios = [d / o for d, o in zip(s.ddp, s.one)]
        return [seconds_row("11", "DDP, 2 gloo ranks on the CPU: config on the terminal to the first training step",
                            s.after_config, 5.0),
                Row("11a", "DDP, 2 gloo ranks: Enter to the first training step, vs one process",
                    f"{statistics.median(s.ddp):.2f} s", f"{statistics.median(s.one):.2f} s", statistics.median(ratios),
                    "-", True, f"DDP {bf.fmt(s.ddp, 's')}, one process {bf.fmt(s.one, 's')}; ratio min "
                    f"{min(ratios):.2f} median {statistics.median(ratios):.2f} max {max(ratios):.2f}")]
    if case in ("12", "13") and args.quick:  # the slow test suite runs --quick: not the suite inside itself
        print(f"case {case} (the test suite's own time) is left out with --quick.", flush=True)
        return []
    if case == "12":
        return [seconds_row("12", "default test tier (`pytest -q -m 'not slow' -n 2`), wall",
                            bf.suite_seconds(rounds, "not slow"), 60.0)]
    if case == "13":
        return [seconds_row("13", "whole test suite (`pytest -q -n 2`), wall", bf.suite_seconds(rounds, None), 480.0)]
    raise SystemExit(f"--cases: unknown case {case!r}; valid: 1-13.")


def show(row: Row) -> None:
    print(f"case {row.case} {row.what}: dltool {row.ours}, baseline {row.theirs}: ratio {row.ratio:.3f}x "
          f"({row.spread}; target {row.target}: {'met' if row.met else 'NOT met'})", flush=True)


def table(rows: list[Row]) -> str:
    lines = ["| case | what | dltool | baseline | ratio | target |", "|---|---|---|---|---|---|"]
    for r in rows:
        seconds = r.case == "5" or r.case.startswith(("9", "11", "12", "13"))
        figure = r.spread if seconds else f"{r.ratio:.2f}x ({r.spread})"
        lines.append(f"| {r.case} | {r.what} | {r.ours} | {r.theirs} | {figure} | {r.target} "
                     f"{'(met)' if r.met else '(not met)'} |")
    return "\n".join(lines)


def run_cases(args, tmp: Path) -> list[Row]:
    rows: list[Row] = []
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    for case in wanted:
        if case == "1":
            rows.append(case1(args))
            if args.variants:
                rows.append(case1(args, ["trainer.channels_last=true"], "1c", "case 1 with trainer.channels_last"))
                rows.append(case1(args, ["trainer.compile=true"], "1t", "case 1 with trainer.compile"))
        elif case == "2":
            rows.append(case2(args, tmp))
        elif case == "3":
            rows += case3(args, tmp)
        elif case == "4":
            got = case4(args)
            if isinstance(got, str):
                print(got, flush=True)
                continue
            rows.append(got)
        elif case == "5" and args.device == "cpu":
            rows.append(case5(args))
        elif case == "5":
            print("case 5 runs on the CPU only (start-up does not depend on the device); left out with --device cuda.")
        else:
            got = cases6to13(case, args, tmp)
            rows += got
            for row in got:
                show(row)
            continue
        for row in rows[-(3 if case == "1" and args.variants else 2 if case == "3" else 1):]:
            show(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="1,2,3,4,5,6,7,8,9,10,11,12",
                    help="comma-separated case numbers 1-11 (default: all; 11: DDP start-up, 2 CPU ranks)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case (medians over them)")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per run in cases 1 and 4 (first one dropped)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that every case runs, figures meaningless")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers in case 3 (both sides)")
    ap.add_argument("--variants", action="store_true", help="case 1 also with channels_last and compile")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None,
                    help="cases 1, 2, 4 (one process): cpu = CPU time of this process, steadier on a shared machine "
                         "(default on --device cpu); wall = elapsed time (default on cuda). Cases 3, 5: always wall")
    args = ap.parse_args()
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    bo.CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here.")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"dltool speed suite: {machine()}", flush=True)
    print(f"device {args.device}, rounds {args.rounds}, clock {args.clock} (cases 1, 2, 4; cases 3, 5: wall)"
          f"{', quick sizes' if args.quick else ''}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dltool-bench-") as tmp:
        rows = run_cases(args, Path(tmp))
    print()
    print(table(rows))
    if any(not math.isfinite(r.ratio) for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
