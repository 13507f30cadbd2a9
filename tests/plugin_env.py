"""Make the example plug-in package (examples/dltool_example_plugin) installed for a test, then forget it.

Its `*.dist-info` (METADATA + entry_points.txt written from the package's own pyproject.toml) goes into a
temporary folder on sys.path beside the package's source, which is what `pip install -e` amounts to for
importlib.metadata; nothing outside the test's tmp_path is touched, and CI's fresh clone needs no pip call.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from dltool import plugins

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dltool_example_plugin"


def write_dist_info(site: Path) -> Path:
    """site/dltool_example_plugin-VERSION.dist-info with the entry points pyproject.toml declares."""
    project = read_project(EXAMPLE / "pyproject.toml")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, eps in project["entry-points"].items():
        lines += [f"[{group}]", *[f"{k} = {v}" for k, v in eps.items()], ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return info


def read_project(path: Path) -> dict:
    """name, version and entry points of a pyproject.toml (the flat subset it uses; tomllib is Python 3.11+)."""
    project: dict = {"entry-points": {}}
    section = ""
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        head = re.fullmatch(r"\[(.+)\]", line)
        if head:
            section = head.group(1)
            group = re.fullmatch(r'project\.entry-points\."([^"]+)"', section)
            if group:
                project["entry-points"][group.group(1)] = {}
            continue
        pair = re.fullmatch(r'([\w-]+)\s*=\s*"([^"]*)"', line)
        if pair and section == "project":
            project[pair.group(1)] = pair.group(2)
        elif pair and section.startswith("project.entry-points."):
            project["entry-points"][section.split('"')[1]][pair.group(1)] = pair.group(2)
    return project


def install(site: Path, monkeypatch) -> None:
    """The example package importable and its entry points visible (monkeypatch undoes sys.path)."""
    write_dist_info(site)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    plugins.reset()


def uninstall() -> None:
    """The package gone again: its folders off sys.path, its module and entries forgotten."""
    sys.path[:] = [p for p in sys.path if p != str(EXAMPLE) and not Path(p, "dltool_example_plugin-0.1.0.dist-info")
                   .is_dir()]
    plugins.reset()
    sys.modules.pop("dltool_example_plugin", None)
    importlib.invalidate_caches()
