"""The key table: every config key of dltool declared once (type, default, one-line doc), group by group.

Everything else reads it: the typed dataclasses (config/schema.py, generated with make_dataclass), the
variant key sets (config/variants.py), the catalog's per-entry keys, `dltool list`, and the files
configs/<group>/<file>.yaml that scripts/make_configs.py writes from it (a test keeps them equal). Adding
a key: declare it in its group (keys_data.py or keys_train.py), name it in the variants that read it, run
`python scripts/make_configs.py`. Torch-free.
"""

from __future__ import annotations

from dltool.config.keys_data import DATA
from dltool.config.keys_options import OPTIONS
from dltool.config.keys_train import (
    ACTIVITY,
    AUGMENT,
    INIT,
    LOSS,
    MODEL,
    OPTIMIZER,
    REGULARIZATION,
    SCHEDULER,
    TOP,
    TRAINER,
)
from dltool.config.keyspec import Group, render

# The groups of a training config, in config.yaml's order (the top-level keys: TOP).
GROUPS: dict[str, Group] = {
    "data": DATA, "model": MODEL, "loss": LOSS, "optimizer": OPTIMIZER, "scheduler": SCHEDULER,
    "regularization": REGULARIZATION, "init": INIT, "augment": AUGMENT, "trainer": TRAINER,
}
RECORDS: dict[str, Group] = {"activity": ACTIVITY}  # list entries inside a group (regularization.activity)
__all__ = ["GROUPS", "OPTIONS", "RECORDS", "TOP", "generated_files", "reads", "variant_groups"]


def variant_groups() -> dict[str, Group]:
    """The groups whose files are variants of one thing (data, loss, optimizer, scheduler, init)."""
    return {name: g for name, g in GROUPS.items() if g.selector}


def reads(group: str, variant: str) -> tuple[str, ...]:
    """The keys a variant reads besides its selector (optimizer sgd: lr, momentum, nesterov, weight_decay)."""
    g = GROUPS[group]
    return tuple(k for k in g.files[variant].keys if k != g.selector)


def generated_files() -> dict[str, str]:
    """{path under configs/: text} of every file the table generates."""
    out = {f"{name}/{file}.yaml": render(g, file) for name, g in GROUPS.items() for file in g.files}
    return {**out, **{f"{prefix}.yaml": render(g, prefix) for prefix, g in OPTIONS.items()}}
