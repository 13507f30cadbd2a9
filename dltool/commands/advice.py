"""The advice of `dltool diagnose`, checked against the run before it is printed.

Every concrete suggestion is a `Step`: words plus the overrides that do it, built from the run's own config
(config.yaml) and data (input shape and layout from checkpoints/last.pt), so it names only keys this run reads,
with values valid for its model and data that differ from the current ones. Findings are settled by one stated
priority (PRIORITY): a key advised by a finding earlier in it is never advised again by a later one, so one
report never says both "lower optimizer.lr" and "raise optimizer.lr".
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Causes before symptoms: a wrong learning rate or init makes every later reading unreliable; a run at chance
# level is a bigger problem than under- or overfitting; decay is a refinement of a run that otherwise works.
PRIORITY = ("lr_too_high", "lr_too_low", "init_loss", "exploding_gradients", "vanishing_gradients", "dead_relu",
            "saturated", "chance_level", "underfitting", "overfitting", "lr_decay")
# augment=standard pads by 4 pixels and crops back: on images smaller than this the shift moves the object out
# of the frame (4 of 8 pixels of a digit), so smaller images get augment=digits (a 1-pixel shift) instead
STANDARD_MIN_SIZE = 24


@dataclass
class Step:
    """One thing to do: `text` in words, `overrides` (applied together) that do it; none for advice in words."""

    text: str
    overrides: tuple[str, ...] = ()

    def show(self) -> str:
        return f"{self.text}: {' '.join(self.overrides)}" if self.overrides else self.text

    def keys(self) -> set[str]:
        return {o.split("=", 1)[0] for o in self.overrides}


@dataclass
class Finding:
    code: str  # one of PRIORITY
    title: str
    evidence: str
    steps: list[Step] = field(default_factory=list)
    advice: str = ""  # the steps in words (set from steps)

    def __post_init__(self) -> None:
        if self.steps and not self.advice:
            self.render()

    def render(self) -> None:
        self.advice = "; ".join(s.show() for s in self.steps)

    @property
    def overrides(self) -> list[list[str]]:
        return [list(s.overrides) for s in self.steps if s.overrides]

    def record(self) -> dict:
        return {"code": self.code, "title": self.title, "evidence": self.evidence, "advice": self.advice,
                "overrides": self.overrides}


def settle(findings: list[Finding]) -> list[Finding]:
    """Order by PRIORITY; drop every step that sets a key an earlier finding already advises (one finding wins)."""
    findings = sorted(findings, key=lambda f: PRIORITY.index(f.code) if f.code in PRIORITY else len(PRIORITY))
    claimed: dict[str, str] = {}
    for f in findings:
        kept, ceded = [], []
        for s in f.steps:
            clash = sorted(s.keys() & claimed.keys())
            if clash:
                ceded += [f"{k} as under '{claimed[k]}'" for k in clash if f"{k} as under '{claimed[k]}'" not in ceded]
            else:
                kept.append(s)
        for s in kept:
            for k in s.keys():
                claimed.setdefault(k, f.title)
        f.steps = kept + ([Step("(" + ", ".join(ceded) + ")")] if ceded else [])
        f.render()
    return findings


def get(cfg: dict, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def fmt(v: float) -> str:
    return f"{v:.3g}"


def lr_step(cfg: dict, factor: float, text: str) -> list[Step]:
    lr = get(cfg, "optimizer.lr")
    if not isinstance(lr, (int, float)) or lr <= 0:
        return []
    return [Step(f"{text} (now {lr:g})", (f"optimizer.lr={fmt(lr * factor)}",))]


def clip_step(cfg: dict) -> list[Step]:
    if get(cfg, "regularization.clip_grad_norm") is not None:
        return []
    return [Step("clip gradients", ("regularization.clip_grad_norm=1.0",))]


def longer_step(cfg: dict) -> list[Step]:
    """Twice the training length, in the unit the run counts (epochs, or steps with trainer.max_steps)."""
    steps = get(cfg, "trainer.max_steps")
    if steps is not None:
        return [Step("train longer", (f"trainer.max_steps={2 * int(steps)}",))]
    epochs = get(cfg, "trainer.epochs")
    return [Step("train longer", (f"trainer.epochs={2 * int(epochs)}",))] if isinstance(epochs, int) else []


def smaller_init_step(cfg: dict) -> list[Step]:
    """Smaller initial weights with the key the run's init scheme reads."""
    scheme = get(cfg, "init.scheme")
    key = {"xavier_uniform": "gain", "xavier_normal": "gain", "orthogonal": "gain", "normal": "std",
           "uniform": "scale"}.get(str(scheme))
    value = get(cfg, f"init.{key}") if key else None
    if not isinstance(value, (int, float)) or value <= 0:
        return []
    new = 1.0 if key == "gain" and value > 1 else value / 10
    return [Step("smaller initial weights", (f"init.{key}={fmt(new)}",))]


