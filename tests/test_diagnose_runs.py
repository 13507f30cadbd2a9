"""`dltool diagnose` on real short runs that provoke each finding (and the healthy default, in test_signals.py).

Each case is a real training run (dltool.train.run.train on the composed config, what `dltool train` runs
without Hydra's app around it) with the textbook cause of the finding, then `dltool diagnose RUN_DIR` in this
process: the finding must be there with its evidence. Runs are tiny (data.subset, 1-12
epochs of an MLP or a linear model) and made once per module, on first use.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dltool.commands.diagnose import Run, load_run, lr_findings, series, weight_ratios
from dltool.config.schema import to_dict
from dltool.train.run import prepare, train
from tests.conftest import call_main, make_config

QUIET = ("trainer.patience=null", "trainer.loggers=[csv]", "trainer.eval_test=false")


def deep(n: int, act: str) -> str:
    """An MLP of n hidden fc(32) -> act layers, as a model.layers override."""
    block = f"{{repeat:{{n:{n},layers:[{{fc:{{units:32}}}},{act}]}}}}"
    return f"model.layers=[flatten,{block},{{fc:{{units:num_classes}}}}]"


CASES = {
    # loss goes up and down (no explosion): plain sgd with a large step on a small subset
    # (0.2 explodes since the output layer starts small (OUTPUT_GAIN): 0.17 goes up and down without exploding)
    "oscillating": ("model=mlp", "optimizer=sgd", "optimizer.lr=0.17", "trainer.batch_size=32", "data.subset=300",
                    "trainer.epochs=10", "scheduler=none"),
    # a convex model at a constant lr: val loss flat while train loss still creeps down
    "decay": ("model=linear_softmax", "optimizer=sgd", "optimizer.lr=0.1", "trainer.epochs=12", "scheduler=none"),
    # no regularization on 60 examples: the MLP memorizes them (train acc 100%) while val loss turns up
    "overfit": ("model=mlp", "data.subset=60", "trainer.batch_size=10", "optimizer.lr=1e-2", "trainer.epochs=10",
                "scheduler=none"),
    # straight class boundaries cannot follow the spiral's arms (the textbook underfit)
    "underfit": ("experiment=spiral_linear", "trainer.epochs=12"),
    # eight sigmoids: each backward pass through one multiplies the gradient by at most 1/4
    "vanishing": ("model=mlp", deep(8, "sigmoid"), "init=xavier_uniform", "data.subset=100", "trainer.epochs=1"),
    # tanh with a 10x init scale: bounded activations forward, gradients growing layer by layer backward; the
    # units sit at +-1 and the scores are large, so the loss at init is far from ln(10)
    "exploding": ("model=mlp", deep(10, "tanh"), "init=xavier_normal", "init.gain=10", "data.subset=100",
                  "trainer.epochs=1"),
    # an lr a thousand times too small: updates ~1e-6 of the weights
    "tiny_lr": ("model=mlp", "optimizer=sgd", "optimizer.lr=1e-6", "data.subset=200", "trainer.epochs=2"),
    # cs231n's spiral MLP monitors train_loss: best.pt is the best train_loss epoch, not the best val_loss one
    "spiral": ("experiment=spiral_mlp",),
    "spiral_steps": ("experiment=spiral_mlp", "trainer.max_steps=600", "trainer.val_every=10"),
    # sgd at lr=3: the loss explodes and the net ends at chance level (lr_too_high, underfitting, chance level)
    "sgd_lr3": ("model=mlp", "optimizer=sgd", "optimizer.lr=3", "data.subset=300", "trainer.epochs=6"),
    # a GRU on the delayed-recall task after 3 epochs: at chance (25% for 4 classes), everything else healthy
    "chance": ("model=gru", "data=recall", "data.num_samples=1000", "trainer.epochs=3", "model.layers.0.gru.hidden=32"),
}


@pytest.fixture(scope="module")
def provoked(tmp_path_factory):
    """provoked(case) -> the run dir of that case's real training run (trained once per module, on first use)."""
    dirs: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in dirs:
            run_dir = tmp_path_factory.mktemp(case)
            train(make_config(*QUIET, *CASES[case]), run_dir)
            dirs[case] = run_dir
        return dirs[case]

    return get


