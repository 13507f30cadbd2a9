"""scripts/bench.py's cases 6-10 (issue 22): the fixed costs around the epochs, against what a user would write.

  6  the default main job (`dltool train`, trainer.patience=null so both run every epoch) vs
     scripts/hand_main_job.py: CPU seconds (user + sys) of each whole process, and peak memory     <= 1.05x, <= 1.05x
  7  a grid sweep of 4 jobs (`dltool train -m optimizer.lr=...`, 3 epochs each) vs one process looping over
     the same 4 learning rates (hand_main_job.py --lrs ...): wall seconds                         <= 1.15x
  8  summary, evaluate, predict, export, overfit-sanity-check, gradcheck on the default run vs
     scripts/hand_small.py doing the same work: wall seconds                                      <= 1.3x or < 3 s
  9  at a terminal (a pseudo-terminal): first line after Enter (< 1 s), prompt back after the last line
     (< 0.3 s), `dltool list backbones` (< 2 s), Ctrl-C during training to exit (< 1 s, last.pt loadable)
 10  the CSV reader (data=csv, 20,000 x 10 numbers) vs np.loadtxt on the same file, in this process  <= 1.0x
 11  DDP start-up, 2 gloo ranks on the CPU (`dltool train trainer.devices=2 trainer.device=cpu`): seconds from the
     config on the terminal to the ranks' first training step (< 5 s), and from Enter to it, against one process
Every case alternates which side runs first, round by round; each figure is min / median / max over rounds.
"""

from __future__ import annotations

import datetime
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_tty import run_tty

HERE = Path(__file__).resolve().parent
LRS = "0.0003,0.001,0.003,0.01"


@dataclass
class Pair:
    """One measured pair of figures per round: dltool's and the baseline's."""

    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.theirs)]

    def spread(self, unit: str = "s") -> str:
        r = self.ratios
        return (f"dltool {fmt(self.ours, unit)}, baseline {fmt(self.theirs, unit)}; ratio min {min(r):.2f} "
                f"median {statistics.median(r):.2f} max {max(r):.2f}")


def fmt(values: list[float], unit: str) -> str:
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f} {unit}"


