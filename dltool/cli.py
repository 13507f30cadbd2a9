"""`dltool <command>`: the only place that parses argv.

Hydra commands (train, ...) first compose the config once with Hydra's compose API, so a mistake gets
one sentence before any run directory exists; a single run then runs that config in Hydra's job runner, and
a sweep hands the same arguments to Hydra's sweeper and launcher (config.compose.launch; no @hydra.main, so
Hydra's own command-line flags are never read).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable

from dltool.cli_recipe import cmd_recipe
from dltool.cli_runs import (
    cmd_compare,
    cmd_diagnose,
    cmd_evaluate,
    cmd_export,
    cmd_list,
    cmd_predict,
    cmd_preview_augment,
    cmd_show_data,
    cmd_summary,
    wants_help,
)
from dltool.cli_schema import cmd_schema
from dltool.cli_train import cmd_cross_validate, cmd_gradcheck, cmd_lr_find, cmd_sanity, cmd_sweep_report, cmd_train
from dltool.errors import ConfigError

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "overfit-sanity-check": cmd_sanity,
    "gradcheck": cmd_gradcheck,
    "predict": cmd_predict,
    "export": cmd_export,
    "lr-find": cmd_lr_find,
    "cross-validate": cmd_cross_validate,
    "diagnose": cmd_diagnose,
    "compare": cmd_compare,
    "summary": cmd_summary,
    "list": cmd_list,
    "sweep-report": cmd_sweep_report,
    "preview-augment": cmd_preview_augment,
    "show-data": cmd_show_data,
    "recipe": cmd_recipe,
    "schema": cmd_schema,
}


def print_help() -> None:
    from dltool.console import console, table

    console.print("[bold]dltool[/] - the textbook neural-network training recipe as one YAML config.\n")
    console.print("usage: dltool \\[--plugins FILE.py] COMMAND \\[CONFIG.yaml] \\[key=value ...]\n")
    console.print(table("commands", ["command", "what it does"],
                        [(n, (f.__doc__ or "").strip().splitlines()[0]) for n, f in COMMANDS.items()], False))
    console.print("\nExamples:\n  dltool train\n  dltool train model=mlp optimizer.lr=0.01\n"
                  "  dltool train experiment=mlp_digits\n  dltool train -m optimizer.lr=1e-3,1e-2\n"
                  "  dltool train -m hparams_search=lr_random\n  dltool sweep-report outputs/multirun/SWEEP\n"
                  "  dltool summary model=cnn_digits\n  dltool list layers\n  dltool list all\n"
                  "  dltool preview-augment data=cifar10 augment=standard\n  dltool show-data data=spiral\n"
                  "  dltool evaluate outputs/RUN split=val\n  dltool overfit-sanity-check model=mlp\n"
                  "  dltool gradcheck\n  dltool predict outputs/RUN digit.png\n"
                  "  dltool export outputs/RUN --format onnx\n  dltool lr-find\n"
                  "  dltool cross-validate data.folds=5\n  dltool diagnose outputs/RUN\n  dltool compare RUN1 RUN2\n"
                  "  dltool recipe\n  dltool schema --out dltool.schema.json\n"
                  "  dltool --plugins my_layers.py list plugins\n\n"
                  "Every command takes --help; `dltool --version` prints the version. Set DLTOOL_DEBUG=1 to see full "
                  "tracebacks.")


def with_plugins(args: list[str]) -> list[str]:
    """`dltool --plugins FILE [--plugins FILE2] COMMAND ...`: run the named files (they register plug-in entries);
    only argv before the command is read, never a config, an override or a run directory."""
    if not any(a == "--plugins" or a.startswith("--plugins=") for a in args):
        return args  # the common case: no plug-in module imported here (start-up time, issue 22)
    from dltool import plugins

    files, rest = plugins.split_flags(args)
    for f in files:
        plugins.load_file(f)
    if not rest or any(a == plugins.FILE_FLAG or a.startswith(plugins.FILE_FLAG + "=") for a in rest):
        raise ConfigError("--plugins FILE goes before the command (dltool --plugins my_layers.py train ...), the only "
                          "place dltool reads it; nothing after the command can load code.")
    return rest


def main(argv: list[str] | None = None) -> None:
    """The console script (argv None): run the command, then exit at once; in-process callers (tests) get SystemExit."""
    if argv is not None:
        return run(list(argv))
    from dltool.train.deferred import detach_at_exit

    detach_at_exit()  # after Ctrl-C, a run's figures are drawn by a child as this process exits (exit_now)
    try:
        run(sys.argv[1:])
    except SystemExit as ex:
        exit_now(ex.code)
    exit_now(0)


def run(args: list[str]) -> None:
    os.environ["DLTOOL_COMMAND"] = shlex.join(["dltool", *args])  # provenance (summary.json): the command as typed
    from dltool.console import clear_status, quiet_third_party, status, terminal_logging

    quiet_third_party()
    if not args or args[0] in ("-h", "--help", "help"):
        print_help()
        sys.exit(0)
    if args[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"dltool {version('dltool')}")
        sys.exit(0)
    from dltool.registry import lookup

    terminal_logging()
    try:
        args = with_plugins(args)
        command = lookup(COMMANDS, args[0], "command")
        if wants_help(args[1:], command):  # prints the command's help
            code = 0
        else:
            status(f"dltool {args[0]}: starting")  # the first line on a terminal, replaced by the first real one
            code = command(args[1:])
    except ConfigError as ex:
        if os.environ.get("DLTOOL_DEBUG"):
            raise
        from dltool.console import error

        error(str(ex))
        sys.exit(2)
    finally:
        clear_status()
    sys.exit(code or 0)


def exit_now(code: object) -> None:
    """Leave without the interpreter's teardown, which takes 1.5-3.5 s once torch, sklearn and matplotlib are loaded.

    Everything a normal exit would still do for dltool happens first: the atexit handlers run (logging's flush and
    close of train.log, TensorBoard writers, multiprocessing, temporary directories), stdout and stderr are
    flushed; what is skipped is freeing every module's objects. The figures of a run stopped by Ctrl-C are
    handed to a child process first (dltool/train/deferred.py), which writes them after this process is gone.
    While another library's thread that is not a daemon still runs (joblib's and concurrent.futures' workers end
    only through the interpreter's own shutdown hooks, before it joins them), the normal exit is taken instead.
    """
    import atexit
    import threading

    from dltool.train.deferred import run_detached

    run_detached()  # an interrupted run's figures: a child draws them, this process leaves now
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)  # the interpreter's order: thread shutdown hooks, joins, then atexit
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # noqa: SLF001 - the documented handlers, run now instead of at teardown
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(int(code or 0) if isinstance(code, (int, bool)) or code is None else 1)
