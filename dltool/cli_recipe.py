"""`dltool recipe`: the whole training recipe in one command (stages in dltool/commands/recipe.py).

The search stages and the final training go through `dltool train` itself (cmd_train: the Optuna sweep with
pruning, then one run), so every stage directory is what that command writes. Heavy imports stay inside the
command, like every `dltool/cli*.py` module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dltool.errors import ConfigError


def cmd_recipe(args: list[str]) -> int:
    """The whole recipe: loss at init, overfit check, lr range test, coarse + fine search, final training, test.

    usage: dltool recipe [CONFIG.yaml] [key=value ...] [recipe.KEY=VALUE ...]   |   dltool recipe resume=RECIPE_DIR
    recipe options (configs/recipe.yaml): coarse_trials, coarse_epochs, coarse_lr_span, l2_low, l2_high,
    fine_trials, fine_epochs, fine_keep, final_epochs, time_budget, out_dir. Writes one directory
    (outputs/recipe/<time>_<name>) with a sub-directory per stage, recipe.md and recipe.png. Stops at the first
    stage that fails (exit 1) with its diagnosis and the key to change; resume= continues a stopped recipe.
    """
    from dltool.commands.recipe import RecipeOptions, read_state, write_state
    from dltool.config.compose import train_config
    from dltool.config.options import as_dict, load_options, split_prefixed

    recipe_args, rest = split_prefixed(args, "recipe")
    resume = [a.split("=", 1)[1] for a in rest if a.startswith("resume=")]
    if any(a in ("-m", "--multirun") for a in rest):
        raise ConfigError("dltool recipe runs its own searches (stages 4 and 5); drop -m and set their budgets with "
                          "recipe.coarse_trials / recipe.fine_trials.")
    if resume:
        others = [a for a in rest if not a.startswith("resume=")]
        if others:
            raise ConfigError(f"dltool recipe resume={resume[0]} continues with the recipe's stored config; only "
                              f"recipe.KEY=VALUE options may change (got {' '.join(others)}).")
        recipe_dir = Path(resume[0])
        state = read_state(recipe_dir)
        rest, recipe_args = list(state["args"]), list(state["recipe_args"]) + recipe_args  # new options win
    opts = load_options(RecipeOptions, "recipe", recipe_args)
    check_recipe_options(opts)
    cfg = train_config(rest)  # the config is checked in full before anything is written
    if not resume:
        recipe_dir = new_recipe_dir(opts, cfg.name)
        state = {"args": rest, "stages": [], "name": cfg.name, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    state["recipe_args"], state["options"] = recipe_args, as_dict(opts)  # a resume's new options are kept too
    write_state(recipe_dir, state)
    return run_stages(recipe_dir, state, opts, cfg, rest)


def check_recipe_options(opts: Any) -> None:
    if opts.l2_low >= opts.l2_high:
        raise ConfigError(f"recipe.l2_low={opts.l2_low:g} and recipe.l2_high={opts.l2_high:g}: need l2_low < l2_high.")
    if opts.coarse_lr_span <= 1:
        raise ConfigError(f"recipe.coarse_lr_span={opts.coarse_lr_span:g} must be above 1 (the coarse lr range is "
                          f"the suggestion / span .. x span).")


def new_recipe_dir(opts: Any, name: str) -> Path:
    """A fresh recipe directory (recipe.out_dir must be new or empty)."""
    from dltool.commands.rundir import fresh_dir, out_folder

    if opts.out_dir is None:
        return fresh_dir(Path("outputs") / "recipe" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{name}")
    path = out_folder(Path(opts.out_dir))
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"recipe.out_dir={opts.out_dir} is not empty; continue a recipe there with "
                          f"resume={opts.out_dir}, or name a new folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_stages(recipe_dir: Path, state: dict, opts: Any, cfg: Any, rest: list[str]) -> int:
    """Each stage not yet passed, in order; the state file and the report are rewritten after every stage."""
    from dltool.commands.recipe import STAGES, Stage, as_record, done_stages, elapsed, timed, write_state
    from dltool.commands.recipe_report import print_stage, write_report
    from dltool.console import note

    note(f"recipe directory: {recipe_dir}")
    for name in STAGES:
        done = done_stages(state)
        if name in done:
            note(f"stage {name}: done before ({done[name].found})")
            continue
        if opts.time_budget is not None and elapsed(state) >= opts.time_budget:
            st = Stage(name, did="not started").failed([
                f"recipe.time_budget={opts.time_budget:g} s ran out after {elapsed(state):.0f} s, before this stage; "
                f"raise it and continue with: dltool recipe resume={recipe_dir} recipe.time_budget="
                f"{2 * opts.time_budget:g}"], "recipe.time_budget")
        else:
            if not resumable(recipe_dir / name):
                set_aside(recipe_dir / name)
            st = timed(run_one, name, recipe_dir, done, opts, cfg, rest, state)
        state["stages"] = [s for s in state["stages"] if s["name"] != name] + [as_record(st)]
        write_state(recipe_dir, state)
        write_report(recipe_dir, state)
        print_stage(st)
        if not st.passed:
            return 1
    note(f"recipe done in {elapsed(state):.0f} s: {recipe_dir / 'recipe.md'}, {recipe_dir / 'recipe.png'}")
    return 0


def resumable(out: Path) -> bool:
    """A final training killed after its first last.pt: `dltool train resume=` continues it where it stopped."""
    return out.name == "6_final" and (out / "checkpoints" / "last.pt").is_file() and not (out / "summary.json").exists()


def set_aside(out: Path) -> None:
    """A stage directory left by a killed attempt is kept, renamed <stage>.incomplete[_N]; the stage starts over."""
    if not out.exists():
        return
    for i in range(1, 1000):
        target = out.with_name(f"{out.name}.incomplete" + (f"_{i}" if i > 1 else ""))
        if not target.exists():
            out.rename(target)
            return


def run_one(name: str, recipe_dir: Path, done: dict, opts: Any, cfg: Any, rest: list[str], state: dict) -> Any:
    """One stage; a refusal inside it (a ConfigError) becomes that stage's failure, with the sentence."""
    from dltool.commands import recipe as r

    out = recipe_dir / name
    try:
        if name in ("1_init_loss", "2_overfit", "3_lr_find"):
            fn = {"1_init_loss": r.stage_init_loss, "2_overfit": r.stage_overfit, "3_lr_find": r.stage_lr_find}[name]
            return fn(cfg, out)
        if name == "4_coarse":
            space = r.coarse_space(cfg, float(done["3_lr_find"].passes_on["suggested_lr"]), opts)
            return search(name, out, space, opts.coarse_trials, opts.coarse_epochs, opts, rest)
        if name == "5_fine":
            space = r.fine_space(done["4_coarse"].passes_on["top"], done["4_coarse"].passes_on["space"])
            return search(name, out, space, opts.fine_trials, opts.fine_epochs, opts, rest)
        if name == "6_final":
            return final(out, done["5_fine"].passes_on["best"], opts, rest, r.elapsed(state))
        return r.stage_evaluate(Path(done["6_final"].passes_on["run_dir"]), out)
    except ConfigError as ex:
        return r.Stage(name, did="refused").failed([str(ex)])


