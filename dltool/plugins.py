"""Plug-ins: entries of the registries that come from outside dltool, and the record of which ones a run used.

Code enters only from (1) installed packages' entry points, one group per registry (GROUPS below: e.g.
`[project.entry-points."dltool.layers"] se_block = "my_pkg.layers:se_block"`), (2) a file named on the command
line with `dltool --plugins FILE` (it calls `dltool.register_layer(...)` and friends), or (3) Python code
calling those functions (the API, a notebook). Nothing a config, an override or a run directory holds can name
a module or a file: configs name entries by name, as they name built-ins.

An entry point names an object marked with `@plugin(doc, options)` (or `__dltool__ = {...}`): its one-line doc
and its option keys with defaults, so unknown keys, did-you-mean and one-sentence errors work as for built-ins.
Torch-free: `dltool list` and `--help` read these records.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import keyword
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dltool.catalog import ALIASES, AUGMENTATIONS, BLOCKS, DATASETS, LAYERS, LOSSES, Layer, Loss
from dltool.errors import ConfigError
from dltool.registry import Entry, check_keys
from dltool.tasks import TASKS

# registry -> entry-point group (documented in README "Plug-ins and the Python API")
GROUPS: dict[str, str] = {"layers": "dltool.layers", "losses": "dltool.losses", "datasets": "dltool.datasets",
                          "metrics": "dltool.metrics", "callbacks": "dltool.callbacks",
                          "augmentations": "dltool.augmentations", "models": "dltool.models"}
# what each registry's callable receives (README and `dltool list` say the same)
SIGNATURES: dict[str, str] = {
    "layers": "(options: dict, input_shape: tuple, ctx) -> (nn.Module, output_shape)",
    "losses": "(options: dict, ctx) -> loss_fn(logits, y)",
    "datasets": "(options: dict, data_config) -> dltool.data.splits.RawData",
    "metrics": "(outputs: Tensor (N, C), y: Tensor) -> float",
    "callbacks": "(**options) -> a dltool.train.callbacks.Callback",
    "augmentations": "(batch (N, ...) in [0, 1] pixel units, options, generator) -> batch; p per example by dltool",
    "models": "(options, input_shape, num_classes) -> nn.Module; named in model.layers, its output shape measured",
}
FILE_FLAG = "--plugins"


@dataclass(frozen=True)
class Plugin:
    """One registered plug-in entry: where it came from and what it reads."""

    group: str
    name: str
    obj: Any = field(compare=False, repr=False)
    doc: str
    options: Mapping[str, Any]
    origin: str  # "package NAME", "file /abs/path.py" or "python module.qualname"
    version: str  # the package's version, "sha256:..." of the file, or "" (python)
    tasks: tuple[str, ...] = ("classification",)  # losses: the tasks they fit
    primary: str | None = None  # layers: `se_block: 8` is shorthand for `se_block: {reduction: 8}`

    @property
    def where(self) -> str:
        return f"{self.origin} {self.version}".strip()

    def record(self) -> dict[str, str]:
        return {"group": self.group, "name": self.name, "origin": self.origin, "version": self.version}


_TABLES: dict[str, dict[str, Plugin]] = {g: {} for g in GROUPS}
_STATE: dict[str, Any] = {"entry_points": False, "origin": None, "files": []}


def plugin(doc: str, options: Mapping[str, Any] | None = None, tasks: Iterable[str] = ("classification",),
           primary: str | None = None) -> Callable[[Any], Any]:
    """Mark an object an entry point names: its one-line doc and option keys with defaults (None: required)."""
    def mark(obj: Any) -> Any:
        obj.__dltool__ = {"doc": doc, "options": dict(options or {}), "tasks": tuple(tasks), "primary": primary}
        return obj
    return mark


def builtin_names(group: str) -> dict[str, str]:
    """{name: what it is} of dltool's own entries a plug-in name may not take."""
    tables: dict[str, Iterable[str]] = {
        "layers": [*LAYERS, *BLOCKS, *ALIASES], "losses": LOSSES, "datasets": DATASETS, "augmentations": AUGMENTATIONS,
        "metrics": {m for t in TASKS.values() for m in t.metrics}, "callbacks": (),
        "models": [*LAYERS, *BLOCKS, *ALIASES]}
    return {n: f"dltool's built-in {group[:-1]} '{n}'" for n in tables[group]}


