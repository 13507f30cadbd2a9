"""`dltool sweep-report SWEEP_DIR`: one table, sweep.csv and sweep.png from the job dirs of a sweep.

Every job dir holds .hydra/overrides.yaml (its hyperparameters), summary.json (best value, stop reason,
test metrics, or "failed": true with the error) and metrics.csv. The search space comes from the Optuna
sweeper's params (.hydra/hydra.yaml), the command lines logged in invocations.yaml and the basic
sweeper's multirun.yaml; without any of them the values the jobs used stand in for it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import dltool.plots  # noqa: F401  (selects the headless Agg backend)
from dltool.commands.rundir import inside
from dltool.console import console, note, table, warning
from dltool.errors import ConfigError
from dltool.tasks import HEADLINE

EDGE = 0.1  # a best value in the outer 10% of a continuous range counts as "at the edge"


@dataclass
class Job:
    name: str                      # the job's dir name inside the sweep dir (0, 1, ..., r1_0, ...)
    path: Path
    values: dict[str, Any]         # every override of this job, key -> value
    summary: dict
    status: str                    # ok | pruned | diverged | failed | unfinished
    reason: str                    # stop reason or error

    @property
    def best(self) -> float | None:
        v = self.summary.get("best_value")
        return float(v) if v is not None and math.isfinite(float(v)) else None


@dataclass
class Space:
    """A swept hyperparameter's search range: an interval (low, high) or the discrete values tried."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: list[Any] = field(default_factory=list)
    choice: bool = False  # choice(...): a set of options, not a range (no edge warning)


def number(text: str) -> Any:
    """'1e-3' -> 0.001, '4' -> 4, 'adam' -> 'adam' (PyYAML would keep 1e-3 a string)."""
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def job_key(path: Path) -> tuple:
    prefix, _, num = path.name.rpartition("_")
    return (prefix, int(num)) if num.isdigit() else (path.name, 0)


def load_job(path: Path) -> Job:
    overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    values = {}
    for o in overrides:
        k, _, v = str(o).lstrip("+").partition("=")
        values[k] = number(v)
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if not summary:
        summary = partial_summary(path)
        status = "unfinished"
        reason = f"no summary.json (killed or still running) after {summary.get('epochs_run', 0)} epochs"
    elif summary.get("failed"):
        status, reason = "failed", str(summary.get("error", "unknown error"))
    elif summary.get("diverged"):
        status, reason = "diverged", str(summary.get("stop_reason", ""))
    elif str(summary.get("stop_reason", "")).startswith("pruned at epoch"):
        status, reason = "pruned", str(summary["stop_reason"])
    else:
        status, reason = "ok", str(summary.get("stop_reason", ""))
    return Job(path.name, path, values, summary, status, reason)


def partial_summary(path: Path) -> dict:
    """A job without summary.json (killed, or still running): its best value so far from metrics.csv."""
    cfg_file, metrics = path / "config.yaml", path / "metrics.csv"
    if not (cfg_file.is_file() and metrics.is_file()):
        return {}
    trainer = (yaml.safe_load(cfg_file.read_text()) or {}).get("trainer", {})
    monitor, mode = trainer.get("monitor", "val_loss"), trainer.get("mode", "min")
    with open(metrics) as f:
        rows = [r for r in csv.DictReader(f) if r.get(monitor) not in (None, "") and math.isfinite(float(r[monitor]))]
    if not rows:
        return {"monitor": monitor, "mode": mode}
    pick = min if mode == "min" else max
    best = pick(rows, key=lambda r: float(r[monitor]))
    return {"monitor": monitor, "mode": mode, "best_value": float(best[monitor]), "best_epoch": int(best["epoch"]),
            "epochs_run": len(rows)}


def load_jobs(sweep_dir: Path) -> list[Job]:
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep-report: {sweep_dir} is not a directory; pass the sweep dir `dltool train -m` "
                          f"printed.")
    dirs = sorted((d for d in sweep_dir.iterdir() if (d / ".hydra" / "overrides.yaml").is_file()), key=job_key)
    if not dirs:
        raise ConfigError(f"sweep-report: {sweep_dir} holds no sweep jobs (no subdirectory with "
                          f".hydra/overrides.yaml); pass the sweep dir `dltool train -m` printed.")
    return [readable(f"job dir {d}", load_job, d) for d in dirs]


