"""Early stopping and best-checkpoint logic on scripted metric sequences."""

import math
from pathlib import Path

import pytest
import torch

from dltool.errors import ConfigError
from dltool.train.callbacks import BestCheckpoint, EarlyStopping, FitState, Monitor


def run(values, mode="min", patience=3, min_delta=0.0, key="val_loss", **kw):
    """Feed a scripted metric sequence; return (epoch stopped at, reason, best epochs, saves)."""
    saved = []
    m = Monitor(key, mode, min_delta)
    state = FitState(torch.nn.Linear(1, 1), Path("."), epochs=len(values))
    state.make_checkpoint = lambda: {"epoch": state.epoch}
    best = BestCheckpoint(m, Path("best.pt"), lambda obj, path: saved.append(obj["epoch"]))
    stop = EarlyStopping(m, patience, **kw)
    for i, v in enumerate(values, start=1):
        state.epoch = i
        logs = {"epoch": i, "train_loss": 1.0, "val_loss": v, "val_acc": v}
        state.history.append(logs)  # as fit does, before the callbacks
        best.on_epoch_end(state, logs)
        stop.on_epoch_end(state, logs)
        if state.stop:
            break
    return state.epoch, state.stop_reason, m.best_epoch, saved


def test_patience_counts_epochs_without_improvement():
    epoch, reason, best, saved = run([1.0, 0.8, 0.9, 0.85, 0.82, 0.5], patience=3)
    assert (epoch, best, saved) == (5, 2, [1, 2])
    assert "no improvement of val_loss" in reason and "best 0.8 at epoch 2" in reason


def test_min_delta_ignores_tiny_improvements():
    epoch, _, best, saved = run([1.0, 0.99, 0.985, 0.98], patience=2, min_delta=0.05)
    assert (epoch, best, saved) == (3, 1, [1])


def test_mode_max_for_accuracy():
    epoch, _, best, saved = run([0.5, 0.7, 0.6, 0.65, 0.69], mode="max", key="val_acc", patience=3)
    assert (epoch, best, saved) == (5, 2, [1, 2])


def test_stopping_threshold_stops_when_target_reached():
    epoch, reason, _, _ = run([0.6, 0.8, 0.95, 0.99], mode="max", key="val_acc", stopping_threshold=0.9)
    assert epoch == 3 and "reached the target 0.9" in reason


def test_divergence_threshold_and_non_finite_loss():
    epoch, reason, _, _ = run([1.0, 2.0, 9.0, 1.0], divergence_threshold=5.0)
    assert epoch == 3 and "divergence threshold" in reason
    epoch, reason, best, saved = run([1.0, 0.5, math.nan, 0.1])
    assert (epoch, best, saved) == (3, 2, [1, 2])
    assert "learning rate is too high" in reason


def test_start_from_epoch_delays_patience():
    epoch, _, _, _ = run([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6], patience=2, start_from_epoch=3)
    assert epoch == 5


def test_mode_must_be_explicit_and_valid():
    with pytest.raises(ConfigError, match="trainer.mode='maximum'"):
        Monitor("val_acc", "maximum")


def test_unknown_monitor_lists_the_logged_metrics():
    with pytest.raises(ConfigError, match="trainer.monitor='val_accuracy'.*val_acc"):
        run([0.5], key="val_accuracy")


def test_patience_0_stops_at_the_first_epoch_without_improvement():
    epoch, reason, best, _ = run([1.0, 0.8, 0.7, 0.75, 0.6], patience=0)
    assert (epoch, best) == (4, 3)  # epochs 1-3 improve; epoch 4 does not, so it stops there (not after epoch 1)
    assert "for 1 epoch (" in reason


# Keras's own scripted case (keras/src/callbacks/early_stopping_test.py, test_early_stopping_patience):
# losses [10, 9, 8, 9, 8.9, 8.8, ...] stop at 0-based epoch max(patience, 1) + 2, for patience 0..3.
@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_keras_patience_case(patience):
    epoch, _, _, _ = run([10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5], patience=patience)
    assert epoch - 1 == max(patience, 1) + 2


def test_patience_zero_never_stops_on_an_improving_epoch():
    epoch, reason, _, _ = run([5.0, 4.0, 3.0, 2.0, 1.0], patience=0)
    assert epoch == 5 and reason == ""
    epoch, _, best, _ = run([5.0, 4.0, 4.5, 1.0], patience=0)
    assert (epoch, best) == (3, 2)  # the first epoch without improvement


# Lightning's scripted cases (tests/tests_pytorch/callbacks/test_early_stopping.py, test_early_stopping_patience):
# (loss values, patience, 0-based stop epoch).
@pytest.mark.parametrize("values, patience, stop", [([6, 5, 5, 5, 5, 5], 3, 4), ([6, 5, 4, 4, 3, 3], 1, 3),
                                                    ([6, 5, 6, 5, 5, 5], 3, 4)])
def test_lightning_patience_cases(values, patience, stop):
    epoch, _, _, _ = run([float(v) for v in values], patience=patience)
    assert epoch - 1 == stop


def test_keras_baseline_case():
    """Keras: losses [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], patience 5, baseline 0.5: no epoch beats the baseline,
    so training stops after 5 epochs, best epoch 3 (0-based 2)."""
    epoch, reason, best, _ = run([0.9, 0.8, 0.7, 0.71, 0.72, 0.73], patience=5, baseline=0.5)
    assert (epoch, best) == (5, 3) and "did not beat the baseline 0.5" in reason


def test_baseline_beaten_then_patience_as_usual():
    epoch, reason, best, _ = run([0.9, 0.4, 0.45, 0.46, 0.47], patience=2, baseline=0.5)
    assert (epoch, best) == (4, 2) and "no improvement" in reason
    epoch, _, _, _ = run([0.6, 0.55, 0.52, 0.51, 0.50], mode="min", patience=10, baseline=0.5)
    assert epoch == 5  # improving but never past 0.5: only patience (10) epochs would stop it


def test_min_change_stops_when_the_average_change_is_small():
    """Average improvement over the last 3 epochs: (0.50 - 0.47) / 3 = 0.01 < 0.02 -> stop at epoch 6."""
    epoch, reason, _, _ = run([1.0, 0.7, 0.5, 0.49, 0.48, 0.47, 0.46], patience=None, min_change=0.02,
                              min_change_epochs=3)
    assert epoch == 6 and "over the last 3 epochs" in reason and "trainer.min_change=0.02" in reason
    epoch, _, _, _ = run([1.0, 0.8, 0.6, 0.4, 0.2], patience=None, min_change=0.02, min_change_epochs=3)
    assert epoch == 5  # falling 0.2 per epoch: never stops


def test_min_change_in_max_mode_counts_a_falling_metric_as_no_progress():
    epoch, _, _, _ = run([0.5, 0.6, 0.7, 0.69, 0.68], mode="max", key="val_acc", patience=None, min_change=0.0,
                         min_change_epochs=2)
    assert epoch == 5  # (0.68 - 0.7) / 2 < 0
