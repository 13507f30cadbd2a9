"""The options of the check commands in the key table: `dltool overfit-sanity-check` (sanity.*), `dltool gradcheck`
(gradcheck.*) and `dltool lr-find` (lr_find.*). Not training config keys: each command reads configs/<prefix>.yaml,
generated from here like the groups' files (`python scripts/make_configs.py`), and types them with the dataclass
dltool/config/options.py generates.
"""

from __future__ import annotations

from typing import Optional

from dltool.config.keyspec import Group, Key, Variant

SANITY = Group({
    "examples": Key(int, 20, "size of the tiny training subset to overfit (drawn at random, seeded by trainer.seed)"),
    "max_steps": Key(int, 500, "step budget; the check fails if the loss is not under loss_threshold by then"),
    "loss_threshold": Key(float, 0.01, "pass once the training loss on the subset falls below this"),
    "batch_size": Key(Optional[int], None, "examples per step (null: the whole subset, i.e. full-batch gradient "
                                           "descent)"),
    "init_tolerance": Key(float, 0.5, "warn when the loss at init is off its expected value by more than this "
                                      "fraction (why 0.5: docs/how-to/evaluate-and-predict.md)"),
    "stuck_fraction": Key(float, 0.9, "\"stuck\": the final loss is still above this fraction of the initial loss"),
    "out_dir": Key(Optional[str], None, "where loss_curve.png and sanity.json go (null: outputs/sanity/<time>_<name>)"),
}, doc="options of `dltool overfit-sanity-check`", width=24)
SANITY = Group(SANITY.keys, {"sanity": Variant(
    "Options of `dltool overfit-sanity-check` (not a training config: the model, data, loss and optimizer\n"
    "come from train.yaml and your overrides). Set one with `sanity.KEY=VALUE`, e.g. sanity.examples=50.",
    tuple(SANITY.keys))}, doc=SANITY.doc, width=24)

GRADCHECK = Group({
    "examples": Key(int, 4, "a tiny batch of real training examples (2 or more so batch norm works)"),
    "h": Key(float, 1e-5, "step of the centered difference (f(w+h) - f(w-h)) / 2h, in float64"),
    "threshold": Key(float, 1e-6, "pass when every checked element's relative error is below this"),
    "max_elements": Key(int, 30, "elements checked per parameter tensor (picked at random; all when the tensor is "
                                 "smaller)"),
    "seed": Key(int, 0, "seeds the element choice and the dropout masks (the same mask for every evaluation)"),
}, doc="options of `dltool gradcheck`", width=24)
GRADCHECK = Group(GRADCHECK.keys, {"gradcheck": Variant(
    "Options of `dltool gradcheck` (not a training config: the model, loss and regularization come from\n"
    "train.yaml and your overrides). Set one with `gradcheck.KEY=VALUE`, e.g. gradcheck.h=1e-6.",
    tuple(GRADCHECK.keys))}, doc=GRADCHECK.doc, width=24)

LR_FIND = Group({
    "start": Key(float, 1e-7, "learning rate of the first mini-batch"),
    "end": Key(float, 10.0, "learning rate of the last one; the rate grows exponentially from start to end"),
    "steps": Key(int, 100, "mini-batches along the range (one optimizer step each, epochs repeat as needed)"),
    "smoothing": Key(float, 0.98, "exponential moving average of the loss (bias-corrected); 0 plots the raw loss"),
    "divergence": Key(float, 4.0, "stop once the smoothed loss exceeds this many times its minimum"),
    "divisor": Key(float, 10.0, "suggestion = the lr at the lowest smoothed loss / divisor (still on the falling "
                                "slope)"),
    "out_dir": Key(Optional[str], None, "where lr_find.png and lr_find.json go (null: outputs/lr_find/<time>_<name>)"),
}, doc="options of `dltool lr-find`", width=24)
LR_FIND = Group(LR_FIND.keys, {"lr_find": Variant(
    "Options of `dltool lr-find` (not a training config: the model, data, loss, optimizer and batch size come\n"
    "from train.yaml and your overrides). Set one with `lr_find.KEY=VALUE`, e.g. lr_find.steps=200.",
    tuple(LR_FIND.keys))}, doc=LR_FIND.doc, width=24)

RECIPE = Group({
    "coarse_trials": Key(int, 10, "random-search trials of the coarse stage (lr, L2, dropout on log/linear scales)"),
    "coarse_epochs": Key(int, 4, "epochs per coarse trial (few: the coarse stage only sorts out the ranges)"),
    "coarse_lr_span": Key(float, 10.0, "coarse lr range: the range test's suggestion / span .. x span"),
    "l2_low": Key(float, 1e-6, "coarse L2 range, low end (regularization.l2, log scale)"),
    "l2_high": Key(float, 1e-2, "coarse L2 range, high end"),
    "fine_trials": Key(int, 6, "random-search trials of the fine stage (ranges narrowed around the best coarse "
                               "trials)"),
    "fine_epochs": Key(int, 10, "epochs per fine trial"),
    "fine_keep": Key(int, 3, "the fine ranges span this many best coarse trials (lr and L2 reach 2x beyond them)"),
    "final_epochs": Key(Optional[int], None, "epochs of the final training (null: trainer.epochs)"),
    "time_budget": Key(Optional[float], 1800.0, "seconds for the whole recipe: a stage starts only within it, the "
                                                "final training gets what is left (trainer.max_time); null: none"),
    "out_dir": Key(Optional[str], None, "the recipe directory (null: outputs/recipe/<time>_<name>)"),
}, doc="options of `dltool recipe`", width=24)
RECIPE = Group(RECIPE.keys, {"recipe": Variant(
    "Options of `dltool recipe` (not a training config: the model, data, loss and optimizer come from\n"
    "train.yaml and your overrides). Set one with `recipe.KEY=VALUE`, e.g. recipe.coarse_trials=10.",
    tuple(RECIPE.keys))}, doc=RECIPE.doc, width=24)

# configs/<prefix>.yaml of each check command
OPTIONS: dict[str, Group] = {"sanity": SANITY, "gradcheck": GRADCHECK, "lr_find": LR_FIND, "recipe": RECIPE}