def diagnose(run_dir: Path, capsys) -> tuple[int, str, dict[str, dict]]:
    """`dltool diagnose RUN_DIR` -> (exit status, terminal output, findings by code from diagnosis.json)."""
    capsys.readouterr()
    code = call_main(["diagnose", str(run_dir)])
    out = capsys.readouterr().out
    found = {f["code"]: f for f in json.loads((run_dir / "diagnosis.json").read_text())["findings"]}
    return code, out, found


@pytest.mark.slow
def test_oscillating_loss_is_lr_too_high(provoked, capsys):
    run_dir = provoked("oscillating")
    code, out, found = diagnose(run_dir, capsys)
    loss = series(load_run(run_dir).history, "train_loss")
    assert max(loss[1:]) < 2 * loss[0]  # no explosion: the finding rests on the ups and downs
    ev = found["lr_too_high"]["evidence"]
    assert code == 1 and "(oscillating)" in ev and "rose from" not in ev and "non-finite" not in ev
    ups = [i + 2 for i in range(len(loss) - 1) if loss[i + 1] > 1.05 * loss[i]]
    assert f"went up in epochs {', '.join(map(str, ups))}" in ev and len(ups) >= 3
    assert "optimizer.lr=0.017" in found["lr_too_high"]["advice"] and "learning rate too high" in out


def test_val_plateau_with_slowly_falling_train_loss_asks_for_lr_decay(provoked, capsys):
    run_dir = provoked("decay")
    code, out, found = diagnose(run_dir, capsys)
    assert set(found) == {"lr_decay"}, found  # a healthy lr otherwise: no lr_too_high from epoch 1's big steps
    hist = load_run(run_dir).history
    vl, tl = series(hist, "val_loss"), series(hist, "train_loss")
    assert min(vl[-4:]) > 0.99 * min(vl[:-4]) and 0.01 < (tl[-5] - tl[-1]) / tl[-5] < 0.25
    assert "plateaued over the last 4 epochs" in found["lr_decay"]["evidence"]
    assert "scheduler=cosine" in found["lr_decay"]["advice"] and code == 1


@pytest.mark.slow
def test_no_regularization_on_a_tiny_subset_is_overfitting(provoked, capsys):
    run_dir = provoked("overfit")
    _, _, found = diagnose(run_dir, capsys)
    assert set(found) == {"overfitting"}, found
    hist = load_run(run_dir).history
    vl, ta = series(hist, "val_loss"), series(hist, "train_acc")
    k = vl.index(min(vl))
    assert ta[-1] == 1.0 and vl[-1] > 1.1 * vl[k] and len(vl) - 1 - k >= 2
    assert f"val_loss rising since epoch {k + 1} ({vl[k]:.4g} -> {vl[-1]:.4g})" in found["overfitting"]["evidence"]
    assert "regularization.l2" in found["overfitting"]["advice"]


def test_linear_model_on_the_spiral_is_underfitting(provoked, capsys):
    run_dir = provoked("underfit")
    _, out, found = diagnose(run_dir, capsys)
    acc = series(load_run(run_dir).history, "train_acc")
    assert set(found) == {"underfitting"}, found
    assert acc[-1] < 0.6 and f"{acc[0]:.1%} -> {acc[-1]:.1%} over 12 epochs" in found["underfitting"]["evidence"]
    assert "bigger model" in found["underfitting"]["advice"] and "underfitting" in out


@pytest.mark.slow
def test_deep_sigmoid_net_has_vanishing_gradients(provoked, capsys):
    _, _, found = diagnose(provoked("vanishing"), capsys)
    ev = found["vanishing_gradients"]["evidence"]
    low, high = ev.split(" range from ")[1].split(" to ")
    assert "(fc1.weight)" in low and "(fc9.weight)" in high  # smallest at the input, largest at the output
    assert float(high.split()[0]) / float(low.split()[0]) > 1e3
    assert "exploding_gradients" not in found


