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
__all__ = ["GROUPS", "OPTIONS", "RECORDS", "TOP", "generated_files", "modeline", "reads", "schema_of",
           "variant_groups"]
SCHEMA_DIR = "_schema"  # configs/_schema/<name>.schema.json: the JSON Schemas (dltool/config/json_schema.py)


def variant_groups() -> dict[str, Group]:
    """The groups whose files are variants of one thing (data, loss, optimizer, scheduler, init)."""
    return {name: g for name, g in GROUPS.items() if g.selector}


def reads(group: str, variant: str) -> tuple[str, ...]:
    """The keys a variant reads besides its selector (optimizer sgd: lr, momentum, nesterov, weight_decay)."""
    g = GROUPS[group]
    return tuple(k for k in g.files[variant].keys if k != g.selector)


def schema_of(rel: str) -> str:
    """The schema a config file under configs/ follows: its group's (optimizer/sgd.yaml: optimizer), a check
    command's options (sanity.yaml: sanity), else a whole config (train.yaml, experiment/*, hparams_search/*)."""
    parts = rel.split("/")
    if len(parts) == 2 and parts[0] in GROUPS:
        return parts[0]
    return parts[0][:-len(".yaml")] if len(parts) == 1 and parts[0][:-len(".yaml")] in OPTIONS else "config"


def modeline(rel: str) -> str:
    """The first line of a shipped config file: editors with the YAML language server validate and complete it."""
    up = "../" * rel.count("/")
    return f"# yaml-language-server: $schema={up}{SCHEMA_DIR}/{schema_of(rel)}.schema.json"


def generated_files() -> dict[str, str]:
    """{path under configs/: text} of every file the table generates (the modeline, then the rendered file)."""
    out = {f"{name}/{file}.yaml": render(g, file) for name, g in GROUPS.items() for file in g.files}
    out.update({f"{prefix}.yaml": render(g, prefix) for prefix, g in OPTIONS.items()})
    return {rel: f"{modeline(rel)}\n{text}" for rel, text in out.items()}
