"""Run directories that never clobber: a new run gets a directory of its own, created here before Hydra starts.

Hydra names run dirs by the second (`outputs/<time>_<name>`), so two runs started in the same second would
share one; `reserve` creates the directory itself (mkdir is atomic) and takes the next free `_2`, `_3`, ...
suffix when the name is taken. An explicit `hydra.run.dir` must be new or empty: only `resume=` continues a run.
"""

from __future__ import annotations

import errno
from pathlib import Path

import yaml

from dltool.config.compose import GROUP_FILES, compose, split_args
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


def latest_run(name: str, root: Path) -> Path:
    """`resume=latest`: the run named `name` under root to continue (one sentence when none or several qualify).

    Candidates hold config.yaml with that name and checkpoints/last.pt (sweep job dirs included). An unfinished
    run (no summary.json, or a preemption record) is the one to continue; two or more unfinished runs are
    ambiguous. With none unfinished, the newest run (by last.pt's time) is continued.
    """
    runs = []
    for cfg in sorted(root.glob("**/config.yaml")) if root.is_dir() else []:
        run = cfg.parent
        try:
            stored = yaml.safe_load(cfg.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(stored, dict) and stored.get("name") == name and (run / "checkpoints" / "last.pt").is_file():
            runs.append(run)
    if not runs:
        raise ConfigError(f"resume=latest: no run named {name!r} with checkpoints/last.pt is under {root}/; start it "
                          f"without resume=, or name its directory with resume=RUN_DIR.")
    open_runs = [r for r in runs if not (r / "summary.json").is_file() or (r / "preempted.json").is_file()]
    if len(open_runs) > 1:
        listed = ", ".join(str(r) for r in sorted(open_runs)[:4]) + (" ..." if len(open_runs) > 4 else "")
        raise ConfigError(f"resume=latest: {len(open_runs)} unfinished runs are named {name!r} ({listed}), so "
                          f"'latest' is ambiguous; name one with resume=RUN_DIR.")
    return open_runs[0] if open_runs else max(runs, key=lambda r: (r / "checkpoints" / "last.pt").stat().st_mtime)


def latest_target(args: list[str]) -> tuple[str, list[str]]:
    """`resume=latest [CONFIG.yaml] [group=choice ...] [name=N] [key=value ...]`: the config file, group choices
    and name= only say which run's name to look for under outputs/; the single keys go on to the resume."""
    name, extra_dir, overrides = split_args(args, "train")
    naming = [o for o in overrides if o.partition("=")[0].lstrip("+").split("/")[0] in (*GROUP_FILES, "name")]
    cfg = compose(name, extra_dir, naming)
    return str(latest_run(str(cfg.name), Path("outputs"))), [o for o in overrides if o not in naming]
