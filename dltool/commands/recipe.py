"""`dltool recipe`: the cs231n process as one command, each stage the existing command's own code.

1 loss at init (the sanity check's first loss vs the task's expected value) -> 2 overfit ~20 examples with
regularization off (overfit-sanity-check) -> 3 learning-rate range test (lr-find) -> 4 coarse random search of
lr, L2 (and dropout where the model reads it) around the suggestion, pruning on (the `train -m` Optuna sweep) ->
5 fine search in ranges narrowed around the best coarse trials -> 6 the final training with the winner -> 7
evaluate on the test split and diagnose. Each stage writes what its command writes, into <recipe>/<stage>/.
The recipe stops at the first stage that fails, with that stage's diagnosis and the config key to change.
Progress is recorded in recipe_state.json (written atomically), so `resume=RECIPE_DIR` skips finished stages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltool.commands.diagnose import diagnose_run
from dltool.commands.evaluate import OPTIONS as EVAL_OPTIONS
from dltool.commands.evaluate import run_evaluate
from dltool.commands.lr_find import LrFindOptions, check_options, override_for, range_test, suggest
from dltool.commands.lr_find import write_outputs as write_lr_find
from dltool.commands.rundir import write_text
from dltool.commands.sanity import SanityOptions, overfit
from dltool.commands.sanity import write_outputs as write_sanity
from dltool.commands.sweep_report import Job, load_jobs, rank
from dltool.config.options import load_options, options_class
from dltool.config.schema import TrainConfig
from dltool.errors import ConfigError
from dltool.tasks import HEADLINE
from dltool.train.run import prepare

RecipeOptions = options_class("recipe", "RecipeOptions", __name__)  # keys: dltool/config/keys_options.py
STATE = "recipe_state.json"
STAGES = {"1_init_loss": "loss at initialization", "2_overfit": "overfit ~20 examples, regularization off",
          "3_lr_find": "learning-rate range test", "4_coarse": "coarse random search",
          "5_fine": "fine random search", "6_final": "final training", "7_evaluate": "test split + diagnosis"}
KEY = re.compile(r"\b((?:optimizer|scheduler|regularization|init|model|loss|trainer|data|augment|recipe|sanity)"
                 r"\.[a-z_]+)")


@dataclass
class Stage:
    """What one stage did, found and handed on; on failure the diagnosis and the config key to change."""

    name: str
    passed: bool = False
    seconds: float = 0.0
    did: str = ""
    found: str = ""
    passes_on: dict = field(default_factory=dict)
    diagnosis: list[str] = field(default_factory=list)
    key: str = ""

    def failed(self, diagnosis: list[str], key: str = "") -> Stage:
        self.passed, self.diagnosis = False, [d for d in diagnosis if d]
        self.key = key or next((m.group(1) for d in self.diagnosis for m in [KEY.search(d)] if m), "")
        return self


def read_state(recipe_dir: Path) -> dict:
    file = recipe_dir / STATE
    if not file.is_file():
        raise ConfigError(f"resume={recipe_dir} is not a recipe directory (no {STATE} in it); give the directory "
                          f"`dltool recipe` printed.")
    try:
        state = json.loads(file.read_text())
    except (OSError, ValueError) as ex:
        raise ConfigError(f"resume: {file} cannot be read ({type(ex).__name__}); start a new recipe.") from None
    if not isinstance(state, dict) or not isinstance(state.get("stages"), list):
        raise ConfigError(f"resume: {file} is not a dltool recipe state; start a new recipe.")
    return state


def write_state(recipe_dir: Path, state: dict) -> None:
    write_text(recipe_dir, recipe_dir / STATE, json.dumps(state, indent=2))  # temp file + rename


def done_stages(state: dict) -> dict[str, Stage]:
    return {s["name"]: Stage(**s) for s in state["stages"] if s.get("passed")}


def sanity_opts(out: Path, extra: list[str]) -> Any:
    return load_options(SanityOptions, "sanity", [f"out_dir={out}", *extra])


def stage_init_loss(cfg: TrainConfig, out: Path) -> Stage:
    """The loss before any step (the sanity check's first loss) against the task's expected value, on 256
    training examples: on the sanity check's 20 the subset's own spread decides too much (diabetes: the mean
    squared standardized target of 20 examples is 1.61, of all of them 1)."""
    opts = sanity_opts(out, ["max_steps=1", "examples=256"])
    o = overfit(cfg, opts)
    write_sanity(o, cfg, opts)
    st = Stage("1_init_loss", passed=True, did=f"one forward pass on {o.examples} training examples, regularization "
                                               f"off")
    if o.expected_init is None:
        st.found = f"loss {o.init_loss:.4f}; loss.name={cfg.loss.name} has no textbook value to compare with"
    else:
        st.found = (f"loss {o.init_loss:.4f}, expected {o.expected_init:.4f} "
                    f"({(o.init_loss - o.expected_init) / o.expected_init:+.1%})")
    st.passes_on = {"init_loss": o.init_loss, "expected": o.expected_init}
    if not math.isfinite(o.init_loss) or o.init_note:
        return st.failed([o.init_note or f"the loss at initialization is {o.init_loss}"], "init.scheme")
    return st


def stage_overfit(cfg: TrainConfig, out: Path) -> Stage:
    """`dltool overfit-sanity-check` with its default options."""
    opts = sanity_opts(out, [])
    o = overfit(cfg, opts)
    write_sanity(o, cfg, opts)
    acc = f", training accuracy {o.final_acc:.0%}" if o.final_acc == o.final_acc else ""
    off = f"off: {', '.join(o.turned_off)}" if o.turned_off else "none was on"
    st = Stage("2_overfit", passed=True, did=f"up to {opts.max_steps} steps on {o.examples} examples "
                                             f"(regularization {off})",
               found=f"loss {o.init_loss:.3g} -> {o.final_loss:.3g} in {len(o.losses)} steps{acc}",
               passes_on={"final_loss": o.final_loss, "steps": len(o.losses)})
    return st if o.passed else st.failed([o.verdict, *o.diagnosis])


def stage_lr_find(cfg: TrainConfig, out: Path) -> Stage:
    """`dltool lr-find` with its default options: the suggestion is the centre of the coarse search."""
    o = load_options(LrFindOptions, "lr_find", [f"out_dir={out}"])
    check_options(o)
    curve = range_test(cfg, prepare(cfg), o)
    best = suggest(curve, o)
    write_lr_find(cfg, o, curve, best)
    st = Stage("3_lr_find", passed=True, did=f"{len(curve['lrs'])} steps, lr {o.start:g} -> {o.end:g} "
                                             f"({curve['stop_reason']})",
               found=f"lowest smoothed loss {best['min_loss']:.3g} at lr {best['min_loss_lr']:.2e}; suggested lr "
                     f"{best['suggested_lr']:.3g} (/ {o.divisor:g})",
               passes_on={"suggested_lr": best["suggested_lr"], "min_loss_lr": best["min_loss_lr"]})
    first = curve["smoothed"][0]
    if not (math.isfinite(best["min_loss"]) and best["min_loss"] < first):
        return st.failed([f"the smoothed loss never fell below its first value {first:.4g} for any learning rate "
                          f"from {o.start:g} to {o.end:g} with optimizer.name={cfg.optimizer.name}: the model "
                          f"cannot learn at any rate; check it with `dltool gradcheck`, or try another optimizer "
                          f"(optimizer=sgd)"], "optimizer.name")
    return st


def reads_dropout(cfg: TrainConfig) -> bool:
    """Whether model.dropout is set (configs read it as ${model.dropout} in a dropout layer; see check_dropout_key)."""
    return cfg.model.dropout is not None


def coarse_space(cfg: TrainConfig, lr: float, opts: Any) -> dict[str, list]:
    """key -> [low, high, log]: lr around the range test's suggestion, L2 wide, dropout where the model reads it."""
    key = override_for(cfg, lr).split("=")[0]  # optimizer.lr, or scheduler.max_lr under onecycle (as lr-find says)
    space = {key: [lr / opts.coarse_lr_span, lr * opts.coarse_lr_span, True],
             "regularization.l2": [opts.l2_low, opts.l2_high, True]}
    if reads_dropout(cfg):
        space["model.dropout"] = [0.0, 0.6, False]
    return space


def fine_space(best: list[dict], coarse: dict[str, list]) -> dict[str, list]:
    """Ranges narrowed to the best coarse trials' values (log keys x/÷ 2 beyond them, linear ones +-0.1)."""
    space = {}
    for key, (low, high, log) in coarse.items():
        values = [float(b[key]) for b in best]
        if log:
            space[key] = [min(values) / 2, max(values) * 2, True]
        else:
            space[key] = [max(low, min(values) - 0.1), min(high, max(values) + 0.1), False]
    return space


def sweep_args(space: dict[str, list], trials: int, epochs: int, out: Path) -> list[str]:
    """The `dltool train -m` overrides of one search stage (dltool's Optuna sweeper, random sampler, median
    pruner; each trial a normal run dir, quiet: csv metrics only). The pruner waits for a third of the trials
    and judges from half of each trial's epochs on: at epoch 1 a small learning rate always looks worse, so an
    earlier verdict would prune the small rates and leave the search only large ones."""
    args = ["-m", "hparams_search=optuna", f"hydra.sweep.dir='{out}'", f"hydra.sweeper.n_trials={trials}",
            "hydra/sweeper/pruner=median", f"hydra.sweeper.pruner.n_startup_trials={max(2, trials // 3)}",
            f"hydra.sweeper.pruner.n_warmup_steps={epochs // 2}", f"trainer.epochs={epochs}",
            "trainer.diagnostics=false", "trainer.loggers=[csv]", "trainer.progress=false"]
    for key, (low, high, log) in space.items():
        args.append(f"{key}=tag(log, interval({low:.4g}, {high:.4g}))" if log else
                    f"{key}=interval({low:.4g}, {high:.4g})")
    return args


def read_search(name: str, out: Path, space: dict[str, list], keep: int) -> Stage:
    """The sweep's jobs ranked by the monitored metric: the winner, the best `keep`, pruned/diverged counts."""
    jobs = load_jobs(out)
    ok = [j for j in rank(jobs, mode_of(jobs)) if j.status == "ok" and j.best is not None]
    counts = ", ".join(f"{sum(j.status == s for j in jobs)} {s}" for s in ("ok", "pruned", "diverged", "failed",
                                                                             "unfinished") if any(j.status == s
                                                                                                  for j in jobs))
    ranges = "; ".join(f"{k} {lo:.3g}..{hi:.3g}{' (log)' if log else ''}" for k, (lo, hi, log) in space.items())
    st = Stage(name, passed=True, did=f"{len(jobs)} random trials: {ranges}")
    if not ok:
        return st.failed([f"no trial finished ({counts}): every learning rate in the range diverged, failed or was "
                          f"pruned; look at one trial's train.log under {out}, then lower optimizer.lr or narrow "
                          f"recipe.coarse_lr_span"], "recipe.coarse_lr_span")
    monitor = ok[0].summary.get("monitor", "val_loss")
    st.found = f"best {monitor} {ok[0].best:.4g} (job {ok[0].name}: {values_text(ok[0], space)}); {counts}"
    st.passes_on = {"space": space, "best": {k: ok[0].values[k] for k in space}, "best_value": ok[0].best,
                    "monitor": monitor, "top": [{k: j.values[k] for k in space} for j in ok[:keep]],
                    "best_job": str(ok[0].path)}
    return st


def mode_of(jobs: list[Job]) -> str:
    return next((str(j.summary["mode"]) for j in jobs if "mode" in j.summary), "min")


def values_text(job: Job, space: dict) -> str:
    return ", ".join(f"{k}={float(job.values[k]):.3g}" for k in space)


def stage_final(out: Path) -> Stage:
    """The final run's summary.json: passes when it trained without diverging and was tested."""
    file = out / "summary.json"
    summary = json.loads(file.read_text()) if file.is_file() else {}
    st = Stage("6_final", passed=True, passes_on={"run_dir": str(out)})
    if not summary:
        return st.failed([f"the final training wrote no summary.json to {out}; its train.log says why"])
    head = HEADLINE[summary.get("task", "classification")]
    st.did = f"{summary['epochs_run']} epochs ({str(summary['stop_reason']).rstrip('.')})"
    st.found = (f"best {summary['monitor']} {summary['best_value']:.4g} at epoch {summary['best_epoch']}; "
                f"test_{head}={summary.get(f'test_{head}', float('nan')):.4f}")
    st.passes_on.update({f"test_{head}": summary.get(f"test_{head}"), "seconds": summary.get("seconds")})
    if summary.get("diverged"):
        return st.failed([summary["stop_reason"]], "optimizer.lr")
    return st


def stage_evaluate(final_dir: Path, out: Path) -> Stage:
    """`dltool evaluate RUN split=test` and `dltool diagnose RUN` on the final run (their files stay in the run
    dir, as those commands write them); evaluate.json here records both."""
    res = run_evaluate(str(final_dir), dict(EVAL_OPTIONS), {})
    findings, cannot = diagnose_run(final_dir)
    task = res.get("task", "classification")
    head = HEADLINE[task]
    value = res.get(head, res.get("acc"))
    record = {"evaluate": {k: v for k, v in res.items() if isinstance(v, (int, float, str))},
              "findings": [f.record() for f in findings], "cannot_judge": cannot}
    out.mkdir(parents=True, exist_ok=True)
    write_text(out, out / "evaluate.json", json.dumps(record, indent=2, default=str))
    titles = "; ".join(f.title for f in findings) or "no problems found"
    return Stage("7_evaluate", passed=True, did=f"evaluate {final_dir.name} on the test split, then diagnose it",
                 found=f"test {head} {value:.4f}; diagnosis: {titles}",
                 passes_on={f"test_{head}": value, "findings": [f.title for f in findings]})


def as_record(st: Stage) -> dict:
    return dataclasses.asdict(st)


def elapsed(state: dict) -> float:
    return sum(float(s.get("seconds", 0.0)) for s in state["stages"])


def check_budget(opts: Any, state: dict, stage: str) -> None:
    """A stage starts only within recipe.time_budget (one sentence naming the key when it ran out)."""
    if opts.time_budget is not None and elapsed(state) >= opts.time_budget:
        raise ConfigError(f"recipe.time_budget={opts.time_budget:g} s ran out after {elapsed(state):.0f} s, before "
                          f"stage {stage}; raise recipe.time_budget and continue with resume=<this recipe dir>.")


def timed(fn: Any, *args: Any) -> Stage:
    t0 = time.perf_counter()
    st = fn(*args)
    st.seconds = round(time.perf_counter() - t0, 2)
    return st
