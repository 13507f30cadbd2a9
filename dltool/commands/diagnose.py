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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dltool import plugins
from dltool.commands.advice import (
    Finding,
    Step,
    clip_step,
    get,
    longer_step,
    lr_step,
    regularize_steps,
    settle,
    stop_steps,
)
from dltool.commands.diagnose_layers import layer_findings
from dltool.commands.rundir import write_text
from dltool.config.compose import read_yaml
from dltool.console import note
from dltool.errors import ConfigError
from dltool.tasks import config_task
from dltool.train import checkpoint as ckpt_io
from dltool.train.loggers import read_signals
from dltool.train.losses import expected_initial_loss

RATIO_HIGH, RATIO_LOW = 1e-2, 1e-5
GROWING = 2.0  # a weight tensor whose norm grows more than 2x over the run is leaving a near-zero start
RISE = 0.05  # an epoch's train_loss 5% above the previous one ...
NOISE_FLOOR = 0.02  # ... and by more than 2% of the loss's scale (ln C for softmax): smaller wiggles are noise
BLOWUP = 10.0  # an epoch-1 train_loss over 10x the loss of guessing (ln C): the first steps blew up
CHANCE_MARGIN = 0.1  # accuracy below 1/C + 10% of the way from chance to 100% is guessing


@dataclass
class Run:
    """What diagnose reads from a run dir."""

    history: list[dict]
    signals: list[dict] | None
    cfg: dict
    num_classes: int | None
    meta: dict = field(default_factory=dict)  # input_shape, layout (last.pt); best_epoch (summary.json or last.pt)


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
    plugins.require(run_dir, f"the run {run_dir}")
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
    meta = {k: (ck or {}).get(k) for k in ("input_shape", "layout")}
    meta["best_epoch"] = ((ck or {}).get("monitor") or {}).get("best_epoch")
    if (run_dir / "summary.json").exists():  # written at the end of the run: the final word on best.pt
        meta["best_epoch"] = json.loads((run_dir / "summary.json").read_text()).get("best_epoch", meta["best_epoch"])
    return Run(history, signals, cfg, int(ck["num_classes"]) if ck and "num_classes" in ck else None, meta)


def point(run: Run, epoch: int | None) -> str | None:
    """How the run names history row `epoch`: "epoch 7", or "step 700" when it counts trainer.max_steps."""
    if not epoch:
        return None
    row = next((h for h in run.history if int(h.get("epoch", 0)) == int(epoch)), None)
    if get(run.cfg, "trainer.max_steps") is not None and row is not None and row.get("step") not in (None, ""):
        return f"step {int(row['step'])}"
    return f"epoch {int(epoch)}"


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


def growing(signals: list[dict]) -> set[str]:
    """Weight tensors whose norm grew more than GROWING-fold from the first recorded epoch to the last: they
    started near 0 (the output layer, dltool.models.init.OUTPUT_GAIN), so their ratio measures the growth."""
    norms: dict[str, list[tuple[int, float]]] = {}
    for r in signals:
        if r["kind"] == "weight" and r.get("weight_norm"):
            norms.setdefault(r["name"], []).append((r["epoch"], r["weight_norm"]))
    return {n for n, v in norms.items() if len(v) >= 2 and min(v)[1] > 0 and max(v)[1] / min(v)[1] > GROWING}


def weight_ratios(signals: list[dict]) -> dict[int, float]:
    """epoch -> median update/weight ratio over the weight tensors (those growing from ~0 left out)."""
    by: dict[int, list[float]] = {}
    skip = growing(signals)
    for r in signals:
        if r["kind"] == "weight" and r.get("update_ratio") is not None and r.get("grad_norm") \
                and r["name"] not in skip:  # no gradient: no lr
            by.setdefault(r["epoch"], []).append(r["update_ratio"])
    return {e: statistics.median(v) for e, v in sorted(by.items())}


