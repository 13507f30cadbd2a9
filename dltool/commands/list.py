"""`dltool list [REGISTRY ...|all]`: every registry as a table."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from dltool.console import console, table
from dltool.data.augment import OP_DOCS
from dltool.data.build import DATASET_DOCS
from dltool.models.backbones import BACKBONES, FAMILY_DOCS
from dltool.models.init import INIT_DOCS
from dltool.models.layers import ALIASES, BLOCKS, LAYERS
from dltool.registry import lookup
from dltool.train.losses import LOSS_DOCS
from dltool.train.optim import OPTIMIZER_DOCS, SCHEDULERS


def list_task(args: list[str]) -> int:
    """`dltool list [layers|losses|optimizers|schedulers|initializers|datasets|augmentations|backbones]`."""
    tables = registries()
    wanted = args or list(tables)
    for name in wanted:
        title, cols, rows = lookup(tables, name, "dltool list")()
        plain = [[escape(str(c)) for c in r] for r in rows]  # docs say `[h, w]`: text, not rich markup
        console.print(table(title, cols, plain, False))
    return 0


def registries() -> dict:
    def layers() -> tuple:
        aliases = {}
        for a, k in ALIASES.items():
            aliases.setdefault(k, []).append(a)
        rows = [(k, ", ".join(aliases.get(k, [])), ", ".join(f"{p}={v}" for p, v in e.defaults.items()) or "-", e.doc)
                for k, e in LAYERS.items()]
        rows += [(k, "", "-", doc) for k, doc in BLOCKS.items()]
        return "layers", ["name", "aliases", "options (defaults)", "what"], rows

    def simple(title: str, docs: dict) -> Any:
        return lambda: (title, ["name", "what / keys"], list(docs.items()))

    return {"layers": layers, "losses": simple("losses", LOSS_DOCS), "optimizers": simple("optimizers", OPTIMIZER_DOCS),
            "schedulers": simple("schedulers", SCHEDULERS), "initializers": simple("initializers", INIT_DOCS),
            "datasets": simple("datasets", DATASET_DOCS), "augmentations": simple("augmentations", OP_DOCS),
            "backbones": simple("backbones (model.backbone)", {k: FAMILY_DOCS[v] for k, v in BACKBONES.items()})}