DAMAGED = (json.JSONDecodeError, yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError, UnicodeDecodeError,
           OSError, csv.Error)


def readable(what: str, read: Any, *args: Any) -> Any:
    """read(*args), or one sentence when a file of the sweep is damaged or was not written by dltool."""
    try:
        return read(*args)
    except DAMAGED as ex:
        detail = str(ex).splitlines()[0][:120] if str(ex) else ""
        raise ConfigError(f"sweep-report: {what} is damaged or was not written by dltool ({type(ex).__name__}"
                          f"{': ' + detail if detail else ''}); pass the sweep dir `dltool train -m` printed.") \
            from None


def sweep_strings(sweep_dir: Path, jobs: list[Job]) -> list[str]:
    """Every `key=sweep-expression` known for this sweep (Optuna params, logged command lines, multirun.yaml)."""
    out: list[str] = []
    for job in jobs:
        hydra_file = job.path / ".hydra" / "hydra.yaml"
        params = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("sweeper", {}).get("params") \
            if hydra_file.is_file() else None
        out += [f"{k}={v}" for k, v in (params or {}).items()]
    invocations = sweep_dir / "invocations.yaml"
    if invocations.is_file():
        out += [a for inv in yaml.safe_load(invocations.read_text()) or [] for a in inv.get("args", [])]
    multirun = sweep_dir / "multirun.yaml"
    if multirun.is_file():
        out += list((yaml.safe_load(multirun.read_text()) or {}).get("hydra", {}).get("overrides", {}).get("task", []))
    return list(dict.fromkeys(out))


def parse_spaces(strings: list[str]) -> dict[str, Space]:
    """Hydra's own override parser reads interval(...), tag(log, ...), choice(...), range(...) and a,b,c."""
    parser, spaces = OverridesParser.create(), {}
    for s in strings:
        try:
            o = parser.parse_override(s)
        except Exception:  # noqa: BLE001, S112 - not an override this report understands
            continue
        key, v = o.get_key_element().lstrip("+"), o.value()
        if not o.is_sweep_override() or key.startswith("hydra") or key == "hparams_search":
            continue
        if isinstance(v, IntervalSweep):
            spaces[key] = Space(key, float(v.start), float(v.end), "log" in (v.tags or set()))
        elif isinstance(v, RangeSweep):
            spaces[key] = Space(key, values=[number(str(x)) for x in o.sweep_iterator()])
        elif isinstance(v, ChoiceSweep):  # a,b,c (simple form) is a grid; choice(a, b, c) a set of options
            spaces[key] = Space(key, values=[number(str(x)) for x in o.sweep_string_iterator()],
                                choice=not v.simple_form)
    return spaces


def invocation_keys(sweep_dir: Path) -> set[str]:
    """Keys some invocation set to one plain value on its command line (the same for all of its jobs)."""
    invocations = sweep_dir / "invocations.yaml"
    if not invocations.is_file():
        return set()
    out = set()
    for inv in yaml.safe_load(invocations.read_text()) or []:
        for a in inv.get("args", []):
            key, sep, value = str(a).lstrip("+").partition("=")
            if sep and not any(c in value for c in ",()") and not key.startswith("hydra"):
                out.add(key)
    return out


def swept_spaces(sweep_dir: Path, jobs: list[Job]) -> dict[str, Space]:
    """The search space, plus any key whose value differs between jobs (its tried values as the range)."""
    spaces = parse_spaces(sweep_strings(sweep_dir, jobs))
    keys = dict.fromkeys(k for j in jobs for k in j.values)
    fixed = invocation_keys(sweep_dir)  # e.g. trainer.epochs=4 when a study was continued: not a searched key
    for k in keys:
        seen = list(dict.fromkeys(j.values.get(k) for j in jobs))
        if k not in spaces and k not in fixed and len(seen) > 1 and not k.startswith("hydra") \
                and k != "hparams_search":
            spaces[k] = Space(k, values=seen)
    for s in spaces.values():
        nums = [v for v in s.values if is_num(v)]
        if not s.log and s.low is None and nums and min(nums) > 0 and max(nums) / min(nums) >= 10:
            s.log = True  # positive values spanning a decade or more (1e-3, 3e-3, 1e-2): read them on a log axis
    return spaces


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rank(jobs: list[Job], mode: str) -> list[Job]:
    """Finished jobs best first, then pruned, diverged, failed/unfinished (listed, never dropped)."""
    order = {"ok": 0, "pruned": 1, "diverged": 2, "failed": 3, "unfinished": 4}
    sign = 1 if mode == "min" else -1

    def key(j: Job) -> tuple:
        return (order[j.status], j.best is None, sign * j.best if j.best is not None else 0.0, job_key(j.path))

    return sorted(jobs, key=key)


