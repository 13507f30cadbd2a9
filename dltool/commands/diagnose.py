"""`dltool diagnose RUN_DIR`: plain-language findings about a run, each with its evidence and the key to change.

Reads only the run dir: metrics.csv (or the history in checkpoints/last.pt), signals.csv (per-layer update
ratios, gradient norms, activation statistics; absent in runs trained with trainer.diagnostics=false or
before it existed, which is then said), config.yaml and summary.json. Writes diagnosis.json. The same
findings are printed, shorter, at the end of every `dltool train`.

Thresholds are the textbook rules of thumb (cs231n): update/weight ratio ~1e-3 per step (> 1e-2 too high,
< 1e-5 too low), loss at init ln(C) for softmax, more than half of a layer dead or saturated.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from dltool.commands.rundir import write_text
from dltool.config.compose import read_yaml
from dltool.console import note
from dltool.errors import ConfigError
from dltool.tasks import config_task
from dltool.train import checkpoint as ckpt_io
from dltool.train.loggers import read_signals
from dltool.train.losses import expected_initial_loss

RATIO_HIGH, RATIO_LOW = 1e-2, 1e-5
DEAD, SATURATED = 0.5, 0.5
GRAD_SPREAD = 1e3  # weight-gradient norms across layers differing by three orders of magnitude
INIT_OFF = 1.0  # loss at init more than 100% off the expected value


@dataclass
class Finding:
    code: str  # lr_too_high, lr_too_low, lr_decay, overfitting, underfitting, dead_relu, saturated, ...
    title: str
    evidence: str
    advice: str  # what to change, naming the config keys


@dataclass
class Run:
    """What diagnose reads from a run dir."""

    history: list[dict]
    signals: list[dict] | None
    cfg: dict
    num_classes: int | None


def _floats(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def load_run(run_dir: Path) -> Run:
    """config.yaml, metrics.csv (or last.pt's history) and signals.csv of a run dir; a damaged or half-written
    run dir is one sentence, never a traceback or a clean bill of health."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / "config.yaml").exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml in it); pass the directory "
                          f"`dltool train` printed, e.g. outputs/2024-01-01_12-00-00_cnn_digits.")
    cfg = read_yaml(run_dir / "config.yaml", "the run's config")
    ck_path = run_dir / "checkpoints" / "last.pt"
    ck = ckpt_io.load(ck_path) if ck_path.exists() else None
    if (run_dir / "metrics.csv").exists():
        history = read_table(run_dir / "metrics.csv", read_metrics)
        bad = next(((i, k, v) for i, r in enumerate(history, start=2) for k, v in r.items()
                    if k is None or v is None or (isinstance(v, str) and v.strip())), None)
        if bad is not None:
            raise ConfigError(f"{run_dir / 'metrics.csv'} line {bad[0]}, column {bad[1]!r}: {bad[2]!r} is not a "
                              f"number; the file is damaged (dltool writes one number per cell).")
    else:
        history = [_floats(r) for r in (ck or {}).get("history", [])]
    signals = read_table(run_dir / "signals.csv", read_signals) if (run_dir / "signals.csv").exists() else None
    if not history and not signals:
        raise ConfigError(f"{run_dir} holds no finished epoch yet (no metrics.csv rows, no checkpoints/last.pt, no "
                          f"signals.csv), so there is nothing to diagnose; run it again once an epoch has ended.")
    return Run(history, signals, cfg, int(ck["num_classes"]) if ck and "num_classes" in ck else None)


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [_floats(r) for r in csv.DictReader(f)]


def read_table(path: Path, read: Callable[[Path], Any]) -> Any:
    """read(path) or one sentence for a damaged CSV (bad bytes, a missing or non-numeric cell)."""
    try:
        return read(path)
    except (csv.Error, UnicodeDecodeError, ValueError, KeyError, TypeError) as ex:
        raise ConfigError(f"{path} cannot be read: it is damaged or was not written by dltool "
                          f"({type(ex).__name__}: {str(ex).splitlines()[0] if str(ex) else ''}).") from None


def series(history: list[dict], key: str) -> list[float]:
    return [float(h[key]) for h in history if key in h and h[key] not in ("", None)]


