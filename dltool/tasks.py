"""What each Hydra-driven command does with its composed config (called from cli.py)."""

from __future__ import annotations

import contextlib
import json
import shutil
import logging
import sys
from pathlib import Path
from typing import Any

from dltool.errors import ConfigError

log = logging.getLogger(__name__)


WORST = 1e9  # finite on purpose: the Optuna sweeper aborts on NaN and ranks +inf as best when maximizing


def worst_value(mode: str) -> float:
    """What a failed or diverged sweep job reports, so the sweeper ranks it last and goes on."""
    return WORST if mode == "min" else -WORST


def train_task(cfg: Any, multirun: bool) -> float:
    """Hydra task for `dltool train`: returns the best monitored value (the sweeper's objective)."""
    from hydra.core.hydra_config import HydraConfig

    from dltool.config import to_dict, validate
    from dltool.console import EpochReporter, config_tree, error, note
    from dltool.run import prepare, train

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    mode = str(cfg.get("trainer", {}).get("mode", "max"))
    try:
        tc = validate(cfg)
        mode = tc.trainer.mode
        prepared = prepare(tc)  # every config mistake surfaces here, before anything is printed or written
        if not multirun:
            config_tree(to_dict(tc), f"config ({run_dir})")
        reporter = None if multirun else EpochReporter(tc.trainer.epochs, tc.trainer.monitor, tc.trainer.progress)
        summary = train(tc, run_dir, reporter=reporter, prepared=prepared)
    except KeyboardInterrupt:
        if multirun:
            raise
        last = run_dir / "checkpoints" / "last.pt"
        hint = f"; continue with: dltool train resume={run_dir}" if last.exists() else ""
        error(f"interrupted (Ctrl-C); the checkpoints of finished epochs are in {run_dir / 'checkpoints'}{hint}")
        sys.exit(130)
    except Exception as ex:  # noqa: BLE001 - a sweep must survive one bad job
        if not multirun and not isinstance(ex, ConfigError):
            raise
        message = str(ex) if isinstance(ex, ConfigError) else f"{type(ex).__name__}: {ex}"
        if isinstance(ex, ConfigError):
            log.info("failed: %s", message)  # the run dir's train.log; the terminal gets one sentence below
        else:
            log.info("job failed", exc_info=True)  # the traceback goes to the run dir's train.log, not the terminal
        if not multirun:
            error(message)
            discard_empty_run_dir(run_dir)
            sys.exit(2)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps({"failed": True, "error": message, "run_dir": str(run_dir)},
                                                         indent=2))
        where = "" if isinstance(ex, ConfigError) else f" (traceback in {run_dir / 'train.log'})"
        note(f"[red]job {run_dir.name} failed:[/] {message}{where}")  # the dir name: 3, or r1_3 in a continued sweep
        return worst_value(mode)
    if multirun:
        note(job_line(run_dir.name, summary))
    else:
        print_summary(summary)
    if summary["diverged"] or summary["best_value"] is None:
        return worst_value(summary["mode"])
    return float(summary["best_value"])


def discard_empty_run_dir(run_dir: Path) -> None:
    """A run refused before it started leaves nothing behind: Hydra's .hydra/ and log are all it holds."""
    if {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.parent.rmdir()  # outputs/ itself, if this was its only run


def job_line(num: int | str, s: dict) -> str:
    test = f" test_acc={s['test_acc']:.4f}" if "test_acc" in s else ""
    best = "none" if s["best_value"] is None else f"{s['best_value']:.4f}"
    status = "[red]diverged[/]" if s["diverged"] else "done"
    return (f"job {num} {status}: best {s['monitor']}={best} at epoch {s['best_epoch']}{test} "
            f"({s['seconds']:.1f}s) -> {s['run_dir']}")


def print_summary(s: dict) -> None:
    from dltool.console import console, table

    rows = [("stopped because", s["stop_reason"]),
            ("best epoch", s["best_epoch"]),
            (f"best {s['monitor']}", "none (no finite value)" if s["best_value"] is None else f"{s['best_value']:.4f}")]
    if "test_acc" in s:
        rows += [("test accuracy (best.pt)", f"{s['test_acc']:.4f}"), ("test loss", f"{s['test_loss']:.4f}")]
    rows += [("time", f"{s['seconds']:.1f}s")]
    color = "red" if s["diverged"] else "green"
    console.print(table(f"[{color}]summary[/]", ["", ""], rows, False))
    console.print(f"run dir: {s['run_dir']}\n  config.yaml  checkpoints/best.pt  checkpoints/last.pt  metrics.csv  "
                  f"curves.png  summary.json", soft_wrap=True)


def summary_task(cfg: Any) -> int:
    """`dltool summary`: build the model for the configured data set and print the layer table."""
    from dltool.console import console, table
    from dltool.data import build_data
    from dltool.model import build_model
    from dltool.summary import COLUMNS, rows

    data = build_data(cfg.data, "cpu")
    built = build_model(cfg.model, data.input_shape, data.num_classes)
    from dltool.finetune import apply

    apply(built, cfg.model)  # so the table shows what is frozen and what learns more slowly
    console.print(table(f"{cfg.model.name} on {cfg.data.name} (input {'x'.join(map(str, data.input_shape))}, "
                        f"{data.num_classes} classes)", COLUMNS, rows(built)))
    return 0


def list_task(args: list[str]) -> int:
    """`dltool list [layers|losses|optimizers|schedulers|initializers|datasets|augmentations|backbones]`."""
    from rich.markup import escape

    from dltool.console import console, table
    from dltool.registry import lookup

    tables = registries()
    wanted = args or list(tables)
    for name in wanted:
        title, cols, rows = lookup(tables, name, "dltool list")()
        plain = [[escape(str(c)) for c in r] for r in rows]  # docs say `[h, w]`: text, not rich markup
        console.print(table(title, cols, plain, False))
    return 0


def registries() -> dict:
    from dltool.augment import OP_DOCS
    from dltool.backbones import BACKBONES, FAMILY_DOCS
    from dltool.data import DATASET_DOCS
    from dltool.init import INIT_DOCS
    from dltool.layers import ALIASES, BLOCKS, LAYERS
    from dltool.losses import LOSS_DOCS
    from dltool.optim import OPTIMIZER_DOCS, SCHEDULERS

    def layers() -> tuple:
        aliases = {}
        for a, k in ALIASES.items():
            aliases.setdefault(k, []).append(a)
        rows = [(k, ", ".join(aliases.get(k, [])), ", ".join(f"{p}={v}" for p, v in e.defaults.items()) or "-", e.doc)
                for k, e in LAYERS.items()]
        rows += [(k, "", "-", doc) for k, doc in BLOCKS.items()]
        return "layers", ["name", "aliases", "options (defaults)", "what"], rows

    def simple(title: str, docs: dict) -> Any:
        return lambda: (title, ["name", "what / keys"], list(docs.items()))

    return {"layers": layers, "losses": simple("losses", LOSS_DOCS), "optimizers": simple("optimizers", OPTIMIZER_DOCS),
            "schedulers": simple("schedulers", SCHEDULERS), "initializers": simple("initializers", INIT_DOCS),
            "datasets": simple("datasets", DATASET_DOCS), "augmentations": simple("augmentations", OP_DOCS),
            "backbones": simple("backbones (model.backbone)", {k: FAMILY_DOCS[v] for k, v in BACKBONES.items()})}
