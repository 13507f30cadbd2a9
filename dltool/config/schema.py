"""Typed config schemas (dataclasses) registered in Hydra's ConfigStore.

The schema is the single list of valid keys: a misspelt key or a wrong type fails at compose time
(or in `validate`) with one sentence, never deep inside training. Below the CLI everything takes these
dataclasses, never a DictConfig.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from dltool.config.checks import check_values
from dltool.config.safety import refuse_targets
from dltool.config.variants import VARIANTS, check_group, foreign_key_error, prune, variant_of
from dltool.errors import ConfigError
from dltool.registry import closest


@dataclass
class DataConfig:
    name: str = "digits"
    root: Optional[str] = None
    download: bool = True
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    normalize: str = "standardize"
    subset: Optional[int] = None
    on_device: bool = True
    num_workers: Optional[int] = None
    layout: Optional[str] = None
    # your own data (data=arrays, data=csv) and shapes without data (dltool summary)
    path: Optional[str] = None
    label: Optional[str] = None
    features: Optional[List[str]] = None
    input_shape: Optional[List[int]] = None
    memory_cap_mb: float = 1024.0
    cache: bool = False  # imagefolder: keep decoded images in memory after the first epoch (within memory_cap_mb)
    # data-set specific knobs (ignored by data sets that do not use them)
    image_size: Optional[List[int]] = None
    grayscale: bool = False
    val_dir: Optional[str] = None
    test_dir: Optional[str] = None
    bad_images: str = "error"
    num_classes: Optional[int] = None
    points_per_class: int = 100
    noise: float = 0.2
    length: int = 50
    num_samples: int = 3000
    pca_components: Optional[int] = None
    whiten_eps: float = 1e-2
    folds: Optional[int] = None  # K-fold cross-validation of train+val (dltool cross-validate)
    fold: Optional[int] = None  # which fold (1..folds) validates this run


@dataclass
class ModelConfig:
    name: str = "custom"
    layers: List[Any] = field(default_factory=list)
    strict_shapes: bool = True
    backbone: Optional[str] = None
    weights: Optional[str] = None
    small_input: bool = False
    init_from: Optional[str] = None
    reinit: List[str] = field(default_factory=list)
    freeze: Any = None  # N (first N layers with parameters) | [names] | pretrained
    pretrained_lr_mult: float = 1.0
    dropout: Optional[float] = None  # a knob layers can read as ${model.dropout} (so sweeps can search it)
    sync_batchnorm: bool = False  # under trainer.devices>1: batch-norm statistics over all ranks' batches


@dataclass
class LossConfig:
    name: str = "cross_entropy"
    label_smoothing: float = 0.0
    margin: float = 1.0


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    alpha: float = 0.99


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    milestones: List[int] = field(default_factory=list)
    min_lr: float = 0.0
    factor: float = 0.1
    patience: int = 5
    max_lr: Optional[float] = None
    pct_start: float = 0.3
    warmup_epochs: int = 0
    warmup_start_factor: float = 0.1


@dataclass
class ActivityConfig:
    layer: str = "???"
    l1: float = 0.0
    l2: float = 0.0


@dataclass
class RegularizationConfig:
    l2: float = 0.0
    l1: float = 0.0
    apply_to_bias: bool = False
    apply_to_norm: bool = False
    activity: List[ActivityConfig] = field(default_factory=list)
    clip_grad_norm: Optional[float] = None
    clip_grad_value: Optional[float] = None


@dataclass
class InitConfig:
    scheme: str = "kaiming_normal"
    mode: str = "fan_in"
    nonlinearity: str = "relu"
    std: float = 0.01
    scale: float = 0.05
    gain: float = 1.0
    value: float = 0.0
    bias: float = 0.0


@dataclass
class AugmentConfig:
    ops: List[Any] = field(default_factory=list)


@dataclass
class TrainerConfig:
    epochs: int = 30
    max_steps: Optional[int] = None  # train this many optimizer steps instead of trainer.epochs
    val_every: Optional[int] = None  # validate every N epochs (N steps with max_steps); null: each epoch
    checkpoint_every: Optional[int] = None  # last.pt every N epochs/steps; null: at each validation point
    batch_size: int = 64
    device: str = "auto"
    seed: int = 0
    threads: Optional[int] = None
    precision: str = "32"
    compile: bool = False  # torch.compile the model for the training steps
    channels_last: bool = False  # model and 4-D inputs in channels_last memory format
    accumulate: int = 1
    monitor: str = "val_loss"
    mode: str = "min"
    min_delta: float = 0.0
    patience: Optional[int] = 10
    stopping_threshold: Optional[float] = None
    divergence_threshold: Optional[float] = None
    start_from_epoch: int = 0
    baseline: Optional[float] = None
    min_change: float = 0.0
    min_change_epochs: Optional[int] = None
    restore_best_weights: bool = True
    eval_test: bool = True
    progress: bool = True
    diagnostics: bool = True
    loggers: List[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    devices: int = 1  # data-parallel ranks on this machine (DDP): GPUs, or CPU processes
    dist_timeout: float = 300.0  # seconds a rank waits for the others before giving up


@dataclass
class TrainConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    init: InitConfig = field(default_factory=InitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resume: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ComposeSchema:
    """What Hydra composes against: the variant groups stay open there and get their key set in `validate`."""

    name: str = "run"
    data: Any = None
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: Any = None
    optimizer: Any = None
    scheduler: Any = None
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    init: Any = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resume: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def register_schemas() -> None:
    """Register the schema so train.yaml's defaults list (`- train_schema`) types every key."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=ComposeSchema)


def _valid_keys(parent_path: str, parent: Any) -> list[str]:
    node: Any = OmegaConf.structured(TrainConfig)
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
    for group in VARIANTS:
        raw[group] = check_group(group, raw.get(group), stored)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), raw)
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
    out = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    for group in VARIANTS:
        out[group] = prune(group, out[group])  # type: ignore[index]
    return out  # type: ignore[return-value]