def weight_ratios(signals: list[dict]) -> dict[int, float]:
    """epoch -> median update/weight ratio over the weight tensors."""
    by: dict[int, list[float]] = {}
    for r in signals:
        if r["kind"] == "weight" and r.get("update_ratio") is not None and r.get("grad_norm"):  # no gradient: no lr
            by.setdefault(r["epoch"], []).append(r["update_ratio"])
    return {e: statistics.median(v) for e, v in sorted(by.items())}


def steady_ratio(ratios: dict[int, float]) -> tuple[float | None, str]:
    """(median ratio after epoch 1, the epochs); epoch 1 alone in a one-epoch run.

    The first steps from a fresh init move the weights most (epoch 1 of a healthy adam lr=3e-3 MLP or an
    sgd lr=0.1 linear classifier is above 1e-2, their later epochs ~5e-3); an lr that is really too high keeps
    the ratio above 1e-2 after that.
    """
    later = {e: v for e, v in ratios.items() if e > 1} or ratios
    if not later:
        return None, ""
    first, last = min(later), max(later)
    return statistics.median(later.values()), f"epoch {first}" if first == last else f"epochs {first}-{last}"


def lr_findings(run: Run) -> list[Finding]:
    """Too high (loss non-finite, explodes or oscillates; ratios > 1e-2) or too low (ratios < 1e-5, flat loss)."""
    lr = run.cfg.get("optimizer", {}).get("lr")
    loss = series(run.history, "train_loss")
    ratios = weight_ratios(run.signals or [])
    high = []
    bad = next((i + 1 for i, v in enumerate(loss) if not math.isfinite(v)), None)
    if bad:
        high.append(f"train_loss became {loss[bad - 1]} at epoch {bad}")
    finite = [v for v in loss if math.isfinite(v)]
    if len(finite) >= 2 and max(finite[1:]) > 2 * finite[0]:
        k = finite.index(max(finite[1:]))
        high.append(f"train_loss rose from {finite[0]:.4g} (epoch 1) to {finite[k]:.4g} (epoch {k + 1})")
    ups = [i + 2 for i in range(len(finite) - 1) if finite[i + 1] > 1.05 * finite[i]]
    if len(finite) >= 4 and len(ups) >= max(2, 0.3 * (len(finite) - 1)):
        high.append(f"train_loss went up in epochs {', '.join(map(str, ups))} (oscillating)")
    steady, span = steady_ratio(ratios)
    if steady is not None and steady > RATIO_HIGH:
        high.append(f"median update/weight ratio {steady:.2g} over {span} (> {RATIO_HIGH:g})")
    if high:
        return [Finding("lr_too_high", "learning rate too high", "; ".join(high),
                        f"lower optimizer.lr (now {lr}) about 10x, e.g. optimizer.lr={_g(lr, 0.1)}, or clip "
                        f"gradients with regularization.clip_grad_norm=1.0")]
    low = []
    acc = series(run.history, "train_acc")  # none for regression: a flat loss alone decides there
    flat = len(finite) >= 3 and finite[0] > 0 and (finite[0] - finite[-1]) / finite[0] < 0.01 \
        and (not acc or acc[-1] < 0.9)
    if ratios and max(ratios.values()) < RATIO_LOW:
        peak = max(ratios, key=ratios.get)
        low.append(f"median update/weight ratio at most {ratios[peak]:.2g} (epoch {peak}; healthy ~1e-3)")
    if flat and (low or run.signals is None):  # with signals, the ratios decide (a flat loss may be dead units)
        low.append(f"train_loss almost flat: {finite[0]:.4g} -> {finite[-1]:.4g} over {len(finite)} epochs")
    if low:
        return [Finding("lr_too_low", "learning rate too low", "; ".join(low),
                        f"raise optimizer.lr (now {lr}) about 10x, e.g. optimizer.lr={_g(lr, 10)}")]
    return []


def _g(v, f: float) -> str:
    return f"{v * f:g}" if isinstance(v, (int, float)) else "?"


