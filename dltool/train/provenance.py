"""What produced a run, for summary.json (and the MLflow run's tags): versions, device, host, the command, the git
revision of the working directory, start/end time and a fingerprint of the data.

Data fingerprint (sha256, hex): for each split present in the order train, val, test, the split's name, then for
in-memory splits the dtype, shape and raw bytes (C order) of x and then y, as the run trained on them (after
normalization with the training split's statistics); for image folders the sorted list of `path<TAB>size` lines.
Two runs with equal fingerprints saw the same examples in the same splits.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dltool.data.splits import DataBundle

COMMAND = "DLTOOL_COMMAND"  # set by dltool.cli.main to the command as typed (Hydra rewrites sys.argv; ranks and
# submitit jobs inherit the environment)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state(folder: Path) -> dict[str, Any]:
    """{"commit", "dirty"} of the git repository holding folder; both None outside one (or without git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")  # edited tracked files; new files do not count
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def device_names(device: torch.device) -> list[str]:
    """The accelerator(s) trained on, by name; on CPU the processor (platform's name for it)."""
    if device.type == "cuda":
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [platform.processor() or platform.machine() or "cpu"]


def _update_tensor(h: Any, t: Any) -> None:
    if isinstance(t, np.memmap):  # data=arrays above data.memory_cap_mb: the file (reading GBs per run costs too much)
        size = os.path.getsize(t.filename) if t.filename and os.path.exists(t.filename) else -1
        h.update(f"memmap|{os.path.basename(str(t.filename))}|{size}|{t.dtype}|{tuple(t.shape)}|".encode())
        return
    t = torch.as_tensor(t).detach().cpu().contiguous()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())


def data_fingerprint(data: DataBundle) -> str | None:
    """sha256 over the splits (see the module docstring); None when a split is of a kind this does not know."""
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        if split is None:
            continue
        split = getattr(split, "inner", split)  # a DDP shard: the whole split it shards
        h.update(f"{name}|".encode())
        files = getattr(getattr(split, "dataset", None), "files", None)
        if hasattr(split, "x") and hasattr(split, "y"):
            _update_tensor(h, split.x)
            _update_tensor(h, split.y)
            if hasattr(split, "idx"):  # memory-mapped rows: which rows this split reads
                _update_tensor(h, split.idx)
        elif files is not None:
            h.update("".join(sorted(f"{p}\t{Path(p).stat().st_size}\n" for p in files)).encode())
        else:
            return None
    return h.hexdigest()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def provenance(data: DataBundle, device: torch.device, started: str) -> dict[str, Any]:
    """Everything summary.json records about where and how the run was made (ended: now)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "dltool": package_version("dltool"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": cudnn if torch.cuda.is_available() else None,
        "device": str(device),
        "device_names": device_names(device),
        "host": socket.gethostname(),
        "command": os.environ.get(COMMAND) or shlex.join(sys.argv),
        "cwd": os.getcwd(),
        "git": git_state(Path.cwd()),
        "started": started,
        "ended": now(),
        "data_fingerprint": data_fingerprint(data),
    }