def edge_warnings(best: Job, spaces: dict[str, Space]) -> list[str]:
    """The best job's value of each numeric hyperparameter at the border of its range: widen the range.

    An interval: the outer EDGE of it (log scale for log-searched ones). A grid (a,b,c or range()): only its
    smallest or largest value (an interior grid value is inside, however close). choice(...): never (options).
    """
    out = []
    for key, s in spaces.items():
        v = best.values.get(key)
        if not is_num(v) or s.choice:
            continue
        if s.low is not None and s.high is not None and s.high > s.low:
            low, high = s.low, s.high
            f = (lambda x: math.log10(x)) if s.log and low > 0 and v > 0 else (lambda x: x)
            t = (f(v) - f(low)) / (f(high) - f(low))
            side = "low" if t <= EDGE else "high" if t >= 1 - EDGE else None
        else:
            nums = sorted(x for x in s.values if is_num(x))
            if len(nums) < 2:
                continue
            low, high = nums[0], nums[-1]
            side = "low" if v <= low else "high" if v >= high else None
        if side == "low" and low == 0:
            continue  # a range starting at 0 (no L2, no dropout) has nothing below it
        if side:
            out.append(f"the best job ({best.name}) has {key}={fmt(v)} at the {side} edge of the range "
                       f"{fmt(low)}..{fmt(high)}: the optimum may lie {'below' if side == 'low' else 'above'} it; "
                       f"widen the range")
    return out


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None else str(v)


# --------------------------------------------------------------------------- outputs
def row(job: Job, keys: list[str], monitor: str) -> dict[str, Any]:
    s = job.summary
    return {"job": job.name, "status": job.status, **{k: job.values.get(k) for k in keys},
            f"best_{monitor}": job.best, "best_epoch": s.get("best_epoch"), "epochs_run": s.get("epochs_run"),
            "stop_reason": job.reason, **{k: s.get(k) for k in test_keys([job])}, "test_loss": s.get("test_loss"),
            "seconds": s.get("seconds"), "run_dir": str(job.path)}


def write_csv(jobs: list[Job], keys: list[str], monitor: str, path: Path) -> None:
    rows = [row(j, keys, monitor) for j in jobs]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


def test_keys(jobs: list[Job]) -> list[str]:
    """The task's headline test metric of the jobs (test_acc for classification, test_r2 for regression, ...)."""
    tasks = {j.summary.get("task", "classification") for j in jobs if j.summary} or {"classification"}
    return [f"test_{HEADLINE[t]}" for t in sorted(tasks) if t in HEADLINE]


def print_table(jobs: list[Job], keys: list[str], monitor: str, title: str) -> None:
    tks = [k for k in test_keys(jobs) if any(k in j.summary for j in jobs)]
    cols = ["job", *keys, f"best {monitor}", "epoch", *[k.replace("_", " ", 1) for k in tks], "time", "status",
            "reason"]
    rows = []
    for j in jobs:
        s = j.summary
        color = {"ok": "green", "pruned": "blue", "diverged": "yellow"}.get(j.status, "red")
        rows.append([j.name, *[fmt(j.values.get(k)) for k in keys], "-" if j.best is None else f"{j.best:.4f}",
                     fmt(s.get("best_epoch")), *[fmt(s.get(k)) for k in tks],
                     f"{s['seconds']:.1f}s" if "seconds" in s else "-", f"[{color}]{j.status}[/]",
                     j.reason.split(". ")[0]])
    t = table(title, cols, rows)
    for c in t.columns[:-1]:
        c.no_wrap = True  # numbers and names stay whole; only the reason column folds
    t.columns[-1].justify = "left"
    console.print(t)


def plot(jobs: list[Job], spaces: dict[str, Space], monitor: str, path: Path) -> None:
    figure(jobs, spaces, monitor, path.parent.name).savefig(path, dpi=110, bbox_inches="tight")