def register(group: str, name: str, obj: Any, doc: str, options: Mapping[str, Any] | None = None,
             tasks: Iterable[str] = ("classification",), primary: str | None = None,
             origin: tuple[str, str] | None = None) -> Plugin:
    """Add an entry to a registry; a clash with a built-in or another plug-in is one sentence naming both."""
    if group not in GROUPS:
        raise ConfigError(f"plug-in registry {group!r} does not exist; registries: {', '.join(GROUPS)}.")
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"plug-in {group[:-1]} name {name!r} is not valid; use letters, digits and _ (se_block).")
    if not callable(obj) or not isinstance(doc, str) or not doc.strip() or "\n" in doc.strip():
        raise ConfigError(f"plug-in {group[:-1]} '{name}' needs a callable and a one-line doc.")
    origin = origin or _STATE["origin"] or python_origin(obj)
    options = dict(options or {})
    if primary is not None and primary not in options:
        raise ConfigError(f"plug-in {group[:-1]} '{name}': primary={primary!r} is none of its options "
                          f"({', '.join(options) or 'none'}).")
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ConfigError(f"plug-in {group[:-1]} '{name}': task {bad[0]!r} is not known; tasks: {', '.join(TASKS)}.")
    entry = Plugin(group, name, obj, doc.strip(), options, origin[0], origin[1], tuple(tasks), primary)
    clash = builtin_names(group).get(name)
    old = _TABLES[group].get(name)
    twin = {"layers": "models", "models": "layers"}.get(group)  # one namespace: both are named in model.layers
    if twin and name in _TABLES[twin]:
        old = _TABLES[twin][name]
        clash = f"the plug-in {twin[:-1]} '{name}' from {old.where}"
    elif old is not None and old.origin != entry.origin:
        clash = f"the plug-in {group[:-1]} '{name}' from {old.where}"
    if clash:
        raise ConfigError(f"the plug-in {group[:-1]} '{name}' from {entry.where} clashes with {clash}; rename one "
                          f"of them (a config names every entry by name, so names must be unique).")
    _TABLES[group][name] = entry  # the same origin again (a re-run notebook cell) replaces its own entry
    return entry


def python_origin(obj: Any) -> tuple[str, str]:
    return f"python {getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}", ""


def load_entry_points() -> None:
    """Every installed package's entries (once per process; reset() forgets them)."""
    if _STATE["entry_points"]:
        return
    _STATE["entry_points"] = True
    # importlib.metadata costs ~28 ms to import: loaded here, when a plug-in table is first needed, not at start-up
    every = importlib.import_module("importlib.metadata").entry_points()  # one scan (~22 ms), not one per group
    for group, ep_group in GROUPS.items():
        for ep in every.select(group=ep_group):
            dist = getattr(ep, "dist", None)
            origin = (f"package {dist.metadata['Name']}", dist.version) if dist is not None else (f"entry point "
                                                                                              f"{ep.value}", "")
            try:
                obj = ep.load()
            except Exception as ex:  # noqa: BLE001 - a broken package is named, with its error, in one sentence
                raise ConfigError(f"the plug-in {group[:-1]} '{ep.name}' of {' '.join(origin)} cannot be loaded "
                                  f"({ep.value}: {type(ex).__name__}: {ex}).") from None
            spec = getattr(obj, "__dltool__", None)
            if not isinstance(spec, dict) or "doc" not in spec:
                raise ConfigError(f"the plug-in {group[:-1]} '{ep.name}' of {' '.join(origin)} ({ep.value}) has "
                                  f"no @dltool.plugin(doc, options) mark, so dltool cannot check its options.")
            register(group, ep.name, obj, spec["doc"], spec.get("options"), spec.get("tasks", ("classification",)),
                     spec.get("primary"), origin)


