"""`dltool preview-augment` and `dltool show-data`: the PNG grids and their sizes."""

from __future__ import annotations

import pytest
from PIL import Image

from dltool.commands.preview import DPI, TILE, preview_augment, show_data
from dltool.errors import ConfigError
from tests.conftest import make_config, run_cli
from tests.fakedata import write_imagefolder

CELL = round(TILE * DPI)  # pixels per grid cell


def size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size  # (width, height)


def test_preview_grid_in_memory(tmp_path):
    grid = preview_augment(make_config("augment=digits"), tmp_path / "p.png", rows=3, variants=2)
    assert (grid.rows, grid.cols) == (3, 3)
    assert size(tmp_path / "p.png") == (3 * CELL, 3 * CELL)


def test_preview_grid_folder_data(tmp_path):
    write_imagefolder(tmp_path / "img", per_class=6)
    cfg = make_config("data=imagefolder", f"data.root={tmp_path / 'img'}", "augment=strong")
    grid = preview_augment(cfg, tmp_path / "p.png", rows=4, variants=3)
    assert (grid.rows, grid.cols) == (4, 4) and size(tmp_path / "p.png") == (4 * CELL, 4 * CELL)


@pytest.mark.slow
def test_show_data_grid_per_class(tmp_path):
    grid = show_data(make_config("data=digits_rows"), tmp_path / "s.png", per_class=3)
    assert (grid.rows, grid.cols) == (10, 3) and size(tmp_path / "s.png") == (3 * CELL, 10 * CELL)
    grid = show_data(make_config("data=spiral"), tmp_path / "spiral.png")
    assert grid.scatter and size(tmp_path / "spiral.png") == (600, 600)


def test_preview_refuses_what_it_cannot_show(tmp_path):
    with pytest.raises(ConfigError, match="augment.ops is empty"):
        preview_augment(make_config(), tmp_path / "p.png")
    with pytest.raises(ConfigError, match="layout 'features'; use `dltool show-data`"):
        preview_augment(make_config("data=spiral", "augment=noise"), tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_cli_commands(tmp_path, cli):
    r = cli("preview-augment", "augment=standard", "--rows", "2", "--variants=3", "--out", "prev.png")
    assert r.returncode == 0, r.stderr
    assert "prev.png (2 x 4 tiles: original + augmented)" in r.stdout
    assert size(tmp_path / "prev.png") == (4 * CELL, 2 * CELL)
    r = cli("show-data", "data=spiral", "--out", "spiral.png")
    assert r.returncode == 0 and (tmp_path / "spiral.png").stat().st_size > 3000, r.stderr
    r = cli("show-data", "--per-class", "two")
    assert r.returncode == 2 and "--per-class needs a whole number >= 1 like 8, got 'two'" in r.stderr
    r = cli("list", "augmentations")
    for op in ("translate", "hflip", "rotate", "affine", "jitter", "invert", "blur", "noise", "erase"):
        assert op in r.stdout


@pytest.mark.slow
def test_console_commands_end_to_end(tmp_path):
    """The real `python -m dltool preview-augment` and `show-data`, each in a new process."""
    r = run_cli("preview-augment", "augment=standard", "--rows", "2", "--variants=3", "--out", "prev.png", cwd=tmp_path)
    assert r.returncode == 0 and size(tmp_path / "prev.png") == (4 * CELL, 2 * CELL), r.stderr
    r = run_cli("show-data", "--per-class", "2", "--out", "raw.png", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "raw.png").stat().st_size > 3000, r.stderr
