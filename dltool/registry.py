"""Registry records (Entry) and name lookup in the literal tables of dltool/catalog.py, with "did you mean"."""

from __future__ import annotations

import difflib
import functools
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from dltool.errors import ConfigError


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid choice to a misspelt name, or None when nothing is close."""
    hits = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return hits[0] if hits else None


def unknown(key: str, value: Any, choices: Iterable[str]) -> ConfigError:
    """One sentence for an unknown name: the key, the value, the closest match and the choices."""
    choices = sorted(choices)
    guess = closest(str(value), choices)
    hint = f" Did you mean '{guess}'?" if guess else ""
    return ConfigError(f"{key}={value!r} is not known.{hint} Valid choices: {', '.join(choices)}.")


def lookup(table: Mapping[str, Any], name: str, key: str) -> Any:
    """table[name], or a ConfigError naming `key`, the bad value and the valid choices."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise unknown(key, name, table) from None


def check_keys(given: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse a misspelt option, e.g. `layer 3 (conv): unknown option 'filter'. Did you mean 'filters'?`."""
    allowed = list(allowed)
    for k in given:
        if k not in allowed:
            guess = closest(k, allowed)
            hint = f" Did you mean '{guess}'?" if guess else ""
            raise ConfigError(
                f"{where}: unknown option '{k}'.{hint} Valid options: {', '.join(sorted(allowed)) or 'none'}."
            )


@dataclass(frozen=True)
class Entry:
    """One registry record: where its builder lives, a one-line doc, and the option keys it reads.

    `builder` is a "package.module:attribute" string from the literal tables in dltool/catalog.py, resolved
    with importlib only when something is built, so `dltool list` and `--help` never import torch. Calling
    the entry calls its builder. `keys` are the config keys it reads (e.g. optimizer.momentum); entries with
    their own options (layers, augmentations) give them with defaults in `defaults` instead.
    """

    builder: str
    doc: str
    keys: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    obj: Any = field(default=None, compare=False, repr=False)  # a plug-in's own callable (dltool/plugins.py)

    @property
    def options(self) -> tuple[str, ...]:
        """The option keys this entry reads."""
        return tuple(self.defaults) or self.keys

    def load(self) -> Callable[..., Any]:
        return self.obj if self.obj is not None else resolve(self.builder)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def resolve(path: str) -> Any:
    """"dltool.models.layers:build_conv" -> that object (dotted attributes allowed after the colon)."""
    module, _, attr = path.partition(":")
    if not module.startswith("dltool.") or not attr:
        raise AssertionError(f"registry builder {path!r} must be 'dltool.module:attribute'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