def fit_findings(run: Run) -> list[Finding]:
    """Overfitting (val loss rising since epoch k, gap growing), underfitting, lr decay needed."""
    out = []
    vl, tl = series(run.history, "val_loss"), series(run.history, "train_loss")
    ta, va = series(run.history, "train_acc"), series(run.history, "val_acc")
    n = len(vl)
    accuracy = len(ta) == n and len(va) == n  # regression has no accuracy: the train/val loss gap decides
    if n >= 3 and all(math.isfinite(v) for v in vl):
        k = vl.index(min(vl))
        gap_k, gap_end = (ta[k] - va[k], ta[-1] - va[-1]) if accuracy else (vl[k] - tl[k], vl[-1] - tl[-1])
        widened = gap_end > 0.05 if accuracy else gap_end > 0.1 * vl[k]
        if n - 1 - k >= 2 and vl[-1] > 1.1 * vl[k] and widened and gap_end > gap_k:
            gap = f"train/val accuracy gap {gap_k:.1%} -> {gap_end:.1%}" if accuracy else \
                f"val - train loss gap {gap_k:.4g} -> {gap_end:.4g}"
            out.append(Finding(
                "overfitting", "overfitting",
                f"val_loss rising since epoch {k + 1} ({vl[k]:.4g} -> {vl[-1]:.4g}); {gap}",
                "regularize more: regularization.l2=1e-4 (or higher), model.dropout=0.5, augment=standard, more "
                f"data; or stop earlier: trainer.patience=3 (best.pt is epoch {k + 1} already)"))
    exact_match = config_task(run.cfg.get("data") or {}) == "multilabel"  # its train_acc is all labels right
    recent = ta[max(0, len(ta) - 1 - max(2, len(ta) // 3))] if ta else 0.0
    if not exact_match and len(ta) >= 3 and ta[-1] < 0.7 and ta[-1] - recent < 0.02:
        out.append(Finding(
            "underfitting", "underfitting",
            f"train_acc low and flat: {ta[0]:.1%} -> {ta[-1]:.1%} over {len(ta)} epochs",
            "more capacity (a bigger model=, more units/filters), longer training (trainer.epochs), a higher "
            "optimizer.lr, less regularization (regularization.l2, model.dropout)"))
    sched = run.cfg.get("scheduler", {}).get("name")
    if sched == "none" and n >= 6 and not any(f.code == "overfitting" for f in out):
        third = max(2, n // 3)
        before, last = min(vl[:-third]), min(vl[-third:])
        t_drop = (tl[-third - 1] - tl[-1]) / tl[-third - 1] if tl[-third - 1] else 0.0
        if last > before * 0.99 and 0.01 < t_drop < 0.25:
            out.append(Finding(
                "lr_decay", "learning-rate decay needed",
                f"val_loss plateaued over the last {third} epochs (best {before:.4g} before, {last:.4g} since) while "
                f"train_loss still falls slowly ({t_drop:.1%})",
                "decay the learning rate: scheduler=cosine, scheduler=step, or scheduler=plateau"))
    return out


def layer_findings(signals: list[dict], cfg: dict, num_classes: int | None) -> list[Finding]:
    """Dead ReLUs, saturated tanh/sigmoid, vanishing/exploding gradients, loss at init."""
    out = []
    last = max((r["epoch"] for r in signals), default=0)
    acts = [r for r in signals if r["kind"] == "activation" and r["epoch"] == last]
    dead = [(r["name"], r["dead"]) for r in acts if r.get("dead") is not None and r["dead"] > DEAD]
    if dead:
        out.append(Finding("dead_relu", "dead ReLUs",
                           ", ".join(f"{n} {v:.0%} dead" for n, v in dead) + f" at epoch {last} (units that output 0 "
                           "for every probe example pass no gradient)",
                           "lower optimizer.lr, use leaky_relu instead of relu in model.layers, or a small positive "
                           "bias (init.bias=0.01)"))
    sat = [(r["name"], r["saturated"]) for r in acts if r.get("saturated") is not None and r["saturated"] > SATURATED]
    if sat:
        out.append(Finding("saturated", "saturated tanh/sigmoid units",
                           ", ".join(f"{n} {v:.0%} of outputs at the rails" for n, v in sat) + f" at epoch {last}",
                           "smaller initial weights (init.scheme=xavier_uniform, or init.std smaller), batchnorm "
                           "before the activation, or relu; a lower optimizer.lr"))
    out += gradient_findings(signals)
    init = next((r["mean"] for r in signals if r["kind"] == "loss" and r["epoch"] == 0), None)
    loss = cfg.get("loss", {})
    task = config_task(cfg.get("data") or {})
    expected = expected_initial_loss(loss.get("name", ""), num_classes, loss.get("margin", 1.0), task,
                                     loss.get("delta", loss.get("beta", 1.0))) if num_classes else None
    if init is not None and expected and math.isfinite(init) and abs(init - expected) / expected > INIT_OFF:
        out.append(Finding("init_loss", "loss at initialization far from the expected value",
                           f"loss at init {init:.4g}, expected {expected:.4g} for {loss.get('name')} with "
                           + (f"{num_classes} classes" if task == "classification" else
                              "standardized targets" if task == "regression" else "sigmoid outputs (ln 2)"),
                           "the initial scores are not small: smaller initial weights (init.scheme, init.std, "
                           "init.gain) and init.bias=0"))
    elif init is not None and not math.isfinite(init):
        out.append(Finding("init_loss", "loss at initialization is not finite", f"loss at init {init}",
                           "check init.scheme / init.std (weights too large) and the data normalization"))
    return out


def gradient_findings(signals: list[dict]) -> list[Finding]:
    """Weight-gradient norms across layers (epoch 1) differing by orders of magnitude."""
    first = min((r["epoch"] for r in signals if r["epoch"] > 0), default=None)
    g = [(r["name"], r["grad_norm"]) for r in signals
         if r["epoch"] == first and r["kind"] == "weight" and r.get("grad_norm") is not None]
    if len(g) < 2 or not all(math.isfinite(v) for _, v in g):
        return []
    lo, hi = min(g, key=lambda t: t[1]), max(g, key=lambda t: t[1])
    if hi[1] <= 0 or (lo[1] > 0 and hi[1] / lo[1] <= GRAD_SPREAD):
        return []
    early = [n for n, _ in g].index(lo[0]) < [n for n, _ in g].index(hi[0])
    kind = "vanishing" if early else "exploding"
    return [Finding(f"{kind}_gradients", f"{kind} gradients",
                    f"weight-gradient norms in epoch {first} range from {lo[1]:.2g} ({lo[0]}) to {hi[1]:.2g} "
                    f"({hi[0]}): {'inf' if lo[1] == 0 else f'{hi[1] / lo[1]:.0e}'}x",
                    "an init matched to the activation (init.scheme=kaiming_normal for relu, xavier_uniform for "
                    "tanh), batchnorm layers, or regularization.clip_grad_norm=1.0")]


CANNOT = "update ratios, dead or saturated units, gradient flow and the loss at init"


def diagnose_run(run_dir: Path) -> tuple[list[Finding], list[str]]:
    """(findings, what could not be judged); writes diagnosis.json to the run dir."""
    run = load_run(run_dir)
    findings, cannot = lr_findings(run), []
    if run.signals is None:
        cannot.append(f"{CANNOT}: no signals.csv (trained with trainer.diagnostics=false or before dltool "
                      f"recorded signals)")
    else:
        findings += layer_findings(run.signals, run.cfg, run.num_classes)  # causes before their symptoms
    findings += fit_findings(run)
    if not run.history:
        cannot.append("learning curves: no metrics.csv and no history in checkpoints/last.pt")
    record = {"findings": [asdict(f) for f in findings], "cannot_judge": cannot, "epochs": len(run.history)}
    write_text(Path(run_dir), Path(run_dir) / "diagnosis.json", json.dumps(record, indent=2))
    return findings, cannot


def print_findings(findings: list[Finding], cannot: list[str], run_dir: Path, short: bool = False) -> None:
    if not findings:
        note("[bold green]diagnosis[/]: no problems found (learning rate, over/underfitting, "
             f"{'dead/saturated units, gradients, loss at init' if not cannot else 'curves only'}).")
    else:
        note(f"[bold yellow]diagnosis[/]: {len(findings)} finding{'s' if len(findings) > 1 else ''}")
    for f in findings:
        note(f"  [yellow]{f.title}[/]: {f.evidence}")
        note(f"    -> {f.advice}")
    for c in cannot:
        note(f"  [dim]cannot judge {c}[/]")
    if short and findings:
        note(f"  (dltool diagnose {run_dir} prints this again; diagnosis.json has it)")


def run_diagnose(args: list[str]) -> int:
    """`dltool diagnose RUN_DIR`: 0 when nothing was found, 1 with findings."""
    if len(args) != 1 or args[0].startswith("-"):
        raise ConfigError("usage: dltool diagnose RUN_DIR (a directory `dltool train` wrote).")
    findings, cannot = diagnose_run(Path(args[0]))
    print_findings(findings, cannot, Path(args[0]))
    return 1 if findings else 0
