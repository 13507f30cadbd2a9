"""Options of the check commands (`sanity.KEY=value`, `gradcheck.KEY=value`), kept apart from the training config.

Their keys are declared in the key table (dltool/config/keys_options.py), which generates both
configs/<prefix>.yaml (one comment per key) and the dataclass that types them, so a misspelt key or a wrong
type fails with one sentence like any config mistake.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dltool.config.keys import OPTIONS
from dltool.config.keyspec import dataclass_of
from dltool.config.variants import config_dir
from dltool.errors import ConfigError
from dltool.registry import check_keys

T = TypeVar("T")


def options_class(prefix: str, cls_name: str, module: str) -> type:
    """The dataclass of a check command's options (SanityOptions, ...), generated from the key table."""
    return dataclass_of(cls_name, OPTIONS[prefix], module)


def split_prefixed(args: list[str], prefix: str) -> tuple[list[str], list[str]]:
    """-> (`prefix.KEY=value` args without the prefix, every other arg)."""
    mine = [a[len(prefix) + 1:] for a in args if a.startswith(prefix + ".") and "=" in a]
    rest = [a for a in args if not (a.startswith(prefix + ".") and "=" in a)]
    return mine, rest


def load_options(schema: type[T], prefix: str, args: list[str]) -> T:
    """configs/<prefix>.yaml laid over the dataclass defaults, then the `KEY=value` args over that."""
    base = OmegaConf.structured(schema)
    file = config_dir() / f"{prefix}.yaml"
    given = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args}
    check_keys(given, list(base.keys()), f"{prefix} options")
    try:
        merged = OmegaConf.merge(base, OmegaConf.load(file) if file.is_file() else {},
                                 OmegaConf.from_dotlist([f"{k}={v}" for k, v in given.items()]))
        options = OmegaConf.to_object(merged)
    except OmegaConfBaseException as ex:
        key = getattr(ex, "full_key", "") or getattr(ex, "key", "")
        msg = str(getattr(ex, "msg", ex)).splitlines()[0]
        raise ConfigError(f"{prefix}.{key}: {msg}.") from None
    for k, v in as_dict(options).items():  # every count, step and threshold is positive (a seed may be 0)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (math.isfinite(v) and (v >= 0 if k == "seed"
                                                                                               else v > 0)):
            raise ConfigError(f"{prefix}.{k}={v!r} is not valid: use a finite number "
                              f"{'>= 0' if k == 'seed' else 'above 0'}.")
    return options  # type: ignore[return-value]


def as_dict(obj: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(obj))  # type: ignore[return-value]


def take_options(args: list[str], options: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Pull `--name VALUE` / `--name=VALUE` options (typed like their defaults) out of the arguments."""
    rest, values = [], dict(options)
    it = iter(args)
    for a in it:
        key, _, inline = a.partition("=")
        name = key[2:].replace("-", "_") if key.startswith("--") else None
        if name not in options:
            rest.append(a)
            continue
        raw = inline if inline else next(it, None)
        try:
            if raw is None or raw.startswith("--"):
                raise ValueError(raw)
            values[name] = type(options[name])(raw)
            if isinstance(values[name], int) and values[name] < 1:
                raise ValueError(raw)
        except (TypeError, ValueError):
            kind = "a whole number >= 1" if isinstance(options[name], int) else "a value"
            raise ConfigError(f"{key} needs {kind} like {options[name]!r}, got {raw!r}.") from None
    return rest, values
