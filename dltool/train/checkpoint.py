"""Checkpoints are plain data written atomically (temp file + rename) and loaded with weights_only=True."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from dltool.errors import ConfigError


def save(obj: dict[str, Any], path: str | Path) -> None:
    """Write obj to path so that a crash mid-write never leaves a half-written file in its place.

    Temp file in the same directory + os.replace (atomic on POSIX and Windows). No fsync: it costs ~6 ms per
    file here (5-10% of a small epoch) and only guards against power loss, not a killed process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with uninterrupted(), os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.close()
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C during a checkpoint write takes effect once the file is written: KeyboardInterrupt raised inside
    torch.save's zip writer left a RuntimeError ("unexpected pos") and a traceback instead of dltool's Ctrl-C
    ending. Only where Python's own SIGINT handler is installed (the main thread; a handler of the caller's stays)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def copy_file(src: str | Path, dst: str | Path) -> None:
    """dst becomes a copy of src, atomically (temp file + rename), like `save`."""
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        with uninterrupted():
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save`; a missing, truncated or foreign file gets one sentence."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist.")
    if path.stat().st_size == 0:
        raise ConfigError(f"checkpoint {path} is empty (0 bytes), so it was never written completely; use another "
                          f"checkpoint (checkpoint=last or best) or train again.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as ex:  # torch raises many types for a damaged file
        first = (str(ex).strip().splitlines() or [""])[0]
        if len(first) > 120:  # cut at a word, never mid-word
            first = first[:120].rsplit(" ", 1)[0] + " ..."
        raise ConfigError(f"checkpoint {path} cannot be read: it is truncated, corrupt or not a PyTorch file "
                          f"({type(ex).__name__}{': ' + first if first else ''}).") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ConfigError(f"checkpoint {path} is not a dltool checkpoint (no model weights and config in it).")
    return ckpt


def local_rng_state() -> dict[str, Any]:
    """This process's own generators: torch CPU (dropout, augmentation), CUDA, numpy and python's `random`.

    Plain data only (weights_only=True loads it): numpy's key as a tensor, python's state as nested tuples.
    """
    np_state = np.random.get_state(legacy=False)
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_local_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:  # checkpoints of an older dltool hold torch's state only
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state({"bit_generator": "MT19937", "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                             "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]}})


def rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    return {**local_rng_state(), "shuffle": shuffle.get_state()}


def set_rng_state(state: dict[str, Any], shuffle: torch.Generator) -> None:
    set_local_rng_state(state)
    shuffle.set_state(state["shuffle"])
