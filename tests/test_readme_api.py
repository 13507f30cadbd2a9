"""The Python API walk-through (docs/tutorials/plugins-and-api.md): its python cells run in order, as a
notebook would run them, and print what the API returned."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dltool import plugins

README = Path(__file__).resolve().parent.parent / "docs" / "tutorials" / "plugins-and-api.md"


def cells() -> list[str]:
    text = README.read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.slow
def test_the_readme_walk_through_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLTOOL_NO_PROGRESS", "1")
    assert len(cells()) == 3
    scope: dict = {}
    try:
        for cell in cells():
            exec(compile(cell, str(README), "exec"), scope)  # noqa: S102 - our own README, the test's purpose
    finally:
        plugins.unregister("layers", "double")
    run = scope["run"]
    assert (run.dir / "summary.json").is_file() and run.summary["best_epoch"] in (1, 2)
    assert (scope["run2"].dir / "plugins.json").is_file()
    out = capsys.readouterr().out
    assert "'trainer.epoch' is not a config key" in out and "Did you mean 'epochs'" in out
