"""`dltool list [REGISTRY ...|all]`: every registry as a table, read from dltool.catalog (no torch import)."""

from __future__ import annotations

from rich.markup import escape

from dltool.catalog import ALIASES, BACKBONE_FAMILIES, REGISTRIES
from dltool.config.variants import REFUSED
from dltool.console import console, table
from dltool.registry import Entry, unknown

# The config section whose keys each registry's entries read (layers and augmentations have their own options).
SECTIONS = {"losses": "loss", "optimizers": "optimizer", "schedulers": "scheduler", "initializers": "init",
            "datasets": "data", "backbones": "model"}


def list_task(args: list[str], backbone_models: dict[str, Entry] | None = None) -> int:
    """`dltool list [layers|losses|optimizers|schedulers|initializers|datasets|augmentations|backbones|all]`.

    backbone_models: torchvision's classification models by name (cli passes them when `backbones` is asked
    for by name; they come from the installed torchvision, the one table that needs it imported).
    """
    wanted = list(REGISTRIES) if not args or "all" in args else args
    for name in wanted:
        if name not in REGISTRIES:
            raise unknown("dltool list", name, [*REGISTRIES, "all"])
    for name in wanted:
        title, cols, rows = rows_of(name)
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


def rows_of(name: str) -> tuple[str, list[str], list[tuple]]:
    """(title, columns, rows) of one registry; layers get their aliases, backbones their model.* keys."""
    entries = REGISTRIES[name]
    if name == "layers":
        aliases: dict[str, list[str]] = {}
        for a, k in ALIASES.items():
            aliases.setdefault(k, []).append(a)
        return ("layers", ["name", "aliases", "options (defaults)", "what"],
                [(k, ", ".join(aliases.get(k, [])), options(e), e.doc) for k, e in entries.items()])
    title = {"backbones": "backbone families (model.backbone: `dltool list backbones` names every model)"}.get(name,
                                                                                                        name)
    head = "options (defaults)" if name == "augmentations" else f"keys ({SECTIONS.get(name, name)}.*)"
    offered = {k: e for k, e in entries.items() if (SECTIONS.get(name), k) not in REFUSED}  # e.g. init constant
    return title, ["name", head, "what"], [(k, options(e), e.doc) for k, e in offered.items()]

