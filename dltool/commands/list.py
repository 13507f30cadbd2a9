"""`dltool list [REGISTRY|GROUP ...|all]`: every registry as a table, read from dltool.catalog, and each config
key with its type, default and doc, read from the key table dltool/config/keys.py (no torch import)."""

from __future__ import annotations

from rich.markup import escape

from dltool import plugins
from dltool.catalog import ALIASES, BACKBONE_FAMILIES, REGISTRIES
from dltool.config.keys import GROUPS, OPTIONS
from dltool.config.keyspec import Group, type_name, yaml_value
from dltool.config.variants import REFUSED
from dltool.console import console, table
from dltool.registry import Entry, unknown
from dltool.tasks import DATASET_TASKS, TASKS

# The config section whose keys each registry's entries read (layers and augmentations have their own options).
SECTIONS = {"losses": "loss", "optimizers": "optimizer", "schedulers": "scheduler", "initializers": "init",
            "datasets": "data", "backbones": "model"}
# Groups without a registry, and the check commands' options: `dltool list trainer` shows their keys.
KEY_GROUPS = {**{g: GROUPS[g] for g in ("model", "regularization", "augment", "trainer")}, **OPTIONS}


def list_task(args: list[str], backbone_models: dict[str, Entry] | None = None) -> int:
    """`dltool list [layers|losses|optimizers|schedulers|initializers|datasets|augmentations|backbones|tasks|model|
    regularization|augment|trainer|sanity|gradcheck|lr_find|plugins|all]`.

    backbone_models: torchvision's classification models by name (cli passes them when `backbones` is asked
    for by name; they come from the installed torchvision, the one table that needs it imported).
    """
    every = [*REGISTRIES, "tasks", *KEY_GROUPS, "plugins"]
    wanted = every if not args or "all" in args else args
    for name in wanted:
        if name not in every:
            raise unknown("dltool list", name, [*every, "all"])
    for name in wanted:
        title, cols, rows = rows_of(name)
        if name == "plugins" and not rows:
            console.print("plug-ins: none loaded (no installed package registers dltool entry points, no "
                          "--plugins FILE was given, nothing was registered from Python).", markup=False)
            continue
        plain = [[escape(str(c)) for c in r] for r in rows]  # docs say `[h, w]`: text, not rich markup
        console.print(table(title, cols, plain, False))
    if backbone_models:
        family = {id(e): f for f, e in BACKBONE_FAMILIES.items()}
        console.print(table("torchvision models (model.backbone=NAME)", ["name", "family"],
                            [(n, family[id(e)]) for n, e in sorted(backbone_models.items())], False))
    return 0


def options(entry: Entry) -> str:
    """`kernel=3, stride=1` for entries with their own defaults, `lr, momentum` for config keys, or `-`."""
    if entry.defaults:
        return ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
    return ", ".join(entry.keys) or "-"


def key_row(group: Group, key: str, variant: str | None = None) -> tuple[str, str, str, str]:
    """(key, type, default, doc) of one key, with the variant's own default and doc where it has them."""
    spec, doc = group.keys[key], group.doc_of(key, variant)
    named = all(c in doc for c in spec.choices)  # the doc lists the choices already: no need to repeat them
    kind = type_name(spec.type) + ("" if named else f" ({'|'.join(spec.choices)})")
    return key, kind, yaml_value(group.value(key, variant)), doc


def keyed_rows(name: str) -> list[tuple]:
    """A registry whose entries read config keys: one row per entry (its doc), then one per key it reads."""
    group = GROUPS[SECTIONS[name]]
    rows: list[tuple] = []
    for entry_name, entry in REGISTRIES[name].items():
        if (SECTIONS[name], entry_name) in REFUSED:  # e.g. init constant: refused, so never offered
            continue
        rows.append((entry_name, "", "", "", entry.doc))
        variant = entry_name if entry_name in group.files else None
        rows += [("", *key_row(group, k, variant)) for k in entry.keys]
    return rows


def rows_of(name: str) -> tuple[str, list[str], list[tuple]]:
    """(title, columns, rows) of one registry or key group; layers get their aliases, backbones their model.* keys,
    the registries of config variants each entry's keys with type, default and doc."""
    if name == "plugins":
        return ("plug-ins (installed packages' entry points, --plugins files, dltool.register_*)",
                ["registry", "name", "options (defaults)", "from", "what"],
                [(g, n, ", ".join(f"{k}={v}" for k, v in p.options.items()) or "-", p.where, p.doc)
                 for g in plugins.GROUPS for n, p in plugins.table(g).items()])
    if name == "tasks":
        own = {t: [d for d, task in DATASET_TASKS.items() if task == t] for t in TASKS}
        own["classification"] = ["every other built-in set"]
        return ("tasks (data.task of data=arrays/csv; every other data set has its own)",
                ["task", "targets", "losses", "metrics (trainer.monitor: val_NAME, train_loss)", "data sets"],
                [(t, spec.targets, ", ".join(spec.losses), ", ".join(spec.metrics),
                  ", ".join(["arrays", "csv", *own[t]]))
                 for t, spec in TASKS.items()])
    if name in KEY_GROUPS:
        group = KEY_GROUPS[name]
        return (f"{name}.* ({group.doc})", ["key", "type", "default", "what"],
                [key_row(group, k, next(iter(group.files), None)) for k in group.keys])
    if name in SECTIONS and name != "backbones":
        section = SECTIONS[name]
        own = [(r[0], f"{section}.options", "mapping", *r[2:]) for r in plugin_rows(name)]
        return (f"{name} ({section}=NAME; keys {section}.*)", ["name", "key", "type", "default", "what"],
                keyed_rows(name) + own)
    entries = REGISTRIES[name]
    if name == "layers":
        aliases: dict[str, list[str]] = {}
        for a, k in ALIASES.items():
            aliases.setdefault(k, []).append(a)
        return ("layers", ["name", "aliases", "options (defaults)", "what"],
                [(k, ", ".join(aliases.get(k, [])), options(e), e.doc) for k, e in entries.items()] + plugin_rows(name))
    title = {"backbones": "backbone families (model.backbone: `dltool list backbones` names every model)"}.get(name,
                                                                                                        name)
    head = "options (defaults)" if name == "augmentations" else f"keys ({SECTIONS.get(name, name)}.*)"
    offered = {k: e for k, e in entries.items() if (SECTIONS.get(name), k) not in REFUSED}  # e.g. init constant
    rows = [(k, options(e), e.doc) for k, e in offered.items()]
    return title, ["name", head, "what"], rows + [r[:1] + r[2:] for r in plugin_rows(name)]


def plugin_rows(name: str) -> list[tuple[str, str, str, str]]:
    """(name, aliases, options, doc with its origin) of the plug-in entries of one registry."""
    if name not in plugins.GROUPS:
        return []
    extra = {"p": 1.0} if name == "augmentations" else {}  # dltool applies p to a plug-in op, per example
    return [(n, "", ", ".join(f"{k}={v}" for k, v in {**p.options, **extra}.items()) or "-",
             f"{p.doc} (plug-in: {p.where})") for n, p in plugins.table(name).items()]