def load_file(path: str | Path) -> None:
    """`dltool --plugins FILE`: run a Python file the user named on the command line; it registers entries."""
    p = Path(path)
    if p.suffix != ".py" or not p.is_file():
        raise ConfigError(f"{FILE_FLAG} {path}: expected an existing Python file (.py).")
    data = p.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    spec = importlib.util.spec_from_file_location(f"dltool_plugin_{digest[:16]}", p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    _STATE["origin"] = (f"file {p.resolve()}", f"sha256:{digest}")
    try:
        spec.loader.exec_module(module)
    finally:
        _STATE["origin"] = None
    _STATE["files"].append(str(p.resolve()))


def loaded_files() -> list[str]:
    """The --plugins files this process ran (data-parallel ranks run them again: they start as fresh processes)."""
    return list(_STATE["files"])


def check_spawnable(cfg: Mapping[str, Any]) -> None:
    """Entries registered from Python live only in this process; spawned DDP ranks cannot get them."""
    local = [p for p in used(cfg) if p.origin.startswith("python ")]
    if local:
        raise ConfigError(f"trainer.devices>1 starts fresh processes, which cannot get the {local[0].group[:-1]} "
                          f"'{local[0].name}' registered from Python ({local[0].origin}); put it in a file "
                          f"(dltool --plugins FILE) or a package's entry points, or train with trainer.devices=1.")


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """`--plugins A.py --plugins B.py train ...` -> ([A.py, B.py], [train, ...]): only before the command."""
    files = []
    while args and (args[0] == FILE_FLAG or args[0].startswith(FILE_FLAG + "=")):
        if args[0] == FILE_FLAG:
            if len(args) < 2:
                raise ConfigError(f"{FILE_FLAG} needs a file: dltool {FILE_FLAG} my_layers.py train ...")
            files.append(args[1])
            args = args[2:]
        else:
            files.append(args[0].split("=", 1)[1])
            args = args[1:]
    return files, args


def table(group: str) -> dict[str, Plugin]:
    """The plug-in entries of one registry (installed packages' entry points are read on first use)."""
    load_entry_points()
    return dict(_TABLES[group])


def get(group: str, name: Any) -> Plugin | None:
    return table(group).get(name) if isinstance(name, str) else None


def entries(group: str) -> dict[str, Entry]:
    """The plug-ins of a registry as catalog records (layers: Layer, losses: Loss, ...), for the lookups."""
    kind = {"layers": Layer, "models": Layer, "losses": Loss}.get(group, Entry)
    out: dict[str, Entry] = {}
    for name, p in table(group).items():
        extra = {"prefix": name, "primary": p.primary} if kind is Layer else {}
        out[name] = kind(f"plugin:{group}:{name}", p.doc, defaults=dict(p.options), obj=p.obj, **extra)
    return out


def options_of(group: str, name: str, given: Any, key: str) -> dict[str, Any]:
    """A plug-in's options: the given ones checked against its declared keys, then its defaults filled in."""
    p = table(group)[name]
    given = dict(given or {})
    check_keys(given, p.options, f"{key} ({group[:-1]} {name})")
    merged = {**p.options, **given}
    missing = [k for k, v in merged.items() if v is None]
    if missing:
        raise ConfigError(f"{key}.{missing[0]} is required by the plug-in {group[:-1]} '{name}' ({p.doc}).")
    for k, v in given.items():
        d = p.options[k]
        if d is not None and not same_kind(d, v):
            raise ConfigError(f"{key}.{k}={v!r} is not valid for the plug-in {group[:-1]} '{name}': it takes "
                              f"{type(d).__name__} values like its default {d!r}.")
    return merged


def same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def layer_names(items: Any) -> set[str]:
    """The layer and block names of a layer list, nested lists included (repeat/residual `layers`, branches)."""
    out: set[str] = set()
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict) and len(item) == 1:
            kind, params = next(iter(item.items()))
            out.add(str(kind))
            if isinstance(params, dict):
                out |= layer_names(params.get("layers"))
            elif isinstance(params, list):  # branches: a list of layer lists
                for branch in params:
                    out |= layer_names(branch)
    return out


def entry_names(items: Any) -> set[str]:
    """Names of a list of `name` or `{name: {options}}` items (trainer.callbacks, augment.ops, trainer.metrics)."""
    return {str(next(iter(i))) if isinstance(i, dict) and i else str(i) for i in items or []}


def used(cfg: Mapping[str, Any]) -> list[Plugin]:
    """The plug-in entries a (plain-dict) training config names."""
    trainer = cfg.get("trainer") or {}
    named = {"layers": layer_names((cfg.get("model") or {}).get("layers")),
             "models": layer_names((cfg.get("model") or {}).get("layers")),
             "losses": {(cfg.get("loss") or {}).get("name")}, "datasets": {(cfg.get("data") or {}).get("name")},
             "metrics": entry_names(trainer.get("metrics")), "callbacks": entry_names(trainer.get("callbacks")),
             "augmentations": entry_names((cfg.get("augment") or {}).get("ops"))}
    return [p for group, names in named.items() for n, p in table(group).items() if n in names]


