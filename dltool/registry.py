"""Name lookup in the literal registry dicts, with "did you mean" errors."""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

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
