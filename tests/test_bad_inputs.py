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
    task_files(root)
    add_issue19_world(root)
    return root


def task_files(root: Path) -> None:
    """Targets that do not fit their task: float labels, NaN targets, a 5-label matrix, a tag column with an
    empty cell."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    np.savez(root / "float_y.npz", x=x, y=rng.normal(size=40))
    y = rng.normal(size=40)
    y[3] = np.nan
    np.savez(root / "nan_y.npz", x=x, y=y)
    np.savez(root / "five_labels.npz", x=x, y=(rng.random((40, 5)) > 0.5).astype(np.int64))
    rows = ["a,b,tags"] + [f"{i},{-i},{'cat|dog' if i % 2 else 'dog'}" for i in range(20)]
    rows[5] = "4,-4,"
    (root / "tags.csv").write_text("\n".join(rows) + "\n")


def add_issue19_world(root: Path) -> None:
    """Issue 19's routes: sweeper params in a config file, a stored ${oc.env:...}, links planted in a run dir."""
    head = "defaults:\n  - train\n  - _self_\nhydra:\n  sweeper:\n    params:\n"
    (root / "sweep_env.yaml").write_text(head + "      +hydra.job.env_set.PYTHONPATH: /tmp/evil\n")
    (root / "sweep_log.yaml").write_text(head + "      +hydra.job_logging.handlers.f.class: logging.FileHandler\n")
    (root / "subdir.yaml").write_text("defaults:\n  - train\n  - _self_\nhydra:\n  sweep:\n    subdir: ../run\n")
    shutil.copytree(root / "run", root / "env_run")
    cfg = (root / "env_run" / "config.yaml").read_text()
    (root / "env_run" / "config.yaml").write_text(cfg.replace("name: mlp_digits", "name: ${oc.env:HOME}", 1))
    assert "${oc.env:HOME}" in (root / "env_run" / "config.yaml").read_text()
    shutil.copytree(root / "run", root / "link_run")
    (root / "outside.txt").write_text("must stay as it is\n")
    (root / "outside_dir").mkdir()
    (root / "link_run" / "diagnosis.json").unlink()
    os.symlink(root / "outside.txt", root / "link_run" / "diagnosis.json")
    os.symlink(root / "outside.txt", root / "link_run" / "eval.json")
    os.symlink(root / "outside_dir", root / "link_run" / "export")
    add_bad_data(root)
    add_bad_runs(root)