PLUGINS_FILE = "plugins.json"


def write_record(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    """RUN_DIR/plugins.json: name, origin and version/hash of each plug-in the run used (none: no file)."""
    records = [p.record() for p in used(cfg)]
    if records:
        (Path(run_dir) / PLUGINS_FILE).write_text(json.dumps(records, indent=1) + "\n")


def require(run_dir: Path | None, what: str) -> None:
    """The plug-ins a run recorded are present in this process with the same origin and version/hash, or one
    sentence naming what is missing. Nothing the record says is imported: it is only compared."""
    path = Path(run_dir) / PLUGINS_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        return
    try:
        records = json.loads(path.read_text())
        records = [{k: str(r[k]) for k in ("group", "name", "origin", "version")} for r in records]
    except (ValueError, TypeError, KeyError, OSError):
        raise ConfigError(f"{path} is not a plug-in record written by dltool (a list of group, name, origin, "
                          f"version).") from None
    for r in records:
        have = get(r["group"], r["name"]) if r["group"] in GROUPS else None
        was = f"{r['origin']} {r['version']}".strip()
        how = (f"install {r['origin'].removeprefix('package ')}" if r["origin"].startswith("package ")
               else f"pass `dltool {FILE_FLAG} {r['origin'].removeprefix('file ')}`" if r["origin"].startswith("file ")
               else "register it again in Python (dltool.register_...)")
        if have is None:
            raise ConfigError(f"{what} needs the plug-in {r['group'][:-1]} '{r['name']}' from {was}, which is not "
                              f"loaded in this process; {how}.")
        if r["origin"].startswith("python ") and have.origin.startswith("python "):
            continue
        if (have.origin, have.version) != (r["origin"], r["version"]):
            raise ConfigError(f"{what} was trained with the plug-in {r['group'][:-1]} '{r['name']}' from {was}, but "
                              f"this process has it from {have.where}; {how} (the same version or file).")


def reset() -> None:
    """Forget every plug-in (tests; entry points are read again on next use)."""
    for t in _TABLES.values():
        t.clear()
    _STATE["entry_points"] = False
    _STATE["files"] = []


def unregister(group: str, name: str) -> None:
    _TABLES[group].pop(name, None)


def register_layer(name: str, builder: Callable[..., Any], doc: str, options: Mapping[str, Any] | None = None,
                   primary: str | None = None) -> Plugin:
    """A layer type: builder(options, input_shape, ctx) -> (nn.Module, output_shape)."""
    return register("layers", name, builder, doc, options, primary=primary)


def register_loss(name: str, builder: Callable[..., Any], doc: str, options: Mapping[str, Any] | None = None,
                  tasks: Iterable[str] = ("classification",)) -> Plugin:
    """A loss: builder(options, ctx) -> loss_fn(logits, y)."""
    return register("losses", name, builder, doc, options, tasks=tasks)


def register_dataset(name: str, loader: Callable[..., Any], doc: str,
                     options: Mapping[str, Any] | None = None) -> Plugin:
    """A data set: loader(options, data_config) -> dltool.data.splits.RawData."""
    return register("datasets", name, loader, doc, options)


def register_metric(name: str, fn: Callable[..., float], doc: str) -> Plugin:
    """A validation metric: fn(outputs (N, C), y) -> float, logged as val_NAME."""
    return register("metrics", name, fn, doc)


def register_callback(name: str, factory: Callable[..., Any], doc: str,
                      options: Mapping[str, Any] | None = None) -> Plugin:
    """A callback: factory(**options) -> a dltool.train.callbacks.Callback (on_epoch_end(state, logs), ...)."""
    return register("callbacks", name, factory, doc, options)



def register_augmentation(name: str, fn: Callable[..., Any], doc: str,
                          options: Mapping[str, Any] | None = None) -> Plugin:
    """A batched augmentation: fn(batch, options, generator) -> batch (in-memory data; dltool applies `p`)."""
    return register("augmentations", name, fn, doc, options)


def register_model(name: str, builder: Callable[..., Any], doc: str,
                   options: Mapping[str, Any] | None = None) -> Plugin:
    """A whole network: builder(options, input_shape, num_classes) -> nn.Module, named in model.layers."""
    return register("models", name, builder, doc, options)