def steady_ratio(ratios: dict[int, float]) -> tuple[float | None, str]:
    """(median ratio over the second half of the epochs, after epoch 1; those epochs); epoch 1 alone in a
    one-epoch run.

    The first steps from a fresh init move the weights most (epoch 1 of a healthy adam lr=3e-3 MLP or an
    sgd lr=0.1 linear classifier is above 1e-2, their later epochs ~5e-3; an adam lr=1e-2 MLP on 60 examples
    falls from 0.03 to 0.003 over 10 epochs); an lr that is really too high keeps the ratio above 1e-2 to the end.
    """
    half = max(1, max(ratios, default=0) // 2)
    later = {e: v for e, v in ratios.items() if e > half} or ratios
    if not later:
        return None, ""
    first, last = min(later), max(later)
    return statistics.median(later.values()), f"epoch {first}" if first == last else f"epochs {first}-{last}"


def reference_loss(run: Run, first: float) -> float:
    """The loss's scale: the textbook loss of a guessing model (ln C for softmax), else the first epoch's."""
    loss = run.cfg.get("loss", {})
    expected = expected_initial_loss(loss.get("name", ""), run.num_classes, loss.get("margin", 1.0)) \
        if run.num_classes else None
    return expected or abs(first) or 1.0


def loss_rises(run: Run, finite: list[float]) -> tuple[list[str], list[int]]:
    """(evidence of an exploding loss, epochs where it went up). A rise counts when it is both RISE of the loss's
    level and NOISE_FLOOR of its scale: a converged fine-tuning run's wiggles (0.008 -> 0.015 at ln 10 = 2.3)
    are noise, not oscillation."""
    if not finite:
        return [], []
    scale = reference_loss(run, finite[0])
    floor = NOISE_FLOOR * scale
    out = []
    if run.num_classes and finite[0] > BLOWUP * scale:  # the explosion happened inside epoch 1 already
        out.append(f"train_loss in epoch 1 was {finite[0]:.4g}, over {BLOWUP:g}x the {scale:.4g} of a guessing "
                   f"model")
    top = max(finite[1:], default=finite[0])
    if top > 2 * finite[0] and top - finite[0] > floor:
        k = finite.index(top)
        out.append(f"train_loss rose from {finite[0]:.4g} (epoch 1) to {finite[k]:.4g} (epoch {k + 1})")
    ups = [i + 2 for i in range(len(finite) - 1)
           if finite[i + 1] > (1 + RISE) * finite[i] and finite[i + 1] - finite[i] > floor]
    return out, ups


def lr_findings(run: Run) -> list[Finding]:
    """Too high (loss non-finite, explodes or oscillates; ratios > 1e-2) or too low (ratios < 1e-5, flat loss)."""
    loss = series(run.history, "train_loss")
    ratios = weight_ratios(run.signals or [])
    high = []
    bad = next((i + 1 for i, v in enumerate(loss) if not math.isfinite(v)), None)
    if bad:
        high.append(f"train_loss became {loss[bad - 1]} at epoch {bad}")
    finite = [v for v in loss if math.isfinite(v)]
    rose, ups = loss_rises(run, finite)
    high += rose
    if len(finite) >= 4 and len(ups) >= max(2, 0.3 * (len(finite) - 1)):
        high.append(f"train_loss went up in epochs {', '.join(map(str, ups))} (oscillating)")
    steady, span = steady_ratio(ratios)
    if steady is not None and steady > RATIO_HIGH:
        high.append(f"median update/weight ratio {steady:.2g} over {span} (> {RATIO_HIGH:g})")
    if high:
        return [Finding("lr_too_high", "learning rate too high", "; ".join(high),
                        lr_step(run.cfg, 0.1, "lower the learning rate about 10x") + clip_step(run.cfg))]
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
                        lr_step(run.cfg, 10, "raise the learning rate about 10x"))]
    return []


def overfitting(run: Run) -> list[Finding]:
    """val_loss rising for 2+ points since its minimum while the train/val accuracy gap grows (the val - train
    loss gap where the task records no accuracy: regression)."""
    vl, tl = series(run.history, "val_loss"), series(run.history, "train_loss")
    ta, va = series(run.history, "train_acc"), series(run.history, "val_acc")
    n = len(vl)
    accuracy = len(ta) == n and len(va) == n
    if n < 3 or not all(math.isfinite(v) for v in vl) or (not accuracy and len(tl) != n):
        return []
    k = vl.index(min(vl))
    gap_k, gap_end = (ta[k] - va[k], ta[-1] - va[-1]) if accuracy else (vl[k] - tl[k], vl[-1] - tl[-1])
    widened = gap_end > 0.05 if accuracy else gap_end > 0.1 * vl[k]
    if not (n - 1 - k >= 2 and vl[-1] > 1.1 * vl[k] and widened and gap_end > gap_k):
        return []
    since = point(run, int(run.history[k].get("epoch", k + 1))) or f"epoch {k + 1}"
    steps = regularize_steps(run.cfg, run.meta) + [Step("more training data")]
    steps += stop_steps(run.cfg, point(run, run.meta.get("best_epoch")), since)
    return [Finding("overfitting", "overfitting",
                    f"val_loss rising since {since} ({vl[k]:.4g} -> {vl[-1]:.4g}); "
                    + (f"train/val accuracy gap {gap_k:.1%} -> {gap_end:.1%}" if accuracy else
                       f"val - train loss gap {gap_k:.4g} -> {gap_end:.4g}"), steps)]