@pytest.mark.slow
def test_large_init_tanh_net_has_exploding_gradients_and_saturated_units(provoked, capsys):
    _, _, found = diagnose(provoked("exploding"), capsys)
    ev = found["exploding_gradients"]["evidence"]
    low, high = ev.split(" range from ")[1].split(" to ")
    assert "(fc11.weight)" in low and "(fc1.weight)" in high  # largest at the input: grows going backward
    assert "vanishing_gradients" not in found
    sat = found["saturated"]["evidence"]
    assert all(f"tanh{i} " in sat for i in range(1, 11))
    assert int(sat.split("tanh1 ")[1].split("%")[0]) > 50


def test_loss_at_init_far_from_ln_c(provoked, capsys):
    """The same large-init run: the loss at init is measured on the probe batch before the first step."""
    run_dir = provoked("exploding")
    _, _, found = diagnose(run_dir, capsys)
    ev = found["init_loss"]["evidence"]
    assert "expected 2.303 for cross_entropy with 10 classes" in ev
    init = float(ev.split("loss at init ")[1].split(",")[0])
    assert init > 2 * 2.303 and init == pytest.approx(next(r["mean"] for r in load_run(run_dir).signals
                                                           if r["kind"] == "loss"), rel=1e-3)
    advice = found["init_loss"]["advice"]  # xavier_normal reads init.gain (10 here), not init.std
    assert "init.gain=1" in advice and "init.std" not in advice


@pytest.mark.slow
def test_tiny_lr_is_lr_too_low(provoked, capsys):
    run_dir = provoked("tiny_lr")
    _, _, found = diagnose(run_dir, capsys)
    assert max(weight_ratios(load_run(run_dir).signals or []).values()) < 1e-5
    assert "median update/weight ratio at most" in found["lr_too_low"]["evidence"]
    assert "optimizer.lr=1e-05" in found["lr_too_low"]["advice"] and "lr_too_high" not in found


def test_update_ratio_rule_reads_the_epochs_after_the_first():
    """A fresh init's first steps are large: epoch 1 alone above 1e-2 is no finding when later epochs are healthy."""
    def rows(ratios):
        return [{"epoch": e, "name": "fc1.weight", "kind": "weight", "update_ratio": r, "grad_norm": 1.0}
                for e, r in enumerate(ratios, 1)]
    loss = [1.0, 0.8, 0.7, 0.65]

    def found(ratios):
        run = Run([{"epoch": i + 1, "train_loss": v, "train_acc": 0.9} for i, v in enumerate(loss[:len(ratios)])],
                  rows(ratios), {"optimizer": {"lr": 0.1}}, 10)
        return lr_findings(run)

    assert found([0.075, 0.006, 0.005, 0.004]) == []
    high = found([0.08, 0.03, 0.02, 0.05])
    assert high[0].code == "lr_too_high" and "0.035 over epochs 3-4" in high[0].evidence  # the second half
    assert "over epoch 1 (" in found([0.05])[0].evidence  # a one-epoch run has only epoch 1 to judge


