"""dltool: the textbook neural-network training recipe as one YAML config.

Module map (imports point down this list, never up; tests/test_structure.py fails on any cycle):

  cli.py        `dltool <command>`: parses argv, dispatches; the only module with lazy imports (fast --help)
  commands/     one module per command: train, evaluate, predict, sanity, gradcheck, summary, list, preview,
                sweep (multirun planning), sweep_report, export, lr_find, cross_validate, diagnose (findings
                from a run dir), compare (runs side by side)
  train/        run (prepare / train / finish), loop (train_one_epoch / evaluate / fit), callbacks,
                checkpoint, losses (+ penalties), optim (optimizers, schedules), infer (batched inference for
                validation, evaluate and predict), restore (a run dir for evaluate), steps (max_steps plans),
                signals (per-layer update ratios, norms, activation stats), loggers (csv, tensorboard, figures),
                preempt (SIGTERM/SIGUSR1: save last.pt, exit 75, submitit requeue), provenance (summary.json's
                record of versions, host, git, data hash), mlflow_logger (imported only when chosen)
  models/       builder (layer list -> nn.Module + shape trace), layers, blocks, backbones (torchvision),
                trace (per-layer records, mult-adds), init, finetune, summary, export (ONNX, TorchScript,
                torch.export), params (layer names, is_norm, weight vs bias: one rule for init, weight decay
                and penalties)
  data/         build (data sets by name -> DataBundle), splits, normalize (training split only), whitening,
                augment, datasets/ (embedded digits, synthetic, torchvision, image folders)
  config/       schema (typed dataclasses), json_schema (the JSON Schema of `dltool schema`), compose (Hydra at
                the edge: config tree, overrides, Hydra's job runner and sweeps),
                options (sanity./gradcheck./lr_find. options)
  errors.py registry.py catalog.py console.py plots.py plots_signals.py
                the shared floor: one error type, registry records + name lookup with did-you-mean, every
                registry table (torch-free: builders named "module:function", imported when building),
                the only module that imports rich, matplotlib (Agg) figures
"""

from __future__ import annotations

import importlib
from typing import Any

# The Python API, imported on first use: `import dltool` (every CLI call) stays torch-free and fast.
_API = {name: "dltool.api" for name in ("fit", "load", "evaluate", "Run")}
REGISTER = ("register_layer", "register_loss", "register_dataset", "register_metric", "register_callback",
            "register_augmentation", "register_model", "plugin")
_API.update({name: "dltool.plugins" for name in REGISTER})
_API["ConfigError"] = "dltool.errors"
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'dltool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
