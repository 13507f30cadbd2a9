"""The plug-in parts of a run's setup: trainer.metrics and trainer.callbacks by name (dltool/plugins.py)."""

from __future__ import annotations

from typing import Callable

from dltool import plugins
from dltool.errors import ConfigError
from dltool.registry import unknown
from dltool.train.callbacks import Callback


def plugin_metrics(names: list[str]) -> dict[str, Callable]:
    """trainer.metrics: plug-in metrics by name, each logged as val_NAME."""
    out = {}
    for i, name in enumerate(names):
        own = plugins.get("metrics", name)
        if own is None:
            raise unknown(f"trainer.metrics[{i}]", name, plugins.table("metrics"))
        out[name] = own.obj
    return out


def plugin_callbacks(items: list) -> list[Callback]:
    """trainer.callbacks: `name` or `{name: {option: value}}`, each built by its plug-in with checked options."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) and not (isinstance(item, dict) and len(item) == 1):
            raise ConfigError(f"trainer.callbacks[{i}]={item!r} must be a callback name or `name: {{options}}`.")
        name, given = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        own = plugins.get("callbacks", name)
        if own is None:
            raise unknown(f"trainer.callbacks[{i}]", name, plugins.table("callbacks"))
        cb = own.obj(**plugins.options_of("callbacks", name, given, f"trainer.callbacks[{i}]"))
        if not isinstance(cb, Callback):
            raise ConfigError(f"trainer.callbacks[{i}]: the plug-in callback '{name}' from {own.where} built a "
                              f"{type(cb).__name__}, which is no dltool Callback (subclass dltool.train.callbacks"
                              f".Callback).")
        out.append(cb)
    return out
