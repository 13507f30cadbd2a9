"""One source per key (issue 18): the key table declares each key once; the dataclasses, the variant key sets,
the catalog's keys, `dltool list` and the key/value files of configs/ all come from it."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dltool import catalog
from dltool.cli import main
from dltool.commands.gradcheck import GradcheckOptions
from dltool.commands.list import key_row
from dltool.commands.lr_find import LrFindOptions
from dltool.commands.recipe import RecipeOptions
from dltool.commands.sanity import SanityOptions
from dltool.config import checks, schema
from dltool.config.keys import GROUPS, OPTIONS, RECORDS, TOP, generated_files, reads, variant_groups
from dltool.config.keyspec import MISSING, Group, Key, yaml_value
from dltool.config.variants import OPTIONAL, SELECTOR, VARIANTS, config_dir, default_choices

GENERATED = sorted(generated_files())
CLASSES = {**schema.CLASSES, "activity": schema.ActivityConfig, "sanity": SanityOptions, "gradcheck": GradcheckOptions,
           "lr_find": LrFindOptions, "recipe": RecipeOptions}
ALL = {**GROUPS, **RECORDS, **OPTIONS}
TABLES = {"loss": catalog.LOSSES, "optimizer": catalog.OPTIMIZERS, "scheduler": catalog.SCHEDULERS,
          "init": catalog.INITIALIZERS, "data": catalog.DATASETS}


def run_main(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ex:
        main(args)
    out = capsys.readouterr()
    return ex.value.code, out.out + out.err


def comments(path: Path) -> dict[str, str]:
    """{key: its `# comment`} of a key/value file, read as text (independent of the renderer)."""
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", " ", "-")):
            out[line.split(":", 1)[0]] = line.split("  # ", 1)[1]
    return out


@pytest.mark.parametrize("rel", GENERATED)
def test_each_generated_config_file_is_byte_for_byte_the_table(rel):
    path = config_dir() / rel
    assert path.read_text() == generated_files()[rel], f"{rel} differs: run `python scripts/make_configs.py`"
    group, _, file = rel[:-len(".yaml")].rpartition("/")
    table = ALL[group or file]  # configs/sanity.yaml: the options of a check command
    # read back by PyYAML and by OmegaConf (what Hydra composes with): the values are the table's defaults
    assert yaml.safe_load(path.read_text()) == table.defaults(file)
    loaded = OmegaConf.to_container(OmegaConf.load(path))
    assert {k: v for k, v in loaded.items() if v != MISSING} == {k: v for k, v in table.defaults(file).items()
                                                                 if v != MISSING}
    assert comments(path) == {k: table.doc_of(k, file) for k in table.files[file].keys}


def test_the_generator_script_finds_nothing_to_rewrite(capsys):
    script = runpy.run_path(str(Path(__file__).parent.parent / "scripts" / "make_configs.py"))
    assert script["main"](["--check"]) == 0
    assert f"0 of {len(GENERATED)} generated config files differ" in capsys.readouterr().out


@pytest.mark.parametrize("group", list(ALL))
def test_the_dataclasses_are_generated_from_the_table(group):
    table = ALL[group]
    fields = dataclasses.fields(CLASSES[group])
    assert [f.name for f in fields] == list(table.keys)
    instance = CLASSES[group]()
    for f in fields:
        assert getattr(instance, f.name) == table.keys[f.name].default, f.name
        if f.name != "activity":
            assert f.type == table.keys[f.name].type, f.name
    assert [f.name for f in dataclasses.fields(schema.TrainConfig)] == ["name", *GROUPS, "resume", "extra"]
    assert {k: getattr(schema.TrainConfig(), k) for k in TOP.keys} == {k: s.default for k, s in TOP.keys.items()}


def test_variants_selectors_and_the_catalog_keys_come_from_the_table():
    assert set(VARIANTS) == set(SELECTOR) == set(variant_groups()) == set(TABLES)
    assert list(VARIANTS) == ["optimizer", "scheduler", "loss", "init", "data"]  # checked in this order, as before
    for group, table in variant_groups().items():
        assert table.selector == SELECTOR[group] and table.optional == OPTIONAL.get(group, ())
        # the default variant's file values are the dataclass defaults (one source for Python callers too)
        assert table.keys[table.selector].default == default_choices()[group]
        for variant, spec in table.files.items():
            assert VARIANTS[group][variant] == spec.keys and spec.keys[0] == table.selector
            assert table.value(table.selector, variant) == variant
            assert TABLES[group][variant].keys == reads(group, variant)
            assert set(spec.defaults) | set(spec.docs) <= set(spec.keys), variant  # no override of an unread key
    assert catalog.INITIALIZERS["constant"].keys == ("value",) and "value" in GROUPS["init"].keys


def test_every_key_has_one_line_of_doc_and_defaults_within_its_choices():
    for name, table in {**ALL, "top": TOP}.items():
        for key, spec in table.keys.items():
            assert spec.doc.strip() and "\n" not in spec.doc, f"{name}.{key}"
            for file in table.files:
                if key in table.files[file].keys and spec.choices:
                    assert table.value(key, file) in spec.choices, f"{name}/{file}.{key}"
        for file, spec in table.files.items():
            assert len(set(spec.keys)) == len(spec.keys) and set(spec.keys) <= set(table.keys), f"{name}/{file}"
            if not table.selector:  # a preset of a plain group lists every key
                assert spec.keys == tuple(table.keys), f"{name}/{file}"


def test_every_value_rule_names_a_declared_key():
    for key in checks.RULES:
        group, _, leaf = key.partition(".")
        assert (leaf in GROUPS[group].keys) if leaf else (group in TOP.keys), key


def hand_written() -> list[Path]:
    generated = {config_dir() / rel for rel in GENERATED}
    return [p for p in sorted(config_dir().rglob("*.yaml"))
            if p not in generated and p.relative_to(config_dir()).parts[0] != "hydra"]  # Hydra's own logging config


def test_hand_written_configs_name_only_declared_keys():
    """model/*, experiment/*, hparams_search/*, augment/* and train.yaml are written by hand: their keys exist."""
    seen = 0
    for path in hand_written():
        raw = yaml.safe_load(path.read_text()) or {}
        group = path.parent.name
        if group in ("model", "augment"):
            assert set(raw) - {"defaults"} <= set(GROUPS[group].keys), path
        elif group in ("experiment", "hparams_search") or path.name == "train.yaml":
            assert set(raw) - {"defaults", "hydra"} <= set(TOP.keys) | set(GROUPS), path
            for g, node in raw.items():
                if g in GROUPS:
                    assert set(node) <= set(GROUPS[g].keys), (path, g)
            for dotted in (raw.get("hydra", {}).get("sweeper", {}).get("params") or {}):
                g, _, k = dotted.partition(".")
                assert k in GROUPS[g].keys, (path, dotted)
        else:
            raise AssertionError(f"{path}: neither generated nor checked here")
        seen += 1
    assert seen >= 30


def table_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def test_list_optimizers_shows_each_key_with_type_default_and_doc_as_the_files_give_them(capsys):
    code, out = run_main(["list", "optimizers"], capsys)
    assert code == 0
    rows, current = table_rows(out), None
    listed: dict[str, dict[str, list[str]]] = {}
    for name, key, kind, default, doc in rows:
        current = name or current
        if key:
            listed.setdefault(current, {})[key] = [kind, default, doc]
    for variant in VARIANTS["optimizer"]:
        path = config_dir() / "optimizer" / f"{variant}.yaml"
        values, docs = yaml.safe_load(path.read_text()), comments(path)
        assert set(listed[variant]) == set(values) - {"name"}
        for key, (kind, default, doc) in listed[variant].items():
            assert yaml.safe_load(default) == values[key] and doc == docs[key], (variant, key)
    assert listed["sgd"]["momentum"] == ["float", "0.9", "momentum coefficient (0 = plain SGD)"]
    assert listed["adam"]["betas"][:2] == ["list[float]", "[0.9, 0.999]"]


def test_list_trainer_and_datasets_show_types_defaults_and_choices(capsys):
    code, out = run_main(["list", "trainer", "datasets"], capsys)
    assert code == 0
    trainer = {r[0]: r[1:] for r in table_rows(out) if len(r) == 4 and r[0]}  # r[0] empty: a wrapped doc line
    documented = yaml.safe_load((config_dir() / "trainer" / "default.yaml").read_text())
    assert {k: yaml.safe_load(v[1]) if k != "precision" else v[1] for k, v in trainer.items()} == {
        **documented, "precision": '"32"'}
    assert trainer["max_steps"][0] == "int | null" and trainer["mode"][0] == "str"  # its doc names min and max
    cifar = [r for r in table_rows(out) if len(r) == 5]
    at = [r[0] for r in cifar].index("cifar10")
    val = next(r for r in cifar[at:] if r[1] == "val_fraction")
    assert val[3] == "0.1" and "training set" in val[4]  # the variant's own default and doc, not the shared one
    code, out = run_main(["list", "trainr"], capsys)
    assert code == 2 and "Did you mean 'trainer'?" in out


def test_list_a_check_commands_options(capsys):
    code, out = run_main(["list", "lr_find"], capsys)
    assert code == 0 and "lr_find.*" in out
    listed = {r[0]: yaml.safe_load(r[2]) for r in table_rows(out)}
    assert listed == yaml.safe_load((config_dir() / "lr_find.yaml").read_text())


@pytest.mark.parametrize("value", ["|", "*x", "32", "null", "a b", "val_loss", "${model.name}_x", "cat|dog", "it's",
                                   'a"b', "", 1e-3, 1e-10, 0.05, 0.0, 1024.0, 7, True, None, [0.9, 0.999], [],
                                   ["csv", "tensorboard"], {"layer": "fc1", "l1": 1e-5}])
def test_a_default_written_by_the_generator_reads_back_as_itself(value):
    text = yaml_value(value)
    omega = OmegaConf.to_container(OmegaConf.create(f"k: {text}"), resolve=False)["k"]  # as Hydra reads it
    assert yaml.safe_load(f"k: {text}")["k"] == value and omega == value
    assert "\n" not in text and type(yaml.safe_load(f"k: {text}")["k"]) is type(value)


def test_list_names_the_choices_a_doc_does_not():
    group = Group({"kind": Key(str, "a", "pick one", ("a", "b")), "mode": Key(str, "a", "a or b", ("a", "b"))})
    assert key_row(group, "kind") == ("kind", "str (a|b)", "a", "pick one")
    assert key_row(group, "mode") == ("mode", "str", "a", "a or b")
