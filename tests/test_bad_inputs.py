"""Every command refuses bad input the same way: exit code 2, one line naming the key, no traceback, no run dir,
nothing on disk changed. In-process (`dltool.cli.main`), over the families of issue 10."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dltool.cli import main

BAD_YAML = "trainer:\n  epochs: 3\n  batch_size: [1, 2\n"


def fingerprint(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under folder (and every directory, as '')."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[str((Path(root) / d).relative_to(folder)) + "/"] = ""
        for name in files:
            p = Path(root) / name
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ex:
        main(args)
    out = capsys.readouterr()
    return int(ex.value.code or 0), out.out + out.err


def reset_logging() -> None:
    """Hydra leaves its file handler (the run dir's train.log) on the root logger after an in-process run."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one finished tiny run (run/), a copy with a broken config.yaml, and bad input files."""
    root = tmp_path_factory.mktemp("world")
    old = Path.cwd()
    os.chdir(root)
    try:
        with pytest.raises(SystemExit) as ex:
            main(["train", "model=mlp", "trainer.epochs=1", "data.subset=200", "trainer.eval_test=false",
                  "hydra.run.dir=run"])
        assert ex.value.code in (0, None)
    finally:
        os.chdir(old)
        reset_logging()
    shutil.copytree(root / "run", root / "broken_run")
    (root / "broken_run" / "config.yaml").write_text("model: [unclosed\n")
    (root / "bad.yaml").write_text(BAD_YAML)
    (root / "empty.yaml").write_text("")
    (root / "scalar.yaml").write_text("42\n")
    (root / "code.yaml").write_text("defaults:\n  - train\n  - _self_\n"
                                    "extra:\n  x: {_target_: os.system, _args_: [id]}\n")
    (root / "dir.yaml").mkdir()
    (root / "zero.pt").write_bytes(b"")
    np.save(root / "empty.npy", np.zeros((0, 1, 8, 8), dtype=np.float32))
    np.save(root / "nan.npy", np.full((1, 1, 8, 8), np.nan, dtype=np.float32))
    np.save(root / "ok.npy", np.zeros((1, 1, 8, 8), dtype=np.float32))
    (root / "one_class" / "cat").mkdir(parents=True)
    for i in range(4):
        torch.manual_seed(i)
        Image.fromarray((torch.rand(8, 8, 3) * 255).byte().numpy()).save(root / "one_class" / "cat" / f"{i}.png")
    (root / "afile").write_text("not a folder\n")
    return root


def case(args: list[str], key: str, slow: bool = False):
    """One bad input: the arguments and the key its sentence must name."""
    return pytest.param(args, key, id=" ".join(args), marks=[pytest.mark.slow] if slow else [])


# Per family and command, the first two cases run in the default tier and the rest are marked slow (CI runs all).
CASES = [
    # settings that would run but change nothing or destroy the run (issue 21), refused before anything is written
    case(["train", "optimizer.lr=1e-3,1e-2"], "add -m"),
    case(["train", "model=mlp", "model.dropout=0.5"], "model.dropout=0.5"),
    case(["train", "trainer.devices=0"], "trainer.devices", slow=True),
    case(["train", "optimizer.lr=null"], "optimizer.lr=null is not valid: optimizer.lr needs a number", slow=True),
    case(["train", "trainer.batch_size=null"], "trainer.batch_size=null is not valid", slow=True),
    case(["train", "scheduler.warmup_epochs=40", "trainer.epochs=5"], "scheduler.warmup_epochs=40", slow=True),
    case(["train", "data.subset=5"], "data.subset=5", slow=True),
    case(["train", "augment=strong"], "translate pad=4", slow=True),
    # non-finite / out-of-range numbers
    case(["train", "optimizer.lr=nan"], "optimizer.lr"),
    case(["train", "optimizer.lr=inf"], "optimizer.lr"),
    case(["train", "optimizer.lr=-1e-3"], "optimizer.lr", slow=True),
    case(["train", "optimizer.lr=abc"], "optimizer.lr", slow=True),
    case(["train", "regularization.l2=-1"], "regularization.l2", slow=True),
    case(["train", "regularization.l1=-0.5"], "regularization.l1", slow=True),
    case(["train", "regularization.clip_grad_norm=0"], "regularization.clip_grad_norm", slow=True),
    case(["train", "trainer.patience=-1"], "trainer.patience", slow=True),
    case(["train", "loss.label_smoothing=2"], "loss.label_smoothing", slow=True),
    case(["train", "trainer.threads=-1"], "trainer.threads", slow=True),
    case(["train", "trainer.epochs=0"], "trainer.epochs", slow=True),
    case(["train", "trainer.batch_size=0"], "trainer.batch_size", slow=True),
    case(["train", "optimizer.betas=[0.9]"], "optimizer.betas", slow=True),
    case(["train", "optimizer.eps=0"], "optimizer.eps", slow=True),
    case(["train", "optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum", slow=True),
    case(["train", "scheduler=step", "scheduler.step_size=0"], "scheduler.step_size", slow=True),
    case(["train", "scheduler=step", "scheduler.gamma=-0.1"], "scheduler.gamma", slow=True),
    case(["train", "data.val_fraction=1.5"], "data.val_fraction", slow=True),
    case(["train", "data.subset=0"], "data.subset", slow=True),
    case(["train", "model.layers=[{conv: -4}, flatten, {fc: 10}]"], "filters", slow=True),
    case(["train", "model=mlp", "model.layers=[flatten, {fc: 0}]"], "units", slow=True),
    # keys the chosen variant does not read, misspelt keys, unknown variants
    case(["train", "optimizer.momentum=0.9"], "optimizer.momentum"),
    case(["train", "scheduler.patience=3"], "scheduler.patience"),
    case(["train", "data.noise=5"], "data.noise", slow=True),
    case(["train", "init.std=0.5"], "init.std", slow=True),
    case(["train", "+trainer.epoc=3"], "trainer.epoc", slow=True),
    case(["train", "trainer.epoc=3"], "trainer.epoc", slow=True),
    case(["train", "+optimizer.momentum=0.9"], "optimizer.momentum", slow=True),
    case(["train", "optimizer.name=adm"], "optimizer.name", slow=True),
    case(["train", "model=mpl"], "model", slow=True),
    # initialization that cannot break symmetry
    case(["train", "init.scheme=constant"], "init.scheme"),
    case(["train", "init=normal", "init.std=0"], "init.std"),
    case(["train", "init=xavier_uniform", "init.gain=0"], "init.gain", slow=True),
    case(["train", "init=uniform", "init.scale=0"], "init.scale", slow=True),
    # monitor / mode / name
    case(["train", "trainer.monitor=val_accc"], "trainer.monitor"),
    case(["train", "trainer.mode=maximum"], "trainer.mode"),
    case(["train", "name=x/../../elsewhere"], "name", slow=True),
    case(["train", "name=.."], "name", slow=True),
    # code from configs
    case(["train", "+hydra.callbacks.x={_target_: os.system}"], "hydra.callbacks"),
    case(["train", "+extra.x={_target_: os.system}"], "_target_"),
    case(["train", "hydra/job_logging=disabled"], "hydra/job_logging", slow=True),
    case(["train", "hydra.job_logging.handlers.console.class=os.system"], "hydra.job_logging", slow=True),
    case(["train", "+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"], "env_set", slow=True),
    case(["train", "code.yaml"], "_target_", slow=True),
    # config files
    case(["train", "bad.yaml"], "bad.yaml:4"),
    case(["train", "empty.yaml"], "empty.yaml"),
    case(["train", "scalar.yaml"], "scalar.yaml", slow=True),
    case(["train", "dir.yaml"], "is a directory", slow=True),
    case(["train", "missing.yaml"], "does not exist", slow=True),
    # resume
    case(["train", "resume=run", "model=mlp"], "model=mlp"),
    case(["train", "resume=run", "trainer.epochs=1"], "trainer.epochs"),
    case(["train", "resume=run", "optimizer.momentum=0.9"], "optimizer.momentum", slow=True),
    case(["train", "resume=broken_run"], "config.yaml", slow=True),
    case(["train", "resume=nowhere"], "resume=nowhere", slow=True),
    # messages that used to leak internals
    case(["train", "optimizer=sgd", "optimizer.momentum=0"], "optimizer.nesterov"),
    case(["train", "-m", "optimizer.lr=abc,0.1"], "optimizer.lr"),
    # data
    case(["train", "data=imagefolder", "data.root=one_class"], "data.root"),
    case(["train", "data=imagefolder", "data.root=afile"], "data.root"),
    # evaluate
    case(["evaluate", "run", "topk=abc"], "topk"),
    case(["evaluate", "run", "topk=0"], "topk"),
    case(["evaluate", "run", "batch_size=-3"], "batch_size", slow=True),
    case(["evaluate", "run", "split=tset"], "split", slow=True),
    case(["evaluate", "run", "checkpoint=nope"], "checkpoints/nope.pt", slow=True),
    case(["evaluate", "zero.pt"], "zero.pt", slow=True),
    case(["evaluate", "broken_run"], "config.yaml", slow=True),
    case(["evaluate", "nowhere"], "nowhere", slow=True),
    case(["evaluate", "run", "data.noise=1"], "data.noise", slow=True),
    # predict
    case(["predict", "run", "ok.npy", "topk=abc"], "topk"),
    case(["predict", "run", "empty.npy"], "empty.npy"),
    case(["predict", "run", "nan.npy"], "nan.npy", slow=True),
    case(["predict", "run", "missing.png"], "missing.png", slow=True),
    case(["predict", "run"], "predict", slow=True),
    case(["predict", "zero.pt", "ok.npy"], "zero.pt", slow=True),
    # summary
    case(["summary", "optimizer.lr=nan"], "optimizer.lr"),
    case(["summary", "model.layers=[{conv: {filters: 8, kernel: 9}}, flatten, {fc: 10}]"], "kernel"),
    case(["summary", "model=mpl"], "model", slow=True),
    # show-data / preview-augment
    case(["show-data", "--per-class", "0"], "--per-class"),
    case(["show-data", "--per-class", "abc"], "--per-class"),
    case(["show-data", "--classes", "-1"], "--classes", slow=True),
    case(["preview-augment", "--rows", "0"], "--rows"),
    case(["preview-augment", "augment=standard", "augment.opz=[]"], "augment.opz"),
    # overfit-sanity-check / gradcheck
    case(["overfit-sanity-check", "sanity.examples=0"], "sanity.examples"),
    case(["overfit-sanity-check", "sanity.max_stepz=3"], "max_stepz"),
    case(["overfit-sanity-check", "optimizer.lr=inf"], "optimizer.lr", slow=True),
    case(["gradcheck", "gradcheck.h=0"], "gradcheck.h"),
    case(["gradcheck", "gradcheck.threshold=-1"], "gradcheck.threshold"),
    case(["gradcheck", "gradcheck.examples=abc"], "gradcheck.examples", slow=True),
    # sweep-report / list
    case(["sweep-report", "nowhere"], "nowhere"),
    case(["sweep-report"], "sweep-report"),
    case(["sweep-report", "afile"], "afile", slow=True),
    case(["list", "layerz"], "layerz"),
    # export / lr-find / cross-validate
    case(["export", "run", "--format", "pdf"], "pdf"),
    case(["export", "run", "--opset", "abc"], "--opset"),
    case(["export", "nowhere"], "nowhere", slow=True),
    case(["export", "zero.pt"], "zero.pt", slow=True),
    case(["lr-find", "lr_find.steps=0"], "lr_find.steps"),
    case(["lr-find", "lr_find.start=abc"], "lr_find.start"),
    case(["lr-find", "optimizer.lr=nan"], "optimizer.lr", slow=True),
    case(["cross-validate", "data.folds=1"], "data.folds"),
    case(["cross-validate", "data.folds=3", "data.fold=4"], "data.fold"),
    case(["cross-validate"], "data.folds", slow=True),
    # diagnose
    case(["diagnose", "nowhere"], "nowhere"),
    case(["diagnose"], "diagnose"),
    case(["diagnose", "run", "extra"], "diagnose", slow=True),
]


@pytest.mark.parametrize("args,key", CASES)
def test_bad_input_is_one_sentence_exit_2_and_changes_nothing(args, key, world, capsys, monkeypatch):
    monkeypatch.chdir(world)
    before = fingerprint(world)
    code, out = run_main(args, capsys)
    reset_logging()
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 2, out
    assert "Traceback" not in out
    assert len(lines) == 1, out
    assert key in lines[0], out
    assert lines[0].startswith("error:"), out
    assert fingerprint(world) == before  # no run dir, no output file, nothing rewritten


def test_there_are_at_least_60_bad_inputs_across_all_commands():
    from dltool.cli import COMMANDS

    assert len(CASES) >= 60
    assert {c.values[0][0] for c in CASES} == set(COMMANDS)
    assert {c.values[0][0] for c in CASES if not c.marks} == set(COMMANDS)  # every command in the default tier
