"""The records of the key table (dltool/config/keys.py) and how a configs/<group>/<file>.yaml is written from them.

Torch-free: `dltool list`, the generated dataclasses and scripts/make_configs.py read these records.
"""

from __future__ import annotations

import copy
import functools
import json
import typing
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Mapping

import yaml

MISSING = "???"  # a required value (OmegaConf's MISSING): the user must give it, e.g. data.path=PATH
PLUGIN_OPTIONS = "a plug-in's own options (read only by plug-in entries: `dltool list` shows each one's keys)"


@dataclass(frozen=True)
class Key:
    """One config key, declared once: its type (a typing object), default, one-line doc, and choices if few."""

    type: Any
    default: Any
    doc: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    """One generated file configs/<group>/<name>.yaml: a variant (optimizer=sgd) or a preset (regularization=l2).

    doc: the file's header comment (lines joined by newlines); keys: the keys it holds, in file order (for a
    variant, exactly the keys it reads); defaults/docs: where this file's default or doc differs from the key's.
    """

    doc: str
    keys: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    docs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """A config group (data, optimizer, trainer, ...): every key it has, and the files generated from them.

    selector: for a variant group, the key naming the chosen variant (name, scheme); its files are its
    variants and each holds only the keys that variant reads. optional: keys any variant accepts when given
    (not in the files). width: the column of the `#` comments in the generated files.
    """

    keys: Mapping[str, Key]
    files: Mapping[str, Variant] = field(default_factory=dict)
    selector: str | None = None
    optional: tuple[str, ...] = ()
    width: int = 26
    doc: str = ""

    def value(self, key: str, file: str | None = None) -> Any:
        """The default of a key in one file (the variant's own, else the key's); a fresh copy."""
        spec = self.files.get(file) if file else None
        if spec is not None and key in spec.defaults:
            return copy.deepcopy(spec.defaults[key])
        return copy.deepcopy(self.keys[key].default)

    def doc_of(self, key: str, file: str | None = None) -> str:
        spec = self.files.get(file) if file else None
        return spec.docs.get(key, self.keys[key].doc) if spec is not None else self.keys[key].doc

    def defaults(self, file: str) -> dict[str, Any]:
        """{key: default} of one file, in file order."""
        return {k: self.value(k, file) for k in self.files[file].keys}


def type_name(tp: Any) -> str:
    """Optional[List[int]] -> 'list[int] | null' (how `dltool list` shows a key's type)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return " | ".join(type_name(a) for a in inner) + (" | null" if len(inner) < len(args) else "")
    if origin in (list, tuple):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """A default as it is written in a generated file: flow style, `1.0e-3` for small numbers, `???` for required."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            mantissa, exp = f"{value:e}".split("e")
            mantissa = mantissa.rstrip("0")
            return f"{mantissa}0e{int(exp)}" if mantissa.endswith(".") else f"{mantissa}e{int(exp)}"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value == MISSING or _plain(value) else json.dumps(value)  # a JSON string is YAML too
    return str(value)


def _plain(text: str) -> bool:
    """Whether a string reads back as itself without quotes (not `32`, `null`, `|`, `*x`, `a: b`, ...)."""
    if not text or any(c in text for c in "#:{}[],\"'"):
        return False
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


def render(group: Group, file: str) -> str:
    """The text of configs/<group>/<file>.yaml: the header comment, then `key: value  # doc`, comments aligned."""
    spec = group.files[file]
    lines = [f"# {line}".rstrip() for line in spec.doc.split("\n")]
    for key in spec.keys:
        pair = f"{key}: {yaml_value(group.value(key, file))}"
        lines.append(f"{pair:<{group.width - 2}}  # {group.doc_of(key, file)}")
    return "\n".join(lines) + "\n"


def dataclass_of(cls_name: str, group: Group, module: str, types: Mapping[str, Any] | None = None) -> type:
    """A dataclass with one field per key of the group: the key's type and default (lists/dicts fresh per instance);
    `types` replaces a field's type (a list of another generated dataclass)."""
    fields = []
    for key, spec in group.keys.items():
        default = spec.default
        made = (field(default_factory=functools.partial(copy.deepcopy, default)) if isinstance(default, (list, dict))
                else field(default=default))
        fields.append((key, (types or {}).get(key, spec.type), made))
    cls = make_dataclass(cls_name, fields)
    cls.__module__ = module
    cls.__doc__ = f"{group.doc}: generated from the key table (dltool/config/keys.py)."
    return cls
