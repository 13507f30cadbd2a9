"""`dltool overfit-sanity-check`: passes on the default config, fails with the right diagnosis when broken."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dltool.commands.sanity import (
    Outcome,
    SanityOptions,
    diagnose,
    overfit,
    sparkline,
    without_regularization,
)
from tests.conftest import make_config, run_cli


@pytest.mark.slow
def test_default_config_passes(tmp_path: Path) -> None:
    proc = run_cli("overfit-sanity-check", f"sanity.out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "2.3026" in proc.stdout  # the expected ln(10) is reported
    record = json.loads((tmp_path / "out" / "sanity.json").read_text())
    assert record["passed"] and record["final_loss"] < 0.01 and record["final_acc"] == 1.0
    assert record["examples"] == 20 and len(record["losses"]) < 500
    assert abs(record["init_loss"] - math.log(10)) < 0.5 * math.log(10)
    assert "dropout1 p=0.3" in record["turned_off"]
    assert (tmp_path / "out" / "loss_curve.png").stat().st_size > 3000


@pytest.mark.slow
def test_zero_learning_rate_fails_with_diagnosis(tmp_path: Path, cli) -> None:
    proc = cli("overfit-sanity-check", "optimizer.lr=0", "sanity.max_steps=50", f"sanity.out_dir={tmp_path}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "stuck near its initial value" in proc.stdout
    assert "optimizer.lr=0: the optimizer never changes a weight" in proc.stdout


def test_dead_relus_cut_the_gradient() -> None:
    """A large negative bias (init.bias=-10) kills every ReLU: no gradient reaches the hidden layers."""
    o = overfit(make_config("model=mlp", "init.bias=-10"), SanityOptions(max_steps=100))
    assert not o.passed
    assert abs(o.init_loss - math.log(10)) < 1e-4  # all logits equal the bias: exactly ln(10)
    assert o.verdict.startswith("the loss is stuck")
    text = " ".join(o.diagnosis)
    assert "relu1 100% dead" in text and "relu2 100% dead" in text
    assert "all-zero gradient: fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight" in text


def test_too_high_learning_rate_explodes() -> None:
    o = overfit(make_config("model=mlp", "optimizer=sgd", "optimizer.lr=50"), SanityOptions(max_steps=50))
    assert not o.passed and "exploded" in o.verdict
    assert "optimizer.lr=5 (10x smaller)" in o.diagnosis[0]


def test_regularization_is_turned_off() -> None:
    cfg = make_config("regularization=l2", "optimizer.weight_decay=0.1", "loss.label_smoothing=0.1")
    new, was = without_regularization(cfg)
    assert new.regularization.l2 == 0 and new.optimizer.weight_decay == 0 and new.loss.label_smoothing == 0
    assert was == ["regularization.l2=0.0001", "optimizer.weight_decay=0.1", "loss.label_smoothing=0.1"]


@pytest.mark.parametrize("losses, final, acc, verdict", [
    ([2.3, 2.2, 2.1], 2.1, 0.1, "stuck near its initial value"),
    ([2.3, 1.0, 0.5], 0.5, 0.6, "fell"),
    ([2.3, 0.3, 0.05], 0.05, 1.0, "accuracy is 100% but the loss is still"),
    ([2.3, 40.0, 1.5], 1.5, 0.2, "exploded"),
    ([2.3, float("nan")], float("nan"), 0.0, "exploded"),
])
def test_diagnosis_from_scripted_runs(losses: list, final: float, acc: float, verdict: str) -> None:
    cfg = make_config()
    o = Outcome(math.log(10), losses[0], losses, final, acc)
    v, causes = diagnose(o, cfg, SanityOptions(), ([], []), {})
    assert verdict in v and causes


def test_misspelt_option_is_one_sentence(capsys) -> None:
    from dltool.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["overfit-sanity-check", "sanity.exmaples=5"])
    assert exit_info.value.code == 2
    assert "unknown option 'exmaples'. Did you mean 'examples'?" in capsys.readouterr().err


def test_sparkline_falls_with_the_loss() -> None:
    line = sparkline([2.0, 1.0, 0.1, 0.01])
    assert line[0] == "█" and line[-1] == "▁" and len(line) == 4


@pytest.mark.parametrize("command, phrase", [("overfit-sanity-check", "sanity options"), ("gradcheck", "h, threshold"),
                                             ("evaluate", "split=test"), ("predict", "invert=false")])
def test_command_help_runs_nothing(command: str, phrase: str, capsys) -> None:
    from dltool.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and phrase in out and "PASS" not in out


def test_mixup_and_cutmix_are_turned_off_for_the_overfit_check() -> None:
    new, was = without_regularization(make_config("augment.mixup_alpha=0.2", "augment.cutmix_alpha=1.0"))
    assert (new.augment.mixup_alpha, new.augment.cutmix_alpha) == (0.0, 0.0)
    assert was == ["augment.mixup_alpha=0.2", "augment.cutmix_alpha=1.0"]
