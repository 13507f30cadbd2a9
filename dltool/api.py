"""The Python API: train (`fit`), load a run, predict and evaluate from Python or a notebook.

The training call is `dltool.fit`, not `dltool.train`: `dltool.train` is the subpackage of the training loop.

    import dltool
    run = dltool.fit("my.yaml", ["trainer.epochs=5"])        # or a dict, or None (configs/train.yaml)
    run.dir, run.summary["best_value"], run.model             # the run directory, summary.json, best model
    dltool.load(run.dir).predict(x)                           # what `dltool predict` prints, as a dict
    dltool.evaluate(run.dir, split="val")                     # what `dltool evaluate` prints (and eval.json)

Mistakes raise dltool.ConfigError (one sentence: the key, the value, what is valid); nothing calls sys.exit,
and no Hydra state is left between calls (every compose clears Hydra's global state and removes the plug-in
choices it added). Objects built in Python enter through the same registries as plug-ins
(dltool.register_layer, register_loss, register_dataset, register_metric, register_callback), so a config
still only names entries and the run directory stays rebuildable by name.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import yaml

from dltool.commands.evaluate import OPTIONS as EVALUATE_OPTIONS
from dltool.commands.evaluate import run_evaluate
from dltool.commands.predict import OPTIONS as PREDICT_OPTIONS
from dltool.commands.predict import predictions, raw_shape, read_inputs
from dltool.commands.rundir import reserve
from dltool.commands.train import file_logging, run_job
from dltool.config.compose import compose, refuse_sweep, resume_config, split_args
from dltool.config.schema import TrainConfig, check_dropout_key, validate
from dltool.errors import ConfigError
from dltool.train.restore import Restored, restore


@dataclass
class Run:
    """A run directory: its summary, config and best model, and predictions from it."""

    dir: Path

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json (best epoch, best value, test metrics, provenance); {} while the run is unfinished."""
        path = self.dir / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def config(self) -> dict[str, Any]:
        """config.yaml as plain data (what the run read)."""
        return yaml.safe_load((self.dir / "config.yaml").read_text())

    @functools.cached_property
    def restored(self) -> Restored:
        return restore(str(self.dir), "best")

    @property
    def model(self) -> torch.nn.Module:
        """The best checkpoint's model, in eval mode."""
        return self.restored.model

    @property
    def class_names(self) -> list[str]:
        ckpt = self.restored.ckpt
        return [str(n) for n in (ckpt.get("class_names") or range(int(ckpt["num_classes"])))]

    def predict(self, x: torch.Tensor | np.ndarray | str | Path | Sequence[str | Path], topk: int = 3,
                batch_size: int = 256) -> dict[str, Any]:
        """Predictions for raw inputs (the run's normalization is applied): a tensor/array (N, ...) of examples in
        the data set's units, or file paths as `dltool predict` reads them -> the dict `dltool predict` prints
        ("top": [[(class name, probability), ...] per input], or "probabilities"/"values" for other tasks)."""
        r = self.restored
        opts = {**PREDICT_OPTIONS, "topk": topk, "batch_size": batch_size}
        if isinstance(x, (str, Path)) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], (str, Path))):
            paths = [str(p) for p in ([x] if isinstance(x, (str, Path)) else x)]
            t, labels = read_inputs(paths, raw_shape(r.ckpt), False, r.ckpt.get("feature_names"))
        else:
            t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
            shape = raw_shape(r.ckpt)
            if tuple(t.shape) == shape:
                t = t[None]
            if tuple(t.shape[1:]) != shape:
                raise ConfigError(f"predict: inputs of shape {list(t.shape)} do not fit the run, which takes "
                                  f"examples of shape {list(shape)} (a batch: [N, {', '.join(map(str, shape))}]).")
            labels = [f"[{i}]" for i in range(len(t))]
        return predictions(r, t, labels, opts)

    def evaluate(self, split: str = "test", **options: Any) -> dict[str, Any]:
        return evaluate(self.dir, split, **options)


def fit(config: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = (),
          run_dir: str | Path | None = None) -> Run:
    """Train one run: from a YAML file, a dict of keys (laid over configs/train.yaml) or the default config,
    plus `key=value` overrides exactly as on the command line (`resume=RUN_DIR` continues a run).
    run_dir: where to write (a new directory; default: outputs/<time>_<model>, as `dltool train`)."""
    args = [str(o) for o in overrides]
    if any(a in ("-m", "--multirun") for a in args):
        raise ConfigError("dltool.fit runs one job; for a sweep call it once per value, or use `dltool train -m`.")
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(config, Mapping):
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump({"defaults": ["train", "_self_"], **dict(config)}, sort_keys=False))
            args = [str(path), *args]
        elif config is not None:
            args = [str(config), *args]
        if resume is not None:
            tc: TrainConfig = resume_config(resume, [a for a in args if not a.startswith("resume=")])
            target = Path(resume)
        else:
            name, extra_dir, ov = split_args(args, "train")
            refuse_sweep(ov)
            cfg = compose(name, extra_dir, ov, with_hydra=True)
            tc = validate(cfg)
            check_dropout_key(cfg, ov)
            target = reserve(str(run_dir or cfg.hydra.run.dir), run_dir is not None)
    handlers: list[logging.Handler] = []
    try:
        run_job(tc, Path(target), False, None, on_start=lambda: handlers.append(file_logging(Path(target) /
                                                                                              "train.log")))
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
    return Run(Path(target))


def load(run_dir: str | Path) -> Run:
    """A finished (or running) run directory, for its summary, model and predictions."""
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml in it).")
    return Run(path)


def evaluate(run_dir: str | Path, split: str = "test", **options: Any) -> dict[str, Any]:
    """`dltool evaluate RUN_DIR split=...` without printing: the metrics dict it reports (eval.json is written)."""
    unknown = [k for k in options if k not in EVALUATE_OPTIONS]
    if unknown:
        raise ConfigError(f"evaluate: unknown option {unknown[0]!r}; options: {', '.join(EVALUATE_OPTIONS)}.")
    return run_evaluate(str(run_dir), {**EVALUATE_OPTIONS, "split": split, **options}, {})