def without(args: list[str], keys: set[str]) -> list[str]:
    return [a for a in args if a.lstrip("+").split("=", 1)[0] not in keys]


def search(name: str, out: Path, space: dict, trials: int, epochs: int, opts: Any, rest: list[str]) -> Any:
    """`dltool train -m` over the space (its own sweep dir), then the ranked jobs."""
    from dltool.cli_train import cmd_train
    from dltool.commands.recipe import read_search, sweep_args

    keys = set(space) | {"trainer.epochs", "hydra.sweep.dir", "trainer.diagnostics", "trainer.loggers",
                         "trainer.progress"}
    cmd_train(without(rest, keys) + sweep_args(space, trials, epochs, out))
    return read_search(name, out, space, opts.fine_keep)


def final(out: Path, best: dict, opts: Any, rest: list[str], spent: float) -> Any:
    """`dltool train` with the winner's values, full length, in the stage dir; what time is left is its budget."""
    from dltool.cli_train import cmd_train
    from dltool.commands.recipe import stage_final

    if resumable(out):  # the stored config.yaml holds the winner's values and the budget
        cmd_train([f"resume={out}"])
        return stage_final(out)
    args = without(rest, set(best) | {"hydra.run.dir"}) + [f"{k}={v}" for k, v in best.items()]
    if opts.final_epochs is not None:
        args = without(args, {"trainer.epochs"}) + [f"trainer.epochs={opts.final_epochs}"]
    if opts.time_budget is not None:
        args = without(args, {"trainer.max_time"}) + [f"trainer.max_time={max(opts.time_budget - spent, 1.0):.0f}"]
    cmd_train(args + [f"hydra.run.dir='{out}'"])
    return stage_final(out)
