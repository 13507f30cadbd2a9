"""Typed config schemas (dataclasses) registered in Hydra's ConfigStore.

The dataclasses are generated from the key table (dltool/config/keys.py), the one place a key is declared.
The schema is the single list of valid keys: a misspelt key or a wrong type fails at compose time
(or in `validate`) with one sentence, never deep inside training. Below the CLI everything takes these
dataclasses, never a DictConfig.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, field, make_dataclass
from typing import Any, List

from hydra.core.config_store import ConfigStore
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from dltool.config.checks import check_values
from dltool.config.keys import GROUPS, RECORDS, TOP
from dltool.config.keyspec import Group, dataclass_of
from dltool.config.safety import refuse_interpolations, refuse_targets
from dltool.config.variants import VARIANTS, check_group, foreign_key_error, prune, variant_of
from dltool.errors import ConfigError
from dltool.registry import closest


def _dataclass(cls_name: str, group: Group, types: dict[str, Any] | None = None) -> type:
    return dataclass_of(cls_name, group, __name__, types)


# The typed configs, one per group, generated from the key table (dltool/config/keys.py).
DataConfig = _dataclass("DataConfig", GROUPS["data"])
ModelConfig = _dataclass("ModelConfig", GROUPS["model"])
LossConfig = _dataclass("LossConfig", GROUPS["loss"])
OptimizerConfig = _dataclass("OptimizerConfig", GROUPS["optimizer"])
SchedulerConfig = _dataclass("SchedulerConfig", GROUPS["scheduler"])
ActivityConfig = _dataclass("ActivityConfig", RECORDS["activity"])
RegularizationConfig = _dataclass("RegularizationConfig", GROUPS["regularization"],
                                  {"activity": List[ActivityConfig]})  # type: ignore[valid-type]
InitConfig = _dataclass("InitConfig", GROUPS["init"])
AugmentConfig = _dataclass("AugmentConfig", GROUPS["augment"])
TrainerConfig = _dataclass("TrainerConfig", GROUPS["trainer"])
CLASSES: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optimizer": OptimizerConfig,
                            "scheduler": SchedulerConfig, "regularization": RegularizationConfig, "init": InitConfig,
                            "augment": AugmentConfig, "trainer": TrainerConfig}


def _root(cls_name: str, open_variants: bool) -> type:
    """TrainConfig (every group typed) or ComposeSchema (what Hydra composes against: the variant groups stay
    open there and get their key set in `validate`): the top-level keys around one field per group."""
    top = [(k, s.type, field(default_factory=dict) if isinstance(s.default, dict) else field(default=s.default))
           for k, s in TOP.keys.items()]
    groups = [(g, Any, field(default=None)) if open_variants and GROUPS[g].selector
              else (g, cls, field(default_factory=cls)) for g, cls in CLASSES.items()]
    cls = make_dataclass(cls_name, top[:1] + groups + top[1:])
    cls.__module__ = __name__
    return cls


TrainConfig = _root("TrainConfig", open_variants=False)
ComposeSchema = _root("ComposeSchema", open_variants=True)


@functools.cache
def typed_schema() -> DictConfig:
    """OmegaConf's typed tree of TrainConfig, built once (14 ms each time); OmegaConf.merge copies it."""
    return OmegaConf.structured(TrainConfig)


