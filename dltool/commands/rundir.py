"""Run directories that never clobber: a new run gets a directory of its own, created here before Hydra starts.

Hydra names run dirs by the second (`outputs/<time>_<name>`), so two runs started in the same second would
share one; `reserve` creates the directory itself (mkdir is atomic) and takes the next free `_2`, `_3`, ...
suffix when the name is taken. An explicit `hydra.run.dir` must be new or empty: only `resume=` continues a run.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import yaml

from dltool.config.compose import GROUP_FILES, compose, split_args
from dltool.errors import ConfigError


def os_reason(ex: OSError) -> str:
    """'No space left on device' / 'Not a directory' / 'Read-only file system' ... without the errno noise."""
    return ex.strerror or errno.errorcode.get(ex.errno or 0, type(ex).__name__)


CLAIM = ".hydra"  # made with mkdir (atomic) in every reserved dir: the one process that made it owns the dir


def claim(path: Path) -> bool:
    """Take `path` for this process: True when this process created its CLAIM subdirectory first."""
    try:
        (path / CLAIM).mkdir()
        return True
    except FileExistsError:
        return False


def reserve(path: str | Path, explicit: bool, what: str = "run directory") -> Path:
    """Create a fresh directory for a new run (or sweep) and return it (one sentence when it cannot be).

    The directory is claimed with two atomic mkdirs (the dir, then its .hydra/), so of two processes started
    at once with the same hydra.run.dir exactly one gets it; the other is refused (explicit) or takes `_2`.
    """
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
            if claim(candidate):
                return candidate
        except FileExistsError:
            if candidate.is_dir() and explicit and not any(candidate.iterdir()) and claim(candidate):
                return candidate  # an empty directory the user named: nothing to clobber, and now it is ours
        except OSError as ex:
            raise ConfigError(f"cannot create the {what} {candidate}: {os_reason(ex)}.") from None
        if explicit:
            raise ConfigError(f"hydra.run.dir={path} already exists and is not empty (or another run just took "
                              f"it); a new run never writes into an existing run directory: name another one, or "
                              f"continue that run with `dltool train resume={path}`.") from None
    raise ConfigError(f"cannot find a free {what} name next to {path} (999 taken).")


def inside(base: Path, path: Path, what: str = "output") -> Path:
    """path, after checking that nothing from base down to it is a symlink (a planted link is never followed)
    and that it does not name a directory; one sentence otherwise."""
    base, path = Path(base), Path(path)
    try:
        rel = path.relative_to(base)
    except ValueError:
        rel = None
    parts = [base] + ([base.joinpath(*rel.parts[:i + 1]) for i in range(len(rel.parts))] if rel else [path])
    for p in parts:
        if p.is_symlink():
            raise ConfigError(f"{p} is a symbolic link; dltool never writes through a link (the {what} would land "
                              f"outside {base}): remove the link and run the command again.")
    if path.is_dir():
        raise ConfigError(f"the {what} {path} is a directory; remove it or write elsewhere.")
    return path


def write_text(base: Path, path: Path, text: str | bytes) -> None:
    """Write text (or bytes) to path inside base: no link followed, atomically (temp file + rename)."""
    path = inside(base, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # O_EXCL: a new file
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.replace(tmp, path)  # replaces the name itself, never a link's target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def free_name(path: Path) -> Path:
    """path, or the first of path_2, path_3, ... that does not exist yet."""
    i = 2
    candidate = path
    while candidate.exists():
        candidate, i = path.with_name(f"{path.name}_{i}"), i + 1
    return candidate


def fresh_dir(path: Path) -> Path:
    """Create path, or the first of path_2, path_3, ... that this process creates itself (mkdir is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        candidate = path if i == 1 else path.with_name(f"{path.name}_{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"cannot find a free directory name next to {path} (999 taken).")


def out_folder(path: Path) -> Path:
    """An output folder the user named: refused when it is an existing file (one sentence, nothing written)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"the output folder {path} is an existing file; name a folder (new or existing).")
    return path


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
