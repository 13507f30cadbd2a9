"""Every registry entry is one record (builder, doc, keys), listed by `dltool list`; --help runs nothing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dltool import catalog
from dltool.catalog import ALIASES, AUGMENTATIONS, BLOCKS, LAYERS, LOSSES, REGISTRIES, SCHEDULERS
from dltool.cli import COMMANDS, main
from dltool.commands.list import SECTIONS as SECTION_NAMES
from dltool.commands.list import options, rows_of
from dltool.config import schema
from dltool.config.variants import REFUSED
from dltool.registry import Entry, resolve

ENTRIES = [(reg, name) for reg, table in REGISTRIES.items() for name in table]
# The config section whose keys each registry's entries read (layers and augmentations own their options).
SECTIONS = {"losses": schema.LossConfig, "optimizers": schema.OptimizerConfig, "schedulers": schema.SchedulerConfig,
            "initializers": schema.InitConfig, "datasets": schema.DataConfig, "backbones": schema.ModelConfig}
KEYED = {"losses": "loss", "optimizers": "optimizer", "schedulers": "scheduler", "initializers": "init",
         "datasets": "data"}  # listed with each key's type, default and doc


def run_main(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ex:
        main(args)
    out = capsys.readouterr()
    return ex.value.code, out.out + out.err


@pytest.mark.parametrize("registry,name", ENTRIES)
def test_every_entry_is_a_record_with_a_doc_a_builder_and_known_keys(registry: str, name: str, capsys) -> None:
    entry = REGISTRIES[registry][name]
    assert isinstance(entry, Entry)
    assert entry.doc.strip() and "\n" not in entry.doc and len(entry.doc) <= 150
    assert callable(entry.load()), entry.builder
    if isinstance(entry, catalog.Augmentation):
        assert callable(resolve(entry.v2))
    if registry in SECTIONS:  # the keys it says it reads exist in its config section
        fields = {f.name for f in dataclasses.fields(SECTIONS[registry])}
        assert set(entry.keys) <= fields, set(entry.keys) - fields
    code, out = run_main(["list", registry], capsys)
    rows = rows_of(registry)[2]
    if (SECTION_NAMES.get(registry), name) in REFUSED:  # e.g. init.scheme=constant: refused, so never offered
        assert code == 0 and name not in [r[0] for r in rows]
        assert not any(line.lstrip("│┃ ").startswith(f"{name} ") for line in out.splitlines())  # no entry row
        return
    if registry in KEYED:  # the entry's row (its doc), then one row per key it reads: key, type, default, doc
        at = [r[0] for r in rows].index(name)
        assert rows[at] == (name, "", "", "", entry.doc)
        assert [r[1] for r in rows[at + 1:at + 1 + len(entry.keys)]] == list(entry.keys)
    else:
        listed = {r[0]: r for r in rows}
        assert (name, options(entry), entry.doc) == (listed[name][0], *listed[name][-2:])
    assert code == 0 and f" {name} " in out, f"{registry}/{name} missing from `dltool list {registry}`"


def test_tables_hold_no_parallel_docs_and_every_kind_is_listed() -> None:
    assert set(REGISTRIES) == {"layers", "losses", "optimizers", "schedulers", "initializers", "datasets",
                               "augmentations", "backbones"}
    assert not [n for n in vars(catalog) if n.endswith("_DOCS")]
    assert set(ALIASES.values()) <= set(LAYERS) and not set(ALIASES) & set(LAYERS)
    assert {e.interval for e in SCHEDULERS.values()} == {"epoch", "step", "plateau"}
    assert all(LOSSES[n].expected(10, 1.0) > 0 for n in LOSSES)
    assert set(BLOCKS) <= set(REGISTRIES["layers"]) and all(LAYERS[k].prefix for k in LAYERS)
    assert all(isinstance(AUGMENTATIONS[k].image_only, bool) for k in AUGMENTATIONS)


def test_unknown_builder_paths_are_refused() -> None:
    with pytest.raises(AssertionError):
        resolve("os:system")


@pytest.mark.parametrize("args", [["list", "all"], ["list"]])
def test_list_all_and_bare_list_show_every_registry(args: list[str], capsys) -> None:
    code, out = run_main(args, capsys)
    assert code == 0
    for title in ("layers", "losses", "optimizers", "schedulers", "initializers", "datasets", "augmentations",
                  "backbone families"):
        assert title in out
    assert "cosine" in out and "features_classifier" in out and "kaiming_normal" in out


def test_list_one_registry_and_a_misspelt_one(capsys) -> None:
    code, out = run_main(["list", "schedulers"], capsys)
    assert code == 0 and "onecycle" in out and "conv" not in out
    code, out = run_main(["list", "schedulrs"], capsys)
    assert code == 2 and "Did you mean 'schedulers'?" in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_prints_usage_and_runs_nothing(command: str, capsys, tmp_path: Path,
                                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run_main([command, "--help"], capsys)
    assert code == 0
    assert "usage: dltool " in out and COMMANDS[command].__doc__.strip().splitlines()[0][:40] in out
    assert list(tmp_path.iterdir()) == []  # no run dir, PNG, outputs/ or eval.json


def test_help_and_list_do_not_import_torch_sklearn_or_matplotlib() -> None:
    """A fresh interpreter: `--help`, every `COMMAND --help` and `list all` import none of the heavy libraries."""
    code = ("import sys, json\nfrom dltool.cli import COMMANDS, main\n"
            "for args in [['--help'], ['list', 'all']] + [[c, '--help'] for c in COMMANDS]:\n"
            "    try:\n        main(args)\n    except SystemExit as ex:\n        assert ex.code == 0, args\n"
            "heavy = [m for m in ('torch', 'torchvision', 'sklearn', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY=' + json.dumps(heavy))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.rsplit("HEAVY=", 1)[1]) == []
