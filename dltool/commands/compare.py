"""`dltool compare RUN_DIR RUN_DIR ...`: the config keys that differ, the final metrics side by side and the
learning curves overlaid (curves.png), written to a directory of its own (never into the compared runs)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import yaml

from dltool.commands.rundir import reserve
from dltool.console import console, note, table
from dltool.errors import ConfigError
from dltool.plots import overlay_curves

SUMMARY_KEYS = ("epochs_run", "best_epoch", "best_value", "test_acc", "test_loss", "seconds")
LAST_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def read_run(folder: Path) -> dict:
    """config (flattened), metrics.csv rows (numbers as floats) and summary.json of a run dir, read as data."""
    if not (folder / "config.yaml").is_file() or not (folder / "metrics.csv").is_file():
        raise ConfigError(f"dltool compare: {folder} is not a run directory (it needs config.yaml and metrics.csv, "
                          f"as `dltool train` writes them).")
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
    except yaml.YAMLError:
        raise ConfigError(f"dltool compare: {folder / 'config.yaml'} is not valid YAML.") from None
    with open(folder / "metrics.csv", newline="") as f:
        rows = [{k: float(v) if k != "epoch" else int(v) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)]
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    return {"config": flatten(cfg if isinstance(cfg, dict) else {}), "history": rows, "summary": summary}


def differing(configs: list[dict]) -> dict[str, list]:
    """key -> each run's value, for the keys whose values are not all equal (a missing key counts as None)."""
    keys = sorted({k for c in configs for k in c})
    return {k: [c.get(k) for c in configs] for k in keys if any(c.get(k) != configs[0].get(k) for c in configs)}


def final_metrics(run: dict) -> dict[str, Any]:
    """summary.json's outcome and the last epoch's logged numbers (a run without summary.json: those only)."""
    s, last = run["summary"], (run["history"][-1] if run["history"] else {})
    out = {k: s.get(k) for k in SUMMARY_KEYS if k in s}
    if "monitor" in s:
        out["monitor"] = s["monitor"]
    out.update({f"last {k}": last[k] for k in LAST_KEYS if k in last})
    return out


def run_compare(args: list[str]) -> dict:
    """Read the runs, reserve the output dir (--out DIR or outputs/compare/<time>), write compare.json + curves.png."""
    out_arg = args[args.index("--out") + 1] if "--out" in args and args.index("--out") + 1 < len(args) else None
    runs = [a for i, a in enumerate(args) if a != "--out" and (i == 0 or args[i - 1] != "--out")]
    if len(runs) < 2 or any(a.startswith("-") for a in runs) or ("--out" in args and out_arg is None):
        raise ConfigError("usage: dltool compare RUN_DIR RUN_DIR [RUN_DIR ...] [--out DIR]; it needs at least two "
                          f"run directories (got {len(runs)}).")
    read = {r: read_run(Path(r)) for r in runs}
    if out_arg is not None and Path(out_arg).exists() and (not Path(out_arg).is_dir() or any(Path(out_arg).iterdir())):
        raise ConfigError(f"dltool compare --out {out_arg}: it already exists and is not an empty directory; name a "
                          f"new one (compare never writes over files).")
    out = reserve(out_arg or f"outputs/compare/{time.strftime('%Y-%m-%d_%H-%M-%S')}", out_arg is not None,
                  "compare directory")
    result = {"runs": runs, "differing_keys": differing([r["config"] for r in read.values()]),
              "final": {name: final_metrics(r) for name, r in read.items()}, "out_dir": str(out)}
    overlay_curves({name: r["history"] for name, r in read.items()}, out / "curves.png")
    (out / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)


def print_compare(res: dict) -> None:
    runs = res["runs"]
    diff = res["differing_keys"]
    if diff:
        console.print(table("config keys that differ", ["key", *runs], [(k, *map(cell, v)) for k, v in diff.items()],
                            False))
    else:
        note("the runs' configs are identical")
    metrics = list(dict.fromkeys(k for f in res["final"].values() for k in f))
    console.print(table("final metrics", ["", *runs], [(m, *(cell(res["final"][r].get(m)) for r in runs))
                                                       for m in metrics], False))
    note(f"curves overlaid: {Path(res['out_dir']) / 'curves.png'}  (and compare.json)")