def with_overrides(base: tuple[str, ...], group: list[str]) -> list[str]:
    """The run's overrides with a suggestion applied as a user would: a key given again replaces the old value."""
    keys = {o.split("=", 1)[0] for o in group}
    return [o for o in base if o.split("=", 1)[0] not in keys] + list(group)


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def dropouts(model: torch.nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_suggested_override_is_accepted_and_changes_the_run(provoked, capsys, case):
    """Each override group of each finding: dltool accepts it on top of the run's own overrides, it changes the
    config at its key (a group choice: the group's keys), the run builds (data, model, init, augmentation,
    optimizer), and model.dropout changes the built model's dropout layers. No key is advised twice."""
    code, _, found = diagnose(provoked(case), capsys)
    assert code == 1 and found, case  # every case provokes at least one finding
    groups = [g for f in found.values() for g in f["overrides"]]
    keys = [k for f in found.values() for k in {o.split("=", 1)[0] for g in f["overrides"] for o in g}]
    assert len(keys) == len(set(keys)), keys  # one finding wins each key (alternatives within one are fine)
    base = (*QUIET, *CASES[case])
    before = flat(to_dict(make_config(*base)))
    base_model = None
    for group in groups:
        cfg = make_config(*with_overrides(base, group))
        after = flat(to_dict(cfg))
        for o in group:
            key = o.split("=", 1)[0]
            assert any(after[k] != before.get(k) for k in after if k == key or k.startswith(key + ".")), o
        built = prepare(cfg)
        if "model.dropout" in keys and any(o.startswith("model.dropout=") for o in group):
            base_model = base_model or prepare(make_config(*base)).built.model
            assert dropouts(built.built.model) != dropouts(base_model)


def test_advice_names_only_what_the_run_reads(provoked, capsys):
    """mlp on 8x8 digits: no model.dropout (no layer reads it), no augment=standard (pad 4 on 8 pixels); the
    1-pixel digits augmentation instead. The spiral: input noise, the only augmentation for 2-D points."""
    _, _, found = diagnose(provoked("overfit"), capsys)
    advice, overrides = found["overfitting"]["advice"], [o for g in found["overfitting"]["overrides"] for o in g]
    assert not any(o.startswith(("model.dropout=", "augment=standard")) for o in overrides)
    assert "augment=digits" in overrides and "augment=standard" not in advice
    assert "no layer reading model.dropout" in advice


@pytest.mark.slow
def test_spiral_advice_cites_the_real_best_pt(provoked, capsys):
    run_dir = provoked("spiral")
    _, _, found = diagnose(run_dir, capsys)
    hist = load_run(run_dir).history
    loss = series(hist, "train_loss")
    best = int(hist[loss.index(min(loss))]["epoch"])  # the monitor is train_loss (mode min)
    assert best == json.loads((run_dir / "summary.json").read_text())["best_epoch"]
    advice = found["overfitting"]["advice"]
    assert f"best.pt is epoch {best}, the best train_loss" in advice, advice
    assert "trainer.monitor=val_loss" in advice and "augment=noise" in advice and "augment=standard" not in advice
    vl = series(hist, "val_loss")
    assert f"val_loss was lowest at epoch {int(hist[vl.index(min(vl))]['epoch'])}" in advice


@pytest.mark.slow
def test_step_mode_advice_cites_best_pt_by_step(provoked, capsys):
    run_dir = provoked("spiral_steps")
    _, _, found = diagnose(run_dir, capsys)
    hist = load_run(run_dir).history
    loss = series(hist, "train_loss")
    step = int(hist[loss.index(min(loss))]["step"])
    assert f"best.pt is step {step}, the best train_loss" in found["overfitting"]["advice"]
    assert "since step " in found["overfitting"]["evidence"]


@pytest.mark.slow
def test_exploding_sgd_gets_one_direction_for_the_lr(provoked, capsys):
    _, out, found = diagnose(provoked("sgd_lr3"), capsys)
    assert "optimizer.lr=0.3" in found["lr_too_high"]["advice"]
    first = series(load_run(provoked("sgd_lr3")).history, "train_loss")[0]  # the explosion is inside epoch 1
    assert f"train_loss in epoch 1 was {first:.4g}, over 10x the 2.303 of a guessing model" in \
        found["lr_too_high"]["evidence"]
    assert out.count("optimizer.lr=") == 1 and "higher learning rate:" not in out


@pytest.mark.slow
def test_a_run_at_chance_level_is_never_no_problems(provoked, capsys):
    run_dir = provoked("chance")
    code, out, found = diagnose(run_dir, capsys)
    hist = load_run(run_dir).history
    best = max(series(hist, "train_acc") + series(hist, "val_acc"))
    assert best < 0.25 + 0.1 * 0.75  # the provoked run really is at chance for 4 classes
    assert code == 1 and "no problems" not in out
    assert f"best accuracy {best:.1%} over 3 epochs, chance is 25.0% for 4 classes" in found["chance_level"]["evidence"]