def env(terminal: bool = False) -> dict:
    """The environment of a measured command: one OpenMP thread; off a terminal no progress bars (as piped)."""
    e = dict(os.environ)
    if not terminal:
        e["DLTOOL_NO_PROGRESS"] = "1"
    else:
        e.pop("DLTOOL_NO_PROGRESS", None)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, float, int]:
    """(wall s, cpu s = user + sys, peak RSS MiB, exit code) of one whole process (and what it waited for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(f"  ! {' '.join(cmd)} exited {proc.returncode}: {err.strip().splitlines()[-1:] }", flush=True)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def alternate(rounds: int, ours, theirs) -> list[tuple]:
    """[(ours' result, theirs' result)] per round, alternating which side goes first."""
    out = []
    for r in range(rounds):
        a, b = (ours(r), theirs(r)) if r % 2 == 0 else tuple(reversed((theirs(r), ours(r))))
        out.append((a, b))
    return out


def dltool() -> list[str]:
    exe = shutil.which("dltool")
    return [exe] if exe else [sys.executable, "-m", "dltool"]


def case6(rounds: int, epochs: int, tmp: Path) -> tuple[Pair, Pair]:
    def ours(r: int) -> tuple:
        return measure([*dltool(), "train", f"trainer.epochs={epochs}", "trainer.patience=null",
                        f"hydra.run.dir={tmp / f'd{r}'}"], tmp)

    def theirs(r: int) -> tuple:
        return measure([sys.executable, str(HERE / "hand_main_job.py"), str(tmp / f"h{r}"), "--epochs", str(epochs)],
                       tmp)

    got = alternate(rounds, ours, theirs)
    return Pair([a[1] for a, _ in got], [b[1] for _, b in got]), Pair([a[2] for a, _ in got], [b[2] for _, b in got])


def case7(rounds: int, epochs: int, tmp: Path) -> Pair:
    def ours(r: int) -> float:
        return measure([*dltool(), "train", "-m", f"optimizer.lr={LRS}", f"trainer.epochs={epochs}",
                        "trainer.patience=null", f"hydra.sweep.dir={tmp / f'sweep{r}'}"], tmp)[0]

    def theirs(r: int) -> float:
        return measure([sys.executable, str(HERE / "hand_main_job.py"), str(tmp / f"hsweep{r}"), "--epochs",
                        str(epochs), "--lrs", LRS], tmp)[0]

    got = alternate(rounds, ours, theirs)
    return Pair([a for a, _ in got], [b for _, b in got])


SMALL = ("summary", "evaluate", "predict", "export", "overfit-sanity-check", "gradcheck")


def small_runs(tmp: Path, epochs: int) -> tuple[Path, Path, Path]:
    """A default dltool run, a hand run and a .npy of 5 test-set digits for predict."""
    run, hand = tmp / "default_run", tmp / "hand_run"
    measure([*dltool(), "train", f"trainer.epochs={epochs}", f"hydra.run.dir={run}"], tmp)
    measure([sys.executable, str(HERE / "hand_main_job.py"), str(hand), "--epochs", str(epochs)], tmp)
    from sklearn.datasets import load_digits

    examples = tmp / "digits5.npy"
    np.save(examples, (load_digits().images[:5, None] / 16.0).astype(np.float32))
    return run, hand, examples


def case8(rounds: int, epochs: int, tmp: Path) -> dict[str, Pair]:
    run, hand, examples = small_runs(tmp, epochs)
    args = {"summary": ([], []), "evaluate": ([run], [hand]), "predict": ([run, examples], [hand, examples]),
            "export": ([run], [hand]), "overfit-sanity-check": ([], []), "gradcheck": ([], [])}
    out = {}
    for name in SMALL:
        ours_args, their_args = args[name]
        got = alternate(rounds, lambda r: measure([*dltool(), name, *map(str, ours_args)], tmp)[0],
                        lambda r: measure([sys.executable, str(HERE / "hand_small.py"), name,
                                           *map(str, their_args)], tmp)[0])
        out[name] = Pair([a for a, _ in got], [b for _, b in got])
    return out


@dataclass
class Terminal:
    first: list[float] = field(default_factory=list)  # seconds to the first line of `dltool train`
    tail: list[float] = field(default_factory=list)  # last line -> exit, `dltool train`
    listing: list[float] = field(default_factory=list)  # `dltool list backbones`, wall
    interrupt: list[float] = field(default_factory=list)  # Ctrl-C -> exit
    last_ok: list[bool] = field(default_factory=list)
    figures: list[float] = field(default_factory=list)  # Ctrl-C -> every figure of the epochs run in the run dir


def case9(rounds: int, tmp: Path) -> Terminal:
    t = Terminal()
    for r in range(rounds):
        got = run_tty([*dltool(), "train", "trainer.epochs=1", f"hydra.run.dir={tmp / f'tty{r}'}"], str(tmp), env(True))
        t.first.append(got.first)
        t.tail.append(got.tail)
        t.listing.append(run_tty([*dltool(), "list", "backbones"], str(tmp), env(True)).exit)
        secs, ok, figures = interrupt(tmp / f"int{r}", tmp)
        t.interrupt.append(secs)
        t.last_ok.append(ok)
        t.figures.append(figures)
    return t


FIGURES = ("curves.png", "update_ratios.png", "histograms.png", "filters.png")


def interrupt(run: Path, cwd: Path) -> tuple[float, bool, float]:
    """Start a 200-epoch run, send SIGINT (Ctrl-C) once last.pt exists: seconds to exit, last.pt loadable, and
    seconds until every figure of the epochs run is in the run dir (drawn by a child after the exit; nan: never)."""
    import torch

    proc = subprocess.Popen([*dltool(), "train", "trainer.epochs=200", f"hydra.run.dir={run}"], cwd=cwd, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    start, sent = time.perf_counter(), time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait()
    secs = time.perf_counter() - start
    try:
        ok = isinstance(torch.load(last, weights_only=True), dict)
    except Exception:  # noqa: BLE001 - any failure to load is "not safe"
        ok = False
    figures = math.nan
    while time.perf_counter() - start < 60:
        if all((run / f).exists() and (run / f).stat().st_mtime >= sent - 0.01 for f in FIGURES):
            figures = time.perf_counter() - start
            break
        time.sleep(0.02)
    return secs, ok, figures


def stamp(line: str) -> float:
    """The time of a train.log line ('[2026-12-03 23:34:52,798][...'), as time.time() counts."""
    return datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first_step(cmd: list[str], run: Path, cwd: Path) -> tuple[float, float]:
    """Run `dltool train` piped: seconds from the start to the config tree on stdout and to the first training step
    (train.log's 'run NAME in RUN_DIR' line, written right before fit: under DDP after every rank has joined the
    DDP model, a collective)."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    config = math.nan
    for line in proc.stdout:
        if math.isnan(config) and line.startswith("config ("):
            config = time.time() - start
    proc.wait()
    lines = [ln for ln in (run / "train.log").read_text().splitlines() if "] - run " in ln or "][INFO] run " in ln]
    return config, (stamp(lines[0]) - start if lines else math.nan)


