"""Run directories that never clobber: a new run gets a directory of its own, created here before Hydra starts.

Hydra names run dirs by the second (`outputs/<time>_<name>`), so two runs started in the same second would
share one; `reserve` creates the directory itself (mkdir is atomic) and takes the next free `_2`, `_3`, ...
suffix when the name is taken. An explicit `hydra.run.dir` must be new or empty: only `resume=` continues a run.
"""

from __future__ import annotations

import errno
from pathlib import Path

from dltool.errors import ConfigError


def os_reason(ex: OSError) -> str:
    """'No space left on device' / 'Not a directory' / 'Read-only file system' ... without the errno noise."""
    return ex.strerror or errno.errorcode.get(ex.errno or 0, type(ex).__name__)


def reserve(path: str | Path, explicit: bool, what: str = "run directory") -> Path:
    """Create a fresh directory for a new run (or sweep) and return it (one sentence when it cannot be)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise ConfigError(f"cannot create the {what} {path}: {os_reason(ex)} (is a part of {path.parent} a file, "
                          f"read-only or full?).") from None
    for i in range(1, 1000):
        candidate = path if i == 1 else path.with_name(f"{path.name}_{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            if candidate.is_dir() and explicit and not any(candidate.iterdir()):
                return candidate  # an empty directory the user named: nothing to clobber
            if explicit:
                raise ConfigError(f"hydra.run.dir={path} already exists and is not empty; a new run never writes "
                                  f"into an existing run directory: name another one, or continue that run with "
                                  f"`dltool train resume={path}`.") from None
        except OSError as ex:
            raise ConfigError(f"cannot create the {what} {candidate}: {os_reason(ex)}.") from None
    raise ConfigError(f"cannot find a free {what} name next to {path} (999 taken).")



def free_name(path: Path) -> Path:
    """path, or the first of path_2, path_3, ... that does not exist yet."""
    i = 2
    candidate = path
    while candidate.exists():
        candidate, i = path.with_name(f"{path.name}_{i}"), i + 1
    return candidate