def add_bad_runs(root: Path) -> None:
    """A half-written run dir, damaged ones, and a fake sweep dir (diagnose, sweep-report)."""
    (root / "half").mkdir()
    shutil.copy(root / "run" / "config.yaml", root / "half" / "config.yaml")
    shutil.copytree(root / "run", root / "bad_metrics")
    (root / "bad_metrics" / "metrics.csv").write_text("epoch,train_loss\n1,abc\n")
    shutil.copytree(root / "run", root / "bad_config")
    (root / "bad_config" / "config.yaml").write_text("optimizer: {lr: [\n")
    (root / "fake_sweep" / "0" / ".hydra").mkdir(parents=True)
    (root / "fake_sweep" / "0" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.1\n")
    (root / "fake_sweep" / "0" / "summary.json").write_text("{\n")


def add_bad_data(root: Path) -> None:
    """Corrupt or odd data for issue 19's reader checks (each must be refused before a run dir is written)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype(np.float32), np.arange(40) % 2
    np.savez(root / "good.npz", x=x, y=y)
    raw = (root / "good.npz").read_bytes()
    (root / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    np.savez(root / "scalar.npz", x=np.float32(3.0), y=np.array([0]))
    np.savez(root / "empty_x.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    np.savez(root / "huge_label.npz", x=x, y=np.where(y == 1, 10 ** 9, 0))
    np.savez(root / "one_label.npz", x=x, y=np.zeros(40, np.int64))
    nan_x = x.copy()
    nan_x[7, 2] = np.nan
    np.savez(root / "nan_x.npz", x=nan_x, y=y)
    (root / "zero_npy").mkdir()
    (root / "zero_npy" / "x.npy").write_bytes(b"")
    np.save(root / "zero_npy" / "y.npy", y)
    (root / "latin_names").mkdir()
    np.save(root / "latin_names" / "x.npy", x)
    np.save(root / "latin_names" / "y.npy", y)
    (root / "latin_names" / "class_names.txt").write_bytes("caf\xe9\nna\xefve\n".encode("latin-1"))
    rows = "".join(f"{a:.3f},{b:.3f},{c}\n" for (a, b), c in zip(x[:, :2].tolist(), ["cat", "dog"] * 20))
    (root / "latin.csv").write_bytes(("f1,f2,label\n" + rows + "1,2,caf\xe9\n").encode("latin-1"))
    (root / "longfield.csv").write_text("f1,f2,label\n" + rows + '1,"' + "9" * 200_000 + '",cat\n')
    (root / "inf.csv").write_text("f1,f2,label\n1,2,cat\n3,4,dog\ninf,5,cat\n" + rows)
    (root / "one.csv").write_text("f1,f2,label\n" + "".join(f"{a},{b},cat\n" for a, b in x[:, :2].tolist()))
    Image.new("1", (10_000, 10_000)).save(root / "bomb.png")  # 10^8 pixels, a few KiB on disk
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "whole.jpg", quality=95)
    jpg = (root / "whole.jpg").read_bytes()
    (root / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    for c in ("cat", "dog"):
        (root / "jpgs" / c).mkdir(parents=True)
        for i in range(3):
            (root / "jpgs" / c / f"{i}.jpg").write_bytes(jpg)
    (root / "jpgs" / "dog" / "3.jpg").write_bytes(jpg[: len(jpg) // 2])


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
    # tasks: targets that do not fit the task, a loss or monitor the task lacks, weights and samplers
    case(["train", "data=diabetes"], "loss.name"),
    case(["train", "data=arrays", "data.path=float_y.npz", "model=mlp"], "data.task"),
    case(["train", "data=arrays", "data.path=nan_y.npz", "data.task=regression", "loss=mse", "model=mlp"], "y row 3",
         slow=True),
    case(["train", "data=arrays", "data.path=five_labels.npz", "data.task=binary", "loss=bce", "model=mlp"],
         "data.task", slow=True),
    case(["train", "data=arrays", "data.path=five_labels.npz", "data.task=multilabel", "loss=bce",
          "model=linear_softmax", "model.layers=[flatten, {fc: 3}]"], "num_classes", slow=True),
    case(["train", "data=csv", "data.path=tags.csv", "data.label=tags", "data.task=multilabel", "loss=bce",
          "model=mlp"], "data.label_separator", slow=True),
    case(["train", "trainer.monitor=val_r2", "trainer.mode=max"], "trainer.monitor", slow=True),
    case(["train", "data=diabetes", "loss=mse", "trainer.monitor=val_r2"], "trainer.mode", slow=True),
    case(["train", "loss.class_weights=[1, 2]"], "loss.class_weights", slow=True),
    case(["train", "data=diabetes", "loss=mse", "model=mlp", "data.sampler=balanced"], "data.sampler", slow=True),
    case(["train", "data.sampler=uniform"], "data.sampler", slow=True),
    case(["train", "trainer.threshold=1.5"], "trainer.threshold", slow=True),
    case(["train", "data=breast_cancer", "loss=bce", "model=mlp", "loss.pos_weight=[1, 2]"], "loss.pos_weight",
         slow=True),
    case(["evaluate", "run", "threshold=0.3"], "threshold", slow=True),
    # weight averaging (issue 24)
    case(["train", "trainer.ema_decay=1.0"], "trainer.ema_decay=1.0"),
    case(["train", "trainer.swa_start=0"], "trainer.swa_start=0"),
    case(["train", "trainer.swa_start=99", "trainer.epochs=5"], "trainer.swa_start=99", slow=True),
    case(["train", "trainer.swa_start=2", "trainer.swa_lr=-0.1"], "trainer.swa_lr=-0.1", slow=True),
    case(["train", "trainer.swa_lr=0.01"], "trainer.swa_start", slow=True),
    case(["train", "trainer.swa_start=2", "trainer.ema_decay=0.99"], "use one of them", slow=True),
    case(["train", "trainer.swa_start=2", "trainer.max_steps=100"], "trainer.max_steps=100", slow=True),
    # MixUp/CutMix where they do not apply (issue 24)
    case(["train", "augment.mixup_alpha=0.2", "loss=hinge"], "loss.name=hinge"),
    case(["train", "data=diabetes", "loss=mse", "model=mlp", "augment.mixup_alpha=0.2"], "task=classification"),
    case(["train", "augment.cutmix_alpha=-1"], "augment.cutmix_alpha=-1", slow=True),
    case(["train", "data=breast_cancer", "loss=bce", "model=mlp", "augment.mixup_alpha=0.2"], "task=classification",
         slow=True),
    # dltool recipe (issue 24)
    case(["recipe", "recipe.coarse_trials=0"], "recipe.coarse_trials=0"),
    case(["recipe", "resume=nowhere"], "resume=nowhere"),
    case(["recipe", "recipe.l2_low=1", "recipe.l2_high=0.1"], "recipe.l2_low=1", slow=True),
    case(["recipe", "-m", "optimizer.lr=1e-3,1e-2"], "drop -m", slow=True),
    case(["recipe", "resume=run", "model=mlp"], "resume=run", slow=True),
    case(["recipe", "recipe.out_dir=run"], "recipe.out_dir=run is not empty", slow=True),
    case(["recipe", "optimizer.lr=abc"], "optimizer.lr", slow=True),
    # code from configs
    case(["train", "+hydra.callbacks.x={_target_: os.system}"], "hydra.callbacks"),
    case(["train", "+extra.x={_target_: os.system}"], "_target_"),
    case(["train", "hydra/job_logging=disabled"], "hydra/job_logging", slow=True),
    case(["train", "hydra.job_logging.handlers.console.class=os.system"], "hydra.job_logging", slow=True),
    case(["train", "+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"], "env_set", slow=True),
    case(["train", "code.yaml"], "_target_", slow=True),
    # plug-ins (issue 20): names only, never paths; a built-in reads no plug-in options
    case(["train", "trainer.callbacks=[evil_mod:run]"], "trainer.callbacks[0]"),
    case(["train", "trainer.metrics=[/tmp/evil.py]"], "trainer.metrics[0]", slow=True),
    case(["train", "+plugins=[/tmp/evil.py]"], "plugins", slow=True),
    case(["train", "+loss.options.gamma=1"], "loss.options", slow=True),
    # config files
    case(["train", "bad.yaml"], "bad.yaml:4"),
    case(["train", "empty.yaml"], "empty.yaml"),
    case(["train", "scalar.yaml"], "scalar.yaml", slow=True),
    case(["train", "dir.yaml"], "is a directory", slow=True),
    case(["train", "missing.yaml"], "does not exist", slow=True),
    # time budget, top-k checkpoints, resume=latest
    case(["train", "trainer.max_time=2:30"], "trainer.max_time"),
    case(["train", "trainer.save_top_k=-2"], "trainer.save_top_k"),
    case(["train", "trainer.max_time=-5"], "trainer.max_time", slow=True),
    case(["train", "resume=latest"], "resume=latest", slow=True),
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
    # issue 19: corrupt or odd data, refused by the readers before a run dir is written
    case(["train", "model=mlp", "data=arrays", "data.path=trunc.npz"], "trunc.npz"),
    case(["train", "model=mlp", "data=arrays", "data.path=nan_x.npz"], "x holds nan at example 7"),
    case(["train", "model=mlp", "data=arrays", "data.path=corrupt.npz"], "corrupt.npz", slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=zero_npy"], "empty (0 bytes)", slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=scalar.npz"], "x is a scalar", slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=empty_x.npz"], "holds no values", slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=huge_label.npz"], "1000000000", slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=one_label.npz"], "two classes", slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=latin_names"], "not UTF-8", slow=True),
    case(["train", "model=mlp", "data=csv", "data.path=latin.csv", "data.label=label"], "not UTF-8", slow=True),
    case(["train", "model=mlp", "data=csv", "data.path=longfield.csv", "data.label=label"], "line", slow=True),
    case(["train", "model=mlp", "data=csv", "data.path=inf.csv", "data.label=label"],
         "row 3 (line 4), column 'f1': inf", slow=True),
    case(["train", "model=mlp", "data=csv", "data.path=one.csv", "data.label=label"], "two classes", slow=True),
    case(["train", "model=mlp", "data=imagefolder", "data.root=jpgs"], "3.jpg", slow=True),
    case(["predict", "run", "bomb.png"], "bomb.png", slow=True),
    case(["predict", "run", "trunc.jpg"], "trunc.jpg", slow=True),
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
    # issue 19: code from any config route (config files' sweeper params, hydra keys outside the allowed set)
    case(["train", "sweep_env.yaml"], "hydra.job.env_set.PYTHONPATH"),
    case(["train", "--experimental-rerun=config.pickle"], "'--experimental-rerun=config.pickle' is not an option"),
    case(["cross-validate", "--cfg", "job"], "'--cfg' is not an option", slow=True),
    case(["overfit-sanity-check", "--info"], "'--info' is not an option", slow=True),
    case(["train", "hydra.searchpath=[file:///tmp]"], "hydra.searchpath"),
    case(["train", "sweep_env.yaml", "-m"], "hydra.job.env_set.PYTHONPATH", slow=True),
    case(["train", "sweep_log.yaml"], "hydra.job_logging.handlers", slow=True),
    case(["train", "+hydra.job.env_copy=[HOME]"], "hydra.job.env_copy", slow=True),
    case(["train", "hydra/hydra_logging=disabled"], "hydra/hydra_logging", slow=True),
    case(["train", "+hydra.job.config.override_dirname.kv_sep=x"], "hydra.job.config", slow=True),
    # issue 19: a stored ${oc.env:...} is never resolved (resume, evaluate, export, predict)
    case(["train", "resume=env_run", "trainer.epochs=3"], "oc.env:HOME"),
    case(["evaluate", "env_run"], "oc.env:HOME", slow=True),
    case(["export", "env_run"], "oc.env:HOME", slow=True),
    case(["predict", "env_run", "ok.npy"], "oc.env:HOME", slow=True),
    # issue 19: output paths that would land in another run, through a link, or on a file
    case(["cross-validate", "data.folds=2", "hydra.run.dir=run"], "hydra.run.dir=run"),
    case(["train", "-m", "optimizer.lr=0.1,0.2", "hydra.sweep.subdir=."], "hydra.sweep.subdir"),
    case(["train", "-m", "optimizer.lr=0.1,0.2", "hydra.sweep.subdir=../run"], "hydra.sweep.subdir", slow=True),
    case(["train", "subdir.yaml", "-m", "optimizer.lr=0.1,0.2"], "hydra.sweep.subdir", slow=True),
    case(["train", "hydra.output_subdir=../../run/.hydra"], "hydra.output_subdir", slow=True),
    case(["train", "hydra.job.name=../../x"], "hydra.job.name", slow=True),
    case(["train", "hydra.run.dir=run"], "hydra.run.dir=run", slow=True),
    case(["diagnose", "link_run"], "symbolic link", slow=True),
    case(["evaluate", "link_run"], "symbolic link", slow=True),
    case(["export", "link_run"], "symbolic link", slow=True),
    case(["train", "resume=link_run", "trainer.epochs=2"], "symbolic link", slow=True),
    case(["export", "run", "--out", "afile"], "afile", slow=True),
    # issue 19: other commands on damaged or half-written runs and sweeps
    case(["diagnose", "half"], "nothing to diagnose"),
    case(["diagnose", "bad_metrics"], "'abc' is not a number", slow=True),
    case(["diagnose", "bad_config"], "bad_config/config.yaml:2", slow=True),
    case(["sweep-report", "fake_sweep"], "fake_sweep/0 is damaged"),
    case(["summary", "model=mlp", "model.layers=[flatten, {fc: {units: 2000000}}, {fc: {units: 2000000}}, "
                                  "{fc: {units: num_classes}}]"], "more memory", slow=True),
    case(["summary", "model=mlp", "data.input_shape=[3,1000000,1000000]", "data.num_classes=10"], "more memory",
         slow=True),
    # issue 19: Optuna search settings and search spaces
    case(["train", "-m", "hparams_search=lr_random", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0"),
    case(["train", "-m", "hparams_search=lr_random", "hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs=0", slow=True),
    case(["train", "-m", "hparams_search=lr_random", "hydra.sweeper.max_failure_rate=nan"], "max_failure_rate=nan",
         slow=True),
    case(["train", "-m", "hparams_search=lr_random", "hydra.sweeper.storage=foo://x"], "hydra.sweeper.storage",
         slow=True),
    case(["train", "-m", "hparams_search=lr_random", "hydra.sweeper.storage=journal:afile/x.journal"],
         "hydra.sweeper.storage", slow=True),
    case(["train", "-m", "hparams_search=lr_random", "optimizer.lr=interval(0.1,0.01)"], "low < high", slow=True),
    case(["train", "-m", "hparams_search=lr_random", "optimizer.lr=tag(lgo,interval(0.01,0.1))"], "'lgo'",
         slow=True),
    case(["train", "-m", "hparams_search=lr_random", "hydra/sweeper/sampler=grid"], "sampler=grid", slow=True),
    case(["train", "-m", "hparams_search=optuna", "optimizer.lr=interval(1,0.5)"], "low < high", slow=True),
    # issue 19: numbers that were accepted and then ignored or misused
    case(["export", "run", "--opset", "3"], "--opset 3"),
    case(["export", "run", "--tolerance", "nan"], "--tolerance nan", slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=good.npz", "data.memory_cap_mb=nan"], "data.memory_cap_mb",
         slow=True),
    case(["train", "model=mlp", "data=arrays", "data.path=good.npz", "data.memory_cap_mb=-1"], "data.memory_cap_mb",
         slow=True),
    case(["show-data", "--out", "run"], "is a directory", slow=True),
    case(["lr-find", "lr_find.out_dir=afile", "lr_find.steps=5"], "afile", slow=True),
    # compare
    case(["compare", "run"], "dltool compare RUN_DIR RUN_DIR"),
    case(["compare", "run", "nowhere"], "nowhere"),
    case(["compare", "run", "run", "--out", "run"], "--out run", slow=True),
    # diagnose
    case(["diagnose", "nowhere"], "nowhere"),
    case(["diagnose"], "diagnose"),
    case(["diagnose", "run", "extra"], "diagnose", slow=True),
    # schema
    case(["schema", "--group", "optimzer"], "--group='optimzer'"),
    case(["schema", "--out", "afile"], "--out afile"),
    case(["schema", "--out", "nowhere/schema.json"], "nowhere", slow=True),
    case(["schema", "extra"], "schema", slow=True),
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


def test_readme_states_the_number_of_bad_inputs_this_table_runs():
    """README's count is checked here, not typed once and left to drift."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"runs {len(CASES)} of them; a test checks this count" in readme