def register_schemas() -> None:
    """Register the schema so train.yaml's defaults list (`- train_schema`) types every key."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=ComposeSchema)


def _valid_keys(parent_path: str, parent: Any) -> list[str]:
    node: Any = typed_schema()
    for part in [p for p in parent_path.split(".") if p]:
        node = node.get(part) if isinstance(node, DictConfig) else None
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _key_error(ex: OmegaConfBaseException) -> ConfigError:
    full = str(getattr(ex, "full_key", "") or "")
    key = str(getattr(ex, "key", "") or full.rsplit(".", 1)[-1])
    parent_path = full.rsplit(".", 1)[0] if "." in full else ""
    if parent_path in VARIANTS:  # a key the chosen variant does not read
        parent = getattr(ex, "parent_node", None)
        return foreign_key_error(parent_path, variant_of(parent_path, parent), [key])
    valid = _valid_keys(parent_path, None)
    guess = closest(key, valid)
    hint = f" Did you mean '{guess}'?" if guess else ""
    where = f"'{parent_path}'" if parent_path else "the top level"
    return ConfigError(
        f"'{full or key}' is not a config key: {where} has no key '{key}'.{hint} "
        f"Valid keys: {', '.join(str(v) for v in valid)}."
    )


def translate(ex: Exception) -> ConfigError:
    """Turn an OmegaConf/Hydra composition error into one sentence naming key, value and what is valid."""
    if isinstance(ex, (ConfigKeyError, ConfigAttributeError)):
        return _key_error(ex)
    if isinstance(ex, ValidationError):
        full = getattr(ex, "full_key", "") or getattr(ex, "key", "")
        msg = str(getattr(ex, "msg", ex)).splitlines()[0]
        if "Incompatible value 'None'" in msg or "is not Optional" in msg:  # YAML's null, not Python's None
            m = re.search(r"of type '(\w+)'", msg)
            kind = {"float": "a number", "int": "a whole number", "str": "a text value", "bool": "true or false"}.get(
                m.group(1) if m else "", "a value")
            return ConfigError(f"{full}=null is not valid: {full} needs {kind} (it cannot be left empty).")
        return ConfigError(f"'{full}': {msg.replace(chr(39) + 'None' + chr(39), 'null')}.")
    text = str(ex).strip()
    first = text.splitlines()[0] if text else type(ex).__name__
    if isinstance(ex, OverrideParseException):
        return ConfigError(f"cannot read the override {getattr(ex, 'override', '')!r} ({first}); quote an override "
                           f"that holds spaces or brackets, e.g. 'model.layers=[{{fc: 10}}]'.")
    # Hydra wraps key errors: "Could not override 'x'. ... Key 'y' not in 'Z'"
    cause = ex.__cause__
    if isinstance(cause, OmegaConfBaseException):
        return translate(cause)
    if "Key '" in text and "not in" in text:
        m = re.search(r"Key '([^']+)' not in '([^']+)'\s+full_key: (\S+)", text)
        if m:
            fake = ConfigKeyError(m.group(1))
            fake.full_key, fake.key = m.group(3), m.group(1)
            return _key_error(fake)
    return ConfigError(first)


def validate(cfg: DictConfig | dict, stored: bool = False) -> TrainConfig:
    """Check a composed (or stored) config and return plain dataclasses (or raise one ConfigError).

    Each variant group keeps only its variant's keys (configs/<group>/<variant>.yaml fills the ones not given);
    a foreign key is refused, or dropped when `stored` (a config.yaml/checkpoint of an older dltool).
    """
    raw = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    raw.pop("hydra", None)
    refuse_targets(raw, "a stored run config" if stored else "the config")
    if stored:  # data: ${oc.env:VAR} and other resolvers are never resolved from a run dir or checkpoint
        refuse_interpolations(raw, "the stored run config")
    for group in VARIANTS:
        raw[group] = check_group(group, raw.get(group), stored)
    try:
        merged = OmegaConf.merge(typed_schema(), raw)
        OmegaConf.resolve(merged)
        typed: TrainConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as ex:
        raise translate(ex) from None
    check_values(to_dict(typed))
    return typed


def reads(node: Any, text: str) -> bool:
    """Whether any string inside node (the unresolved layer list) mentions text, e.g. ${model.dropout}."""
    if isinstance(node, str):
        return text in node
    if isinstance(node, dict):
        return any(reads(v, text) for v in node.values())
    return isinstance(node, (list, tuple)) and any(reads(v, text) for v in node)


def check_dropout_key(cfg: DictConfig, overrides: list[str]) -> None:
    """model.dropout given on the command line while no layer reads ${model.dropout}: it would change nothing,
    silently. Checked on a freshly composed config (`dltool train`), whose layers still hold the interpolation (a
    stored one is resolved); a model file's own default (cnn_digits' 0.3 under replaced layers) is left alone."""
    given = any(o.lstrip("+").startswith("model.dropout=") for o in overrides)
    model = OmegaConf.to_container(cfg.model, resolve=False) if "model" in cfg else {}
    if given and model.get("dropout") is not None and not reads(model.get("layers"), "model.dropout"):
        raise ConfigError(f"model.dropout={model['dropout']} is read by no layer of model {model.get('name')} (none "
                          f"has p: ${{model.dropout}}), so it would change nothing; add `- dropout: {{p: "
                          f"${{model.dropout}}}}` to model.layers, or leave model.dropout unset.")


def to_dict(cfg: TrainConfig) -> dict:
    """The resolved config as plain data, each variant group with only its variant's keys (for checkpoints,
    config.yaml and the console tree)."""
    out = asdict(cfg)  # plain data already (validate() resolved it); OmegaConf's round trip took 19 ms
    for group in VARIANTS:
        out[group] = prune(group, out[group])  # type: ignore[index]
    return out  # type: ignore[return-value]
