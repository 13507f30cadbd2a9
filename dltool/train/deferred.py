"""Work a sweep job may leave running when it returns (its signal figures), so the next job trains meanwhile.

A single run draws its figures before `train` returns, as always. Inside a sweep (`dltool train -m`) the
figures of job N are drawn by one background thread while job N+1 trains (torch's kernels release the GIL, so
on two cores the drawing mostly overlaps the training); the sweep waits for every figure before its report,
and the process never exits before them (the thread is not a daemon). Drawing holds plots.DRAWING, so two
figures are never rendered at once by the two threads.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)

_jobs: queue.Queue = queue.Queue()
_worker: threading.Thread | None = None
_enabled = False


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
