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


CASES: list[tuple[list[str], str]] = [
    # non-finite / out-of-range numbers
    (["train", "optimizer.lr=nan"], "optimizer.lr"),
    (["train", "optimizer.lr=inf"], "optimizer.lr"),
    (["train", "optimizer.lr=-1e-3"], "optimizer.lr"),
    (["train", "optimizer.lr=abc"], "optimizer.lr"),
    (["train", "regularization.l2=-1"], "regularization.l2"),
    (["train", "regularization.l1=-0.5"], "regularization.l1"),
    (["train", "regularization.clip_grad_norm=0"], "regularization.clip_grad_norm"),
    (["train", "trainer.patience=-1"], "trainer.patience"),
    (["train", "loss.label_smoothing=2"], "loss.label_smoothing"),
    (["train", "trainer.threads=-1"], "trainer.threads"),
    (["train", "trainer.epochs=0"], "trainer.epochs"),
    (["train", "trainer.batch_size=0"], "trainer.batch_size"),
    (["train", "optimizer.betas=[0.9]"], "optimizer.betas"),
    (["train", "optimizer.eps=0"], "optimizer.eps"),
    (["train", "optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum"),
    (["train", "scheduler=step", "scheduler.step_size=0"], "scheduler.step_size"),
    (["train", "scheduler=step", "scheduler.gamma=-0.1"], "scheduler.gamma"),
    (["train", "data.val_fraction=1.5"], "data.val_fraction"),
    (["train", "data.subset=0"], "data.subset"),
    (["train", "model.layers=[{conv: -4}, flatten, {fc: 10}]"], "filters"),
    (["train", "model=mlp", "model.layers=[flatten, {fc: 0}]"], "units"),
    # keys the chosen variant does not read, misspelt keys, unknown variants
    (["train", "optimizer.momentum=0.9"], "optimizer.momentum"),
    (["train", "scheduler.patience=3"], "scheduler.patience"),
    (["train", "data.noise=5"], "data.noise"),
    (["train", "init.std=0.5"], "init.std"),
    (["train", "+trainer.epoc=3"], "trainer.epoc"),
    (["train", "trainer.epoc=3"], "trainer.epoc"),
    (["train", "+optimizer.momentum=0.9"], "optimizer.momentum"),
    (["train", "optimizer.name=adm"], "optimizer.name"),
    (["train", "model=mpl"], "model"),
    # initialization that cannot break symmetry
    (["train", "init.scheme=constant"], "init.scheme"),
    (["train", "init=normal", "init.std=0"], "init.std"),
    (["train", "init=xavier_uniform", "init.gain=0"], "init.gain"),
    (["train", "init=uniform", "init.scale=0"], "init.scale"),
    # monitor / mode / name
    (["train", "trainer.monitor=val_accc"], "trainer.monitor"),
    (["train", "trainer.mode=maximum"], "trainer.mode"),
    (["train", "name=x/../../elsewhere"], "name"),
    (["train", "name=.."], "name"),
    # code from configs
    (["train", "+hydra.callbacks.x={_target_: os.system}"], "hydra.callbacks"),
    (["train", "+extra.x={_target_: os.system}"], "_target_"),
    (["train", "hydra/job_logging=disabled"], "hydra/job_logging"),
    (["train", "hydra.job_logging.handlers.console.class=os.system"], "hydra.job_logging"),
    (["train", "+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"], "env_set"),
    (["train", "code.yaml"], "_target_"),
    # config files
    (["train", "bad.yaml"], "bad.yaml:4"),
    (["train", "empty.yaml"], "empty.yaml"),
    (["train", "scalar.yaml"], "scalar.yaml"),
    (["train", "dir.yaml"], "is a directory"),
    (["train", "missing.yaml"], "does not exist"),
    # resume
    (["train", "resume=run", "model=mlp"], "model=mlp"),
    (["train", "resume=run", "trainer.epochs=1"], "trainer.epochs"),
    (["train", "resume=run", "optimizer.momentum=0.9"], "optimizer.momentum"),
    (["train", "resume=broken_run"], "config.yaml"),
    (["train", "resume=nowhere"], "resume=nowhere"),
    # messages that used to leak internals
    (["train", "optimizer=sgd", "optimizer.momentum=0"], "optimizer.nesterov"),
    (["train", "-m", "optimizer.lr=abc,0.1"], "optimizer.lr"),
    # data
    (["train", "data=imagefolder", "data.root=one_class"], "data.root"),
    (["train", "data=imagefolder", "data.root=afile"], "data.root"),
    # evaluate
    (["evaluate", "run", "topk=abc"], "topk"),
    (["evaluate", "run", "topk=0"], "topk"),
    (["evaluate", "run", "batch_size=-3"], "batch_size"),
    (["evaluate", "run", "split=tset"], "split"),
    (["evaluate", "run", "checkpoint=nope"], "checkpoints/nope.pt"),
    (["evaluate", "zero.pt"], "zero.pt"),
    (["evaluate", "broken_run"], "config.yaml"),
    (["evaluate", "nowhere"], "nowhere"),
    (["evaluate", "run", "data.noise=1"], "data.noise"),
    # predict
    (["predict", "run", "ok.npy", "topk=abc"], "topk"),
    (["predict", "run", "empty.npy"], "empty.npy"),
    (["predict", "run", "nan.npy"], "nan.npy"),
    (["predict", "run", "missing.png"], "missing.png"),
    (["predict", "run"], "predict"),
    (["predict", "zero.pt", "ok.npy"], "zero.pt"),
    # summary
    (["summary", "optimizer.lr=nan"], "optimizer.lr"),
    (["summary", "model.layers=[{conv: {filters: 8, kernel: 9}}, flatten, {fc: 10}]"], "kernel"),
    (["summary", "model=mpl"], "model"),
    # show-data / preview-augment
    (["show-data", "--per-class", "0"], "--per-class"),
    (["show-data", "--per-class", "abc"], "--per-class"),
    (["show-data", "--classes", "-1"], "--classes"),
    (["preview-augment", "--rows", "0"], "--rows"),
    (["preview-augment", "augment=standard", "augment.opz=[]"], "augment.opz"),
    # overfit-sanity-check / gradcheck
    (["overfit-sanity-check", "sanity.examples=0"], "sanity.examples"),
    (["overfit-sanity-check", "sanity.max_stepz=3"], "max_stepz"),
    (["overfit-sanity-check", "optimizer.lr=inf"], "optimizer.lr"),
    (["gradcheck", "gradcheck.h=0"], "gradcheck.h"),
    (["gradcheck", "gradcheck.threshold=-1"], "gradcheck.threshold"),
    (["gradcheck", "gradcheck.examples=abc"], "gradcheck.examples"),
    # sweep-report / list
    (["sweep-report", "nowhere"], "nowhere"),
    (["sweep-report"], "sweep-report"),
    (["sweep-report", "afile"], "afile"),
    (["list", "layerz"], "layerz"),
    # export / lr-find / cross-validate
    (["export", "run", "--format", "pdf"], "pdf"),
    (["export", "run", "--opset", "abc"], "--opset"),
    (["export", "nowhere"], "nowhere"),
    (["export", "zero.pt"], "zero.pt"),
    (["lr-find", "lr_find.steps=0"], "lr_find.steps"),
    (["lr-find", "lr_find.start=abc"], "lr_find.start"),
    (["lr-find", "optimizer.lr=nan"], "optimizer.lr"),
    (["cross-validate", "data.folds=1"], "data.folds"),
    (["cross-validate", "data.folds=3", "data.fold=4"], "data.fold"),
    (["cross-validate"], "data.folds"),
    # diagnose
    (["diagnose", "nowhere"], "nowhere"),
    (["diagnose"], "diagnose"),
    (["diagnose", "run", "extra"], "diagnose"),
]


@pytest.mark.parametrize("args,key", CASES, ids=[" ".join(a) for a, _ in CASES])
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
    assert {a[0] for a, _ in CASES} == set(COMMANDS)
