"""Preemption: SIGTERM and SIGUSR1 (and, under submitit, its requeue signal) end a run cleanly.

The handler only records the signal. The loop checks the record after each optimizer step (never inside
one), writes last.pt with the position inside the interval (batches done, the running loss sums, the
batch stream's place), and train() raises `Preempted`. The CLI turns that into one line naming the resume
command and exit status PREEMPTED; a submitit job instead hands over to submitit's own requeue handler.

Exit status 75 is sysexits.h's EX_TEMPFAIL ("temporary failure; the user is invited to retry"): it differs
from 1 (failure), 2 (config mistake), 130 (Ctrl-C) and 143 (what a shell reports for a process killed by
SIGTERM before it could save), so a script can tell "saved, run it again" from every other ending.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

PREEMPTED = 75  # sysexits.h EX_TEMPFAIL
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
RECORD = "preempted.json"  # in the run dir while a preempted run waits for its resume


def submitit_signal() -> signal.Signals | None:
    """The signal submitit's job process requeues on (SUBMITIT_PREEMPT_SIGNAL, USR2 by default), inside a job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


class Preempted(Exception):
    """Training stopped on a signal after writing last.pt; `requeue` is submitit's handler when it should run."""

    def __init__(self, signum: int, run_dir: Path, requeue: Callable | None = None) -> None:
        self.signum, self.run_dir, self.requeue = signum, Path(run_dir), requeue
        super().__init__(f"preempted by {self.name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class Preemption:
    """Records the first of SIGNALS (plus submitit's signal) while installed; `requested()` is the loop's check."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread; a worker thread is never signalled
        extra = submitit_signal()
        for sig in SIGNALS + ((extra,) if extra is not None and extra not in SIGNALS else ()):
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None

    def requeue_handler(self) -> Callable | None:
        """submitit's own handler for its signal (it calls the job's checkpoint() and requeues it), if that came."""
        handler = self.previous.get(self.signum) if self.signum == submitit_signal() else None
        return handler if callable(handler) else None


def record(run_dir: Path, signum: int, epoch: int, batches: int) -> None:
    """Append this preemption to RUN_DIR/preempted.json (plain JSON; finish() moves it into summary.json)."""
    path = Path(run_dir) / RECORD
    past = read_records(run_dir)
    past.append({"signal": signal.Signals(signum).name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "epochs_done": epoch, "batches_into_next": batches})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(past, indent=2))
    tmp.replace(path)


def read_records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / RECORD
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def requeued(run_dir: Path) -> bool:
    """A submitit job started again after a preemption: its run dir holds last.pt and the preemption record."""
    run_dir = Path(run_dir)
    return bool(os.environ.get("SUBMITIT_EXECUTOR")) and (run_dir / RECORD).is_file() \
        and (run_dir / "checkpoints" / "last.pt").is_file()