@dataclass
class Startup:
    config: list[float] = field(default_factory=list)  # DDP: Enter -> the config tree on the terminal
    ddp: list[float] = field(default_factory=list)  # DDP: Enter -> the first training step
    one: list[float] = field(default_factory=list)  # one process: Enter -> the first training step

    @property
    def after_config(self) -> list[float]:
        return [d - c for d, c in zip(self.ddp, self.config)]


def case11(rounds: int, tmp: Path) -> Startup:
    """2 gloo ranks on the CPU vs one process, one epoch each, alternating which goes first."""
    s = Startup()
    for r in range(rounds):
        def ddp() -> None:
            run = tmp / f"ddp{r}"
            c, d = first_step([*dltool(), "train", "trainer.devices=2", "trainer.device=cpu", "trainer.epochs=1",
                               f"hydra.run.dir={run}"], run, tmp)
            s.config.append(c)
            s.ddp.append(d)

        def one() -> None:
            run = tmp / f"one{r}"
            s.one.append(first_step([*dltool(), "train", "trainer.epochs=1", f"hydra.run.dir={run}"], run, tmp)[1])

        for side in ((ddp, one) if r % 2 == 0 else (one, ddp)):
            side()
    return s


def write_table_csv(path: Path, rows: int = 20000, cols: int = 9) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(rows, cols)), rng.integers(0, 3, rows)
    with open(path, "w") as f:
        f.write(",".join([f"f{i}" for i in range(cols)] + ["label"]) + "\n")
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")


def case10(rounds: int, tmp: Path) -> Pair:
    from dltool.config.compose import train_config
    from dltool.data.datasets.table import load_csv

    path = tmp / "table.csv"
    write_table_csv(path)
    cfg = train_config(["data=csv", f"data.path={path}", "data.label=label"]).data

    def ours(r: int) -> float:
        start = time.perf_counter()
        load_csv(cfg)
        return time.perf_counter() - start

    def theirs(r: int) -> float:
        start = time.perf_counter()
        np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
        return time.perf_counter() - start

    got = alternate(rounds, ours, theirs)
    return Pair([a for a, _ in got], [b for _, b in got])


def suite_seconds(rounds: int, marker: str | None) -> list[float]:
    """Wall seconds of the test suite (or the tier `-m marker`) run as CI runs it, on 2 xdist workers."""
    tier = ["-m", marker] if marker else []
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *tier]
    return [measure(cmd, HERE.parent)[0] for _ in range(rounds)]