def fit_findings(run: Run) -> list[Finding]:
    """Overfitting (val loss rising since epoch k, gap growing), underfitting, lr decay needed."""
    out = overfitting(run)
    vl, tl = series(run.history, "val_loss"), series(run.history, "train_loss")
    ta = series(run.history, "train_acc")
    n = len(vl)
    exact_match = config_task(run.cfg.get("data") or {}) == "multilabel"  # its train_acc is all labels right
    recent = ta[max(0, len(ta) - 1 - max(2, len(ta) // 3))] if ta else 0.0
    if not exact_match and len(ta) >= 3 and ta[-1] < 0.7 and ta[-1] - recent < 0.02:
        less = [Step("less L2", ("regularization.l2=0",))] if (get(run.cfg, "regularization.l2") or 0) > 0 else []
        if (get(run.cfg, "model.dropout") or 0) > 0:
            less.append(Step("less dropout", ("model.dropout=0",)))
        out.append(Finding(
            "underfitting", "underfitting",
            f"train_acc low and flat: {ta[0]:.1%} -> {ta[-1]:.1%} over {len(ta)} epochs",
            [Step("more capacity (a bigger model=, more units/filters in model.layers)")] + longer_step(run.cfg)
            + lr_step(run.cfg, 3, "a higher learning rate") + less))
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
                [Step("decay the learning rate", (f"scheduler={x}",)) for x in ("cosine", "step", "plateau")]))
    return out


def chance_findings(run: Run) -> list[Finding]:
    """Accuracy never clearly above guessing: best train and val accuracy below 1/C + CHANCE_MARGIN of the rest.

    A run at chance level learned nothing, whatever else looks healthy; it is never "no problems".
    """
    c = run.num_classes
    acc = series(run.history, "train_acc") + series(run.history, "val_acc")
    if not c or c < 2 or not acc or config_task(run.cfg.get("data") or {}) != "classification":
        return []  # binary/multilabel chance is the base rate, not 1/C; regression has no accuracy
    chance = 1 / c
    bar = chance + CHANCE_MARGIN * (1 - chance)
    if max(acc) >= bar:
        return []
    return [Finding("chance_level", "accuracy at chance level",
                    f"best accuracy {max(acc):.1%} over {len(run.history)} epochs, chance is {chance:.1%} for {c} "
                    f"classes (below {bar:.1%} counts as guessing)",
                    [Step("check that the model can learn at all: `dltool overfit-sanity-check` with the same "
                          "overrides must memorize a few examples")] + longer_step(run.cfg)
                    + lr_step(run.cfg, 3, "a higher learning rate"))]


CANNOT = "update ratios, dead or saturated units, gradient flow and the loss at init"


def diagnose_run(run_dir: Path) -> tuple[list[Finding], list[str]]:
    """(findings, what could not be judged); writes diagnosis.json to the run dir."""
    run = load_run(run_dir)
    findings, cannot = lr_findings(run), []
    if run.signals is None:
        cannot.append(f"{CANNOT}: no signals.csv (trained with trainer.diagnostics=false or before dltool "
                      f"recorded signals)")
    else:
        findings += layer_findings(run.signals, run.cfg, run.num_classes)
    findings += fit_findings(run)
    if not run.history:
        cannot.append("learning curves: no metrics.csv and no history in checkpoints/last.pt")
    findings = settle(findings + chance_findings(run))
    record = {"findings": [f.record() for f in findings], "cannot_judge": cannot, "epochs": len(run.history)}
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
