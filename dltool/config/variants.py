"""Per-variant key sets: each optimizer, scheduler, loss, initializer and data set declares the keys it reads.

A config group whose entries are variants (`optimizer: sgd`, `data: spiral`, ...) holds only the keys of the
chosen variant: anything else is refused with one sentence naming the variant and the keys it reads, and
the printed tree, config.yaml and checkpoints hold only those keys. Keys, defaults and docs have one source,
the key table (dltool/config/keys.py); configs/<group>/<variant>.yaml is generated from it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable

import yaml

from dltool import plugins
from dltool.config.keys import GROUPS, variant_groups
from dltool.errors import ConfigError
from dltool.registry import closest, unknown

# each variant's keys, in file order (its selector first), from the key table; the groups in the order they are
# checked (the first bad group names the error)
ORDER = ("optimizer", "scheduler", "loss", "init", "data")
VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    group: {name: spec.keys for name, spec in variant_groups()[group].files.items()} for group in ORDER
}
# keys any variant of the group accepts when given (not in the variant files; left out of config.yaml when unset):
# cross-validation folds, and the shape of the inputs for `dltool summary` without loading data
OPTIONAL: dict[str, tuple[str, ...]] = {group: g.optional for group, g in variant_groups().items() if g.optional}
SELECTOR: dict[str, str] = {group: str(g.selector) for group, g in variant_groups().items()}
# choices that exist in a registry but are refused outright (with the reason)
REFUSED = {("init", "constant"): "init.scheme=constant: constant weights of any value make every unit in a layer "
                                 "compute the same output and get the same gradient, so they never break the "
                                 "symmetry; use small random weights, e.g. init=kaiming_normal (ReLU) or "
                                 "init=xavier_uniform (tanh)."}


def config_dir() -> Path:
    """The config tree: inside the installed package (wheel), or configs/ beside it (editable install)."""
    package = Path(__file__).resolve().parent.parent
    inside = package / "configs"
    if (inside / "train.yaml").is_file():
        return inside
    return package.parent / "configs"


@functools.lru_cache(maxsize=None)
def default_choices() -> dict[str, str]:
    """The variant of each group that train.yaml's defaults list picks (digits, adam, cosine, ...)."""
    raw = yaml.safe_load((config_dir() / "train.yaml").read_text())
    out = {}
    for entry in raw.get("defaults", []):
        if isinstance(entry, dict):
            for group, choice in entry.items():
                if group in VARIANTS and choice is not None:
                    out[group] = str(choice)
    return out


# variant groups plug-ins can add to (dltool/plugins.py): the registry, and the built-in variant whose keys a
# plug-in variant reads besides its own `options` (a plug-in data set is split and normalized like digits)
PLUGGABLE = {"loss": ("losses", "mse"), "data": ("datasets", "digits")}


def plugin_variants(group: str) -> dict[str, tuple[str, ...]]:
    """{name: keys} of the plug-in variants of a group (their keys: a built-in's shared keys, then `options`)."""
    if group not in PLUGGABLE:
        return {}
    registry, like = PLUGGABLE[group]
    return {name: VARIANTS[group][like] for name in plugins.table(registry)}


def variants(group: str) -> dict[str, tuple[str, ...]]:
    """Every variant of a group, dltool's own and the plug-ins', with the keys it reads."""
    return {**VARIANTS[group], **plugin_variants(group)}


def variant_defaults(group: str, name: str) -> dict[str, Any]:
    """The default of each key of the variant (what configs/<group>/<name>.yaml lists; a fresh copy)."""
    if name in plugin_variants(group):
        like = PLUGGABLE[group][1]
        return {**GROUPS[group].defaults(like), SELECTOR[group]: name}
    return GROUPS[group].defaults(name) if name in GROUPS[group].files else {}


def variant_of(group: str, node: Any) -> str:
    """The chosen variant of a group node (its name/scheme key), checked against the table."""
    key = SELECTOR[group]
    name = node.get(key) if hasattr(node, "get") else None
    if name is None:
        name = default_choices().get(group)
    name = str(name)
    if (group, name) in REFUSED:
        raise ConfigError(REFUSED[(group, name)])
    if name not in variants(group):
        raise unknown(f"{group}.{key}", name, variants(group))
    return name


def foreign_key_error(group: str, name: str, keys: Iterable[str]) -> ConfigError:
    """`optimizer.momentum` with adam -> one sentence naming the variant and the keys it does read."""
    keys = list(keys)
    reads = variants(group)[name]
    guess = closest(keys[0], reads)
    hint = f" Did you mean '{group}.{guess}'?" if guess and guess not in keys else ""
    others = sorted(v for v, ks in VARIANTS[group].items() if keys[0] in ks)
    elsewhere = f" ({keys[0]} belongs to {group}={'/'.join(others)})" if others else ""
    shown = ", ".join(f"{group}.{k}" for k in keys)
    return ConfigError(f"{shown}: {group} {name} does not read {'these keys' if len(keys) > 1 else 'this key'}"
                       f"{elsewhere}; {group} {name} reads {', '.join(reads)}.{hint}")


def check_group(group: str, node: Any, stored: bool = False) -> dict[str, Any]:
    """The group's keys as a plain dict: the variant's file values, then the given keys (foreign keys refused).

    stored: a config written by an older dltool (one flat key set for every variant): keys the chosen variant
    does not read are dropped instead of refused (they never did anything).
    """
    name = variant_of(group, node)
    given = dict(node.items()) if hasattr(node, "items") else {}
    foreign = [k for k in given if k not in variants(group)[name] + OPTIONAL.get(group, ())]
    if foreign and not stored:
        raise foreign_key_error(group, name, foreign)
    out = variant_defaults(group, name)
    out.update({k: v for k, v in given.items() if k not in foreign})
    out[SELECTOR[group]] = name
    if name in plugin_variants(group):  # its own options: checked against what it declares, defaults filled in
        out["options"] = plugins.options_of(PLUGGABLE[group][0], name, out.get("options"), f"{group}.options")
    elif out.get("options") is not None:
        raise ConfigError(f"{group}.options={out['options']!r}: {group} {name} is built into dltool and reads no "
                          f"options mapping (only plug-in entries do); {group} {name} reads "
                          f"{', '.join(variants(group)[name])}.")
    return out


def prune(group: str, values: dict[str, Any]) -> dict[str, Any]:
    """Only the keys the group's chosen variant reads (for config.yaml, checkpoints and the printed tree)."""
    keys = variants(group).get(str(values.get(SELECTOR[group])))
    if keys is None:
        return values
    return {k: v for k, v in values.items()
            if k in keys or (k in OPTIONAL.get(group, ()) and v is not None)}


def rewrite_selectors(overrides: list[str]) -> list[str]:
    """`optimizer.name=sgd` -> `optimizer=sgd`: switching the variant loads its own keys and defaults;
    `data.folds=5` -> `++data.folds=5`: an optional key (OPTIONAL) is added to whichever variant is chosen.

    Only when every value (a sweep may list several) has a file in configs/<group>/; otherwise the override
    is kept and refused with one sentence when the config is checked.
    """
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        group, _, leaf = key.partition(".")
        if sep and leaf.split(".")[0] in OPTIONAL.get(group, ()):  # not in the variant files: add it
            o = f"++{key}={value}"
        elif sep and group in SELECTOR and leaf == SELECTOR[group]:
            values = [v.strip() for v in value.split(",")]
            if values and all(v and ((config_dir() / group / f"{v}.yaml").is_file() or v in plugin_variants(group))
                              for v in values):
                o = f"{group}={value}"
        out.append(o)
    return out
