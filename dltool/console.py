"""The only module that imports rich: config tree, progress bars, epoch lines, tables, errors."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.tree import Tree

from dltool.tasks import HEADLINE, TASKS

# Piped into a file or CI log there is no terminal width: use a wide one rather than rich's 80 columns,
# which would cut numbers in the summary tables short (COLUMNS, when set, still wins).
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False)


_status: Any = None  # the transient "starting" line (rich Status) while torch, the data and the model load


def status(message: str) -> None:
    """Show (or replace) one transient line on a terminal while a command starts; nothing when piped.

    It is the first thing a user sees (within a second of Enter, before torch is imported) and disappears when
    the command prints its first real line, so an error still reads as one sentence.
    """
    global _status
    if not err_console.is_terminal or os.environ.get("DLTOOL_NO_PROGRESS"):
        return
    if _status is None:
        _status = err_console.status(escape(message), spinner="dots", refresh_per_second=8)
        _status.start()
    else:
        _status.update(escape(message))


def clear_status() -> None:
    """Remove the starting line (before the config tree, a table, a progress bar, an error or a warning)."""
    global _status
    if _status is not None:
        _status.stop()
        _status = None


def error(message: str) -> None:
    """A user mistake: one sentence in red on stderr, no traceback."""
    clear_status()
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)  # messages may hold [a, b]


def warning(message: str) -> None:
    """Something the user should know that does not stop the command: one yellow `warning:` line on stderr."""
    clear_status()
    err_console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


class TerminalLog(logging.Handler):
    """The library's `logging` records on the terminal, in the same style as `warning()` and `error()`.

    configs/hydra/job_logging/dltool.yaml attaches it (level WARNING) next to the run dir's train.log.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                error(message)
            else:
                warning(message)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def note(message: str) -> None:
    clear_status()
    console.print(message, soft_wrap=True)


def plain(message: str) -> None:
    """Text printed as is (no rich markup: square brackets stay)."""
    clear_status()
    console.print(message, markup=False, soft_wrap=True)


def config_tree(cfg: dict, title: str = "config") -> None:
    """Print the resolved config as a tree: one line per group, one branch line per layer."""
    clear_status()
    tree = Tree(f"[bold]{title}[/]")
    for group, value in cfg.items():
        if not isinstance(value, dict) or not value:
            tree.add(f"[cyan]{group}[/]: {_inline(value)}")
            continue
        flat = {k: v for k, v in value.items() if not (isinstance(v, list) and v and isinstance(v[0], (dict, list)))}
        node = tree.add(f"[cyan]{group}[/]: " + "  ".join(f"{k}={_inline(v)}" for k, v in flat.items()))
        for k, v in value.items():
            if k not in flat:
                branch = node.add(f"[cyan]{k}[/]")
                for item in v:
                    branch.add(_inline(item))
    console.print(tree)


def _inline(v: Any) -> str:
    """A config value on one line, escaped so that rich shows `[fc2]` instead of reading it as markup."""
    return escape(_plain(v))


def _plain(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_plain(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_plain(i) for i in v) + "]"
    return "null" if v is None else str(v)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], justify_right: bool = True) -> Table:
    """A rich table; columns that are all empty strings mean: no header row."""
    t = Table(title=title, title_justify="left", header_style="bold", show_header=any(columns))
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if justify_right and i else "left")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def progress_bar(total_label: str = "epoch") -> Progress | None:
    """A transient progress bar on a terminal (None when piped, or with DLTOOL_NO_PROGRESS set)."""
    clear_status()
    if not console.is_terminal or os.environ.get("DLTOOL_NO_PROGRESS"):
        return None
    return Progress(TextColumn(total_label + " {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


def epoch_columns(task: str, monitor: str) -> list[str]:
    """The metrics an epoch line shows: losses, training accuracy (not for regression), the task's headline
    validation metric (val_acc, val_auroc, val_macro_f1, val_r2) and the monitored metric when it is another."""
    cols = ["train_loss"] + (["train_acc"] if TASKS[task].train_acc else []) + ["val_loss", f"val_{HEADLINE[task]}"]
    return cols + ([monitor] if monitor not in cols else [])


WIDTHS = {"train_loss": 10, "train_acc": 9, "val_loss": 9, "val_acc": 8}  # the classification line as always


def width(col: str) -> int:
    return WIDTHS.get(col, max(len(col), 8))


def epoch_header(columns: list[str]) -> None:
    heads = " ".join(f"{c:>{width(c)}}" for c in columns)
    console.print(f"[bold]{'epoch':>7} {heads} {'lr':>9} {'time':>6}[/]")


def cell(logs: dict, key: str, width: int, spec: str) -> str:
    """A metric formatted, or a dash where there is none (no validation split)."""
    return format(logs[key], f">{width}{spec}") if key in logs else "-".rjust(width)


def epoch_line(logs: dict, epochs: int, monitor: str, columns: list[str]) -> None:
    """One aligned line per epoch; `* best MONITOR` when the epoch improved. Accuracies show as percentages."""
    mark = f"  [green]* best {monitor}[/]" if logs.get("best") else ""
    cells = " ".join(cell(logs, c, width(c), ".2%" if c.endswith("_acc") else ".4f") for c in columns)
    console.print(f"{logs['epoch']:>3}/{epochs:<3} {cells} {logs['lr']:>9.2e} {logs['time']:>5.2f}s{mark}",
                  soft_wrap=True)


def quiet_third_party() -> None:
    """Keep the terminal for dltool's own output: no warnings from plugin imports (dltool.cli calls it first)."""
    if not os.environ.get("DLTOOL_DEBUG"):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="hydra")
        logging.getLogger("optuna").setLevel(logging.WARNING)


def terminal_logging() -> None:
    """Library warnings on the terminal as `warning: ...` for every command; Hydra's job logging
    (configs/hydra/job_logging/dltool.yaml) sets up the same handler plus the run dir's train.log."""
    root = logging.getLogger()
    if not any(isinstance(h, TerminalLog) for h in root.handlers):
        root.addHandler(TerminalLog(logging.WARNING))