def regularize_steps(cfg: dict, meta: dict) -> list[Step]:
    """More regularization with what this run reads: L2, the model's own dropout key, an augmentation that fits."""
    out = []
    l2 = get(cfg, "regularization.l2", 0.0) or 0.0
    out.append(Step("a stronger L2 penalty", (f"regularization.l2={fmt(l2 * 10) if l2 > 0 else '0.0001'}",)))
    p = get(cfg, "model.dropout")
    if isinstance(p, (int, float)) and p < 0.5:
        out.append(Step("more dropout", (f"model.dropout={fmt(min(0.5, p + 0.2))}",)))
    elif p is None:
        out.append(Step(f"dropout: model {get(cfg, 'model.name')} has no layer reading model.dropout; add "
                        "`- dropout: {p: ${model.dropout}}` before its last fc layer and set model.dropout=0.5 to "
                        "use one"))
    aug = augment_choice(meta) if not get(cfg, "augment.ops") else None
    if aug:
        out.append(Step(aug[1], (f"augment={aug[0]}",)))
    return out


def augment_choice(meta: dict) -> tuple[str, str] | None:
    """(augment config, why) valid and not destructive for this data: noise for features and sequences; for
    images a 1-pixel shift (digits) below STANDARD_MIN_SIZE or on one channel, the CIFAR recipe above it."""
    layout, shape = meta.get("layout"), meta.get("input_shape") or []
    if layout is None or not shape:
        return None
    if layout != "image":
        return "noise", "input noise (the augmentation for features and sequences)"
    if len(shape) == 3 and shape[0] == 3 and min(shape[1:]) >= STANDARD_MIN_SIZE:
        return "standard", "augmentation (pad-4 shifts and flips)"
    return "digits", f"small shifts and rotations (for {'x'.join(map(str, shape[1:]))} images)"


def stop_steps(cfg: dict, best: str | None, best_val: str | None) -> list[Step]:
    """Stop at the best validation point: patience on val_loss (switching the monitor when it watches training)."""
    monitor, patience = str(get(cfg, "trainer.monitor", "val_loss")), get(cfg, "trainer.patience")
    if monitor.startswith("val_"):
        where = f"best.pt is {best} already, the best {monitor}" if best else ""
        if patience is not None and patience <= 3:
            return [Step(f"early stopping is on ({where})")] if where else []
        return [Step("stop earlier" + (f" ({where})" if where else ""), ("trainer.patience=3",))]
    overrides = ("trainer.monitor=val_loss",) + (("trainer.mode=min",) if get(cfg, "trainer.mode") != "min" else ()) \
        + (("trainer.patience=3",) if patience is None or patience > 3 else ())
    text = "keep and stop at the best val_loss" + (f" (best.pt is {best}, the best {monitor}; val_loss was lowest "
                                                    f"at {best_val})" if best else "")
    return [Step(text, overrides)]
