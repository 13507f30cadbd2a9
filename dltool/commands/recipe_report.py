"""recipe.md and recipe.png of a recipe directory, rewritten after every stage (a stopped recipe has them too),
and the one block per stage the terminal shows."""

from __future__ import annotations

import json
from pathlib import Path

from dltool.commands.recipe import STAGES, Stage
from dltool.commands.rundir import inside, write_text
from dltool.console import error, note
from dltool.plots_recipe import recipe_figure
from dltool.tasks import HEADLINE


def print_stage(st: Stage) -> None:
    mark = "[bold green]passed[/]" if st.passed else "[bold red]FAILED[/]"
    note(f"stage {st.name} ({STAGES[st.name]}): {mark} in {st.seconds:.1f} s: {st.found or st.did}")
    if not st.passed:
        for d in st.diagnosis:
            error(f"{st.name}: {d}")
        if st.key:
            note(f"the config key to change: [bold]{st.key}[/]")


def cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def stage_table(stages: list[dict]) -> list[str]:
    lines = ["| stage | result | time | what it did | what it found |", "|---|---|---:|---|---|"]
    for s in stages:
        lines.append(f"| {s['name']} ({STAGES[s['name']]}) | {'passed' if s['passed'] else '**failed**'} | "
                     f"{s['seconds']:.1f} s | {cell(s['did'])} | {cell(s['found'])} |")
    return lines


def handed_on(by: dict[str, dict]) -> list[str]:
    """The numbers each stage passed to the next: suggested lr, chosen ranges, the winner."""
    out = []
    if "3_lr_find" in by:
        p = by["3_lr_find"]["passes_on"]
        out.append(f"- learning-rate range test: suggested lr **{p['suggested_lr']:.3g}** (lowest smoothed loss at "
                   f"{p['min_loss_lr']:.3g})")
    for name in ("4_coarse", "5_fine"):
        if name in by and by[name]["passes_on"]:
            p = by[name]["passes_on"]
            ranges = ", ".join(f"`{k}` {lo:.3g}..{hi:.3g}{' (log)' if log else ''}"
                               for k, (lo, hi, log) in p["space"].items())
            best = ", ".join(f"`{k}={float(v):.3g}`" for k, v in p["best"].items())
            out.append(f"- {STAGES[name]}: ranges {ranges}; best {p['monitor']} {p['best_value']:.4g} with {best}")
    if "5_fine" in by and by["5_fine"]["passes_on"]:
        chosen = by["5_fine"]["passes_on"]["best"]
        out.append("- the final training uses: " + " ".join(f"`{k}={v}`" for k, v in chosen.items()))
    return out


def final_metrics(recipe_dir: Path) -> list[str]:
    file = recipe_dir / "6_final" / "summary.json"
    if not file.is_file():
        return []
    s = json.loads(file.read_text())
    tests = {k: v for k, v in s.items() if k.startswith("test_") and isinstance(v, (int, float))}
    head = f"test_{HEADLINE[s.get('task', 'classification')]}"
    lines = [f"- {k}: {'**' if k == head else ''}{v:.4f}{'**' if k == head else ''}" for k, v in tests.items()]
    return [f"Tested: {s.get('tested', 'n/a')}; {s['epochs_run']} epochs ({str(s['stop_reason']).rstrip('.')}).", "",
            *lines]


def write_report(recipe_dir: Path, state: dict) -> None:
    """recipe.md (what each stage did, found and passed on; the final test metrics) and recipe.png."""
    stages = state["stages"]
    by = {s["name"]: s for s in stages if s["passed"]}
    failed = [s for s in stages if not s["passed"]]
    lines = [f"# Recipe: {state.get('name', '')}", "",
             f"`dltool recipe {' '.join(state['args'] + ['recipe.' + a for a in state['recipe_args']])}`", "",
             f"Started {state.get('started', '')}; {sum(s['seconds'] for s in stages):.0f} s of stages so far.", "",
             *stage_table(stages), "", "## Numbers passed on", "", *(handed_on(by) or ["- none yet"]), ""]
    if failed:
        f = failed[-1]
        lines += [f"## Stopped at {f['name']}", "", *[f"- {d}" for d in f["diagnosis"]],
                  f"- the config key to change: `{f['key']}`" if f["key"] else "", ""]
    metrics = final_metrics(recipe_dir)
    if metrics:
        lines += ["## Final test metrics", "", *metrics, ""]
    write_text(recipe_dir, recipe_dir / "recipe.md", "\n".join(lines))
    draw(recipe_dir, stages, by)


def draw(recipe_dir: Path, stages: list[dict], by: dict[str, dict]) -> None:
    lr_json = recipe_dir / "3_lr_find" / "lr_find.json"
    curve = json.loads(lr_json.read_text()) if "3_lr_find" in by and lr_json.is_file() else None
    lr_keys = ("optimizer.lr", "scheduler.max_lr")
    best = by.get("5_fine", {}).get("passes_on", {}).get("best", {})
    space = by.get("4_coarse", {}).get("passes_on", {}).get("space", {})
    chosen = next((best[k] for k in lr_keys if k in best), None)
    coarse = next((space[k] for k in lr_keys if k in space), None)
    inside(recipe_dir, recipe_dir / "recipe.png")
    recipe_figure(stages, curve, float(chosen) if chosen is not None else None, coarse[:2] if coarse else None,
                  recipe_dir / "recipe.png", f"dltool recipe: {recipe_dir.name}")
