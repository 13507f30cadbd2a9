"""Work a sweep job may leave running when it returns (its signal figures), so the next job trains meanwhile.

A single run draws its figures before `train` returns, as always. Inside a sweep (`dltool train -m`) the
figures of job N are drawn by one background thread while job N+1 trains (torch's kernels release the GIL, so
on two cores the drawing mostly overlaps the training); the sweep waits for every figure before its report,
and the process never exits before them (the thread is not a daemon). Drawing holds plots.DRAWING, so two
figures are never rendered at once by the two threads.

After Ctrl-C the figures of the epochs run are still drawn (`after_exit`), but off the exit path: the console
script (`detach_at_exit`) hands them to a child process forked as it exits (`run_detached`), so the prompt comes
back at once and the figures land in the run dir about half a second later. Everywhere else (Python callers,
in-process tests, a platform without fork) they are drawn at once, before the exception propagates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
from typing import Callable

log = logging.getLogger(__name__)

_jobs: queue.Queue = queue.Queue()
_worker: threading.Thread | None = None
_enabled = False
_detach = False  # the console script: after_exit work runs in a child that outlives the process
_after_exit: list[Callable[[], None]] = []


def enable(on: bool) -> None:
    """Turn deferral on (a sweep's jobs) or off (waiting for what is queued first)."""
    global _enabled
    if not on:
        wait()
    _enabled = on


def run_later(fn: Callable[[], None]) -> None:
    """fn() now, or (inside a sweep) on the background thread, in submission order."""
    global _worker
    if not _enabled:
        fn()
        return
    if _worker is None or not _worker.is_alive():
        _worker = threading.Thread(target=_drain, name="dltool-figures", daemon=False)
        _worker.start()
    _jobs.put(fn)


def _drain() -> None:
    while True:
        fn = _jobs.get()
        try:
            if fn is None:
                return
            fn()
        except Exception:  # noqa: BLE001 - a figure must never cost the run (nor the sweep)
            log.warning("could not draw a figure", exc_info=True)
        finally:
            _jobs.task_done()


def wait() -> None:
    """Block until every queued figure is written, then let the worker end."""
    global _worker
    if _worker is not None and _worker.is_alive():
        _jobs.put(None)
        _worker.join()
    _worker = None


def detach_at_exit(on: bool = True) -> None:
    """The console script: work queued with after_exit runs after the process has exited (see run_detached)."""
    global _detach
    _detach = on and hasattr(os, "fork")


def detaching() -> bool:
    return _detach


def after_exit(fn: Callable[[], None]) -> None:
    """fn() now, or (the console script) in the child that run_detached forks as the process exits."""
    if not _detach:
        fn()
        return
    _after_exit.append(fn)


def run_detached() -> int | None:
    """Fork a child, in its own session with stdin/stdout/stderr on /dev/null (a caller reading the pipes sees
    them close when this process exits), that runs the work queued by after_exit in order and leaves without the
    interpreter's teardown; this process goes on at once. The child's pid, or None when nothing was queued."""
    if not _after_exit:
        return None
    wait()  # a sweep's figure thread done first: no other thread holds plots.DRAWING in the child
    jobs = list(_after_exit)
    _after_exit.clear()
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: the process exits through os._exit below, whatever happens
        os.setsid()  # a later Ctrl-C or hang-up at the terminal is not for it
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        for fn in jobs:
            try:
                fn()
            except Exception:  # noqa: BLE001 - one figure's failure must not cost the others
                log.warning("could not draw a figure after the interrupt", exc_info=True)
    finally:
        os._exit(0)