def figure(jobs: list[Job], spaces: dict[str, Space], monitor: str, title: str) -> Figure:
    """The best metric against each swept hyperparameter (log axis for log-scale ones), the best job starred,
    pruned trials drawn (x: their best value before they were stopped)."""
    keys = list(spaces)
    fig = Figure(figsize=(4.2 * max(1, len(keys)), 3.6))
    done = [j for j in jobs if j.status == "ok" and j.best is not None]
    pruned = [j for j in jobs if j.status == "pruned" and j.best is not None]
    for i, key in enumerate(keys or ["(nothing swept)"]):
        ax = fig.add_subplot(1, max(1, len(keys)), i + 1)
        raw = [j.values.get(key) for j in done + pruned]
        numeric = all(is_num(x) for x in raw)
        labels = list(dict.fromkeys(str(x) for x in raw))
        xs = raw if numeric else [labels.index(str(x)) for x in raw]  # categorical: one position per value
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.scatter(xs[:len(done)], [j.best for j in done], s=22, label="finished")
        if pruned:
            ax.scatter(xs[len(done):], [j.best for j in pruned], marker="x", s=26, color="tab:gray",
                       label=f"pruned ({len(pruned)}; best before stopping)")
        if done:
            ax.scatter([xs[0]], [done[0].best], marker="*", s=160, color="tab:red", label=f"best ({done[0].name})")
        if done or pruned:
            ax.legend(fontsize=7)
        s = spaces.get(key)
        log = s is not None and s.log and numeric and all(x > 0 for x in xs)
        if log:
            ax.set_xscale("log")
        elif numeric:
            linear_ticks(ax, xs, s)
        if s is not None and s.low is not None and s.high is not None and s.high > s.low:
            ax.set_xlim(s.low, s.high)  # the whole search interval: samples crowding one end show at a glance
        ax.set_xlabel(key + (" (log)" if log else ""))
        ax.set_ylabel(f"best {monitor}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: {len(done)} finished, {len(pruned)} pruned of {len(jobs)} jobs")
    fig.subplots_adjust(wspace=0.35)
    return fig


def linear_ticks(ax: Any, xs: list, space: Space | None) -> None:
    """Readable ticks on a linear axis: the grid's own values, or at most 5 ticks with a shared x10^k offset.

    Matplotlib's default writes 0.00000, 0.00002, ... for small values (l2=0,1e-4), labels that overlap.
    """
    values = sorted(set(space.values if space is not None and space.values and space.low is None else xs))
    if 1 < len(values) <= 6 and all(is_num(v) for v in values):
        ax.set_xticks(values, [fmt(float(v)) for v in values], rotation=30)
        return
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3), useMathText=True)


def report(sweep_dir: Path) -> dict:
    """Print the table and the edge warnings, write sweep.csv and sweep.png; return what was found."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    first = next((j.summary for j in jobs if "monitor" in j.summary), {"monitor": "value", "mode": "min"})
    monitor, mode = first["monitor"], first["mode"]
    spaces = readable(f"the sweep's records in {sweep_dir}", swept_spaces, sweep_dir, jobs)
    for name in ("sweep.csv", "sweep.png"):
        inside(sweep_dir, sweep_dir / name)  # never written through a link planted in the sweep dir
    ranked = rank(jobs, mode)
    keys = list(spaces)
    print_table(ranked, keys, monitor, f"sweep {sweep_dir} ({len(jobs)} jobs, best {monitor} "
                                       f"{'lowest' if mode == 'min' else 'highest'} first)")
    write_csv(ranked, keys, monitor, sweep_dir / "sweep.csv")
    plot(ranked, spaces, monitor, sweep_dir / "sweep.png")
    best = ranked[0] if ranked[0].status == "ok" and ranked[0].best is not None else None
    warnings = edge_warnings(best, spaces) if best else []
    for w in warnings:
        warning(w)
    bad = [j for j in jobs if j.status != "ok"]
    counts = ", ".join(f"{sum(j.status == s for j in jobs)} {s}" for s in ("ok", "pruned", "diverged", "failed",
                                                                             "unfinished")
                       if any(j.status == s for j in jobs))
    note(f"{counts}; best: {'none' if best is None else f'job {best.name} ({monitor}={best.best:.4f})'}; "
         f"wrote {sweep_dir / 'sweep.csv'}, {sweep_dir / 'sweep.png'}")
    return {"jobs": ranked, "spaces": spaces, "best": best, "warnings": warnings, "bad": bad}
