"""The JSON Schema (draft 2020-12) of dltool's config, generated from the key table (dltool/config/keys.py).

Two shapes, one source:
- a group file (configs/optimizer/sgd.yaml, a `model/` file of your own): the group's keys. In a variant
  group (data, loss, optimizer, scheduler, init) the selector (`name`, `scheme`) names the variant and then
  only that variant's keys are allowed (if/then); without a selector every key of the group is allowed.
- a config file (train.yaml, an experiment, your my.yaml) and the composed config dltool validates: the
  top-level keys, one object per group ($defs), `defaults` and `hydra` (Hydra's own, not checked here).
Every object has `additionalProperties: false`, so a misspelt key fails; types, choices (enum), ranges (from
the value rules of config/checks.py), defaults and one-line docs come from the key table. Torch-free.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import yaml

from dltool.config.checks import RULES
from dltool.config.keys import GROUPS, OPTIONS, RECORDS, TOP
from dltool.config.keyspec import MISSING, Group, Key

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# a value may be an OmegaConf interpolation, e.g. units: ${data.num_classes} ($defs of every schema file)
INTERPOLATION = {"type": "string", "pattern": r"^.*\$\{.+\}.*$", "description": "an OmegaConf interpolation"}
INTERP_REF = {"$ref": "#/$defs/interpolation"}
BASIC = {str: "string", int: "integer", float: "number", bool: "boolean"}


def type_schema(tp: Any) -> dict[str, Any]:
    """A typing object as JSON Schema: Optional[List[int]] -> {"anyOf": [{array of integer}, {null}]}."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [type_schema(a) for a in args if a is not type(None)]
        return {"anyOf": [*inner, {"type": "null"}]} if len(inner) < len(args) else {"anyOf": inner}
    if origin in (list, tuple):
        return {"type": "array", **({"items": type_schema(args[0])} if args and args[0] is not Any else {})}
    if origin is dict:
        return {"type": "object"}
    if tp in BASIC:
        return {"type": BASIC[tp]}
    return {}  # Any


def key_schema(group: Group, key: str, rule: str, file: str | None = None) -> dict[str, Any]:
    """One key: its type (or an interpolation), choices, range, default and doc (the variant's own where it has one)."""
    spec: Key = group.keys[key]
    out = type_schema(spec.type)
    if spec.choices:  # `precision: 16` is read as a number by YAML and accepted (OmegaConf makes it "16")
        numbers = [yaml.safe_load(c) for c in spec.choices if yaml.safe_load(c) != c]
        out = {"enum": [*spec.choices, *numbers, *([None] if _nullable(spec.type) else [])]}
    out.update(getattr(RULES.get(rule, (None,))[0], "bounds", {}))
    if out and out != {"type": "string"}:
        out = {"anyOf": [out, INTERP_REF]}
    default = group.value(key, file)
    required = " (required)" if default == MISSING else ""
    out["description"] = group.doc_of(key, file) + required
    if default != MISSING:
        out["default"] = default
    return out


def _nullable(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)


def group_schema(name: str, group: Group, prefix: str | None = None) -> dict[str, Any]:
    """A group file's object: every key of the group, and for a variant group one if/then per variant."""
    prefix = name if prefix is None else prefix
    props = {k: key_schema(group, k, f"{prefix}.{k}" if prefix else k) for k in group.keys}
    if name == "regularization":
        props["activity"] = {"type": "array", "items": group_schema("activity", RECORDS["activity"], ""),
                             "description": group.keys["activity"].doc, "default": []}
    out: dict[str, Any] = {"type": "object", "description": group.doc, "properties": props,
                           "additionalProperties": False}
    if group.selector:
        sel = group.selector
        props[sel] = {**props[sel], "enum": sorted(group.files)}
        props[sel].pop("anyOf", None)
        out["allOf"] = [variant_rule(name, group, v) for v in group.files]
    return out


def variant_rule(name: str, group: Group, variant: str) -> dict[str, Any]:
    """if the selector names this variant, then only the keys it reads (and the group's optional keys)."""
    sel = str(group.selector)
    keys = [*group.files[variant].keys, *(k for k in group.optional if k not in group.files[variant].keys)]
    then = {k: key_schema(group, k, f"{name}.{k}", variant) for k in keys}
    then[sel] = {"const": variant, "description": group.files[variant].doc.replace("\n", " ")}
    return {"if": {"properties": {sel: {"const": variant}}, "required": [sel]},
            "then": {"properties": then, "additionalProperties": False}}


def config_schema() -> dict[str, Any]:
    """A config file or the composed config: the top-level keys and one object per group."""
    props: dict[str, Any] = {
        "defaults": {"type": "array", "description": "Hydra's defaults list: the group files this config starts "
                                                     "from (e.g. - train, - override model: mlp, - _self_)"},
        "hydra": {"type": "object", "description": "Hydra's own settings (run/sweep dirs, sweeper, launcher); "
                                                   "dltool's gate decides which keys a user may set"},
    }
    props.update({k: key_schema(TOP, k, k) for k in TOP.keys})
    props.update({g: {"$ref": f"#/$defs/{g}"} for g in GROUPS})
    return {"$schema": DRAFT, "$id": "config.schema.json", "title": "dltool config",
            "description": "A dltool config file (train.yaml, an experiment, your own) or the composed config: "
                           "generated from the key table by `dltool schema`.",
            "type": "object", "properties": props, "additionalProperties": False,
            "$defs": {"interpolation": INTERPOLATION, **{g: group_schema(g, group) for g, group in GROUPS.items()}}}


def file_schema(name: str) -> dict[str, Any]:
    """The schema of one group file (configs/<name>/*.yaml) or one check command's options file (sanity, ...)."""
    if name in GROUPS:
        body = group_schema(name, GROUPS[name])
    elif name in OPTIONS:
        body = group_schema(name, OPTIONS[name], "")
    else:
        raise KeyError(name)
    return {"$schema": DRAFT, "$id": f"{name}.schema.json", "title": f"dltool {name} file", **body,
            "$defs": {"interpolation": INTERPOLATION}}


def schema_names() -> list[str]:
    """config, then every group and every check command's options: one schema file each."""
    return ["config", *GROUPS, *OPTIONS]


def schema_text(name: str = "config") -> str:
    """The schema as the JSON text dltool writes and ships (sorted keys are not used: file order reads better)."""
    return json.dumps(config_schema() if name == "config" else file_schema(name), indent=1) + "\n"
