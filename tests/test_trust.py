"""Configs you can trust (issue 10): per-variant key sets, no code from configs, run dirs that never clobber."""

from __future__ import annotations

import errno
import resource
import shutil
import signal
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from dltool.cli import main
from dltool.commands.rundir import reserve
from dltool.config.compose import train_config
from dltool.config.schema import TrainConfig, to_dict, validate
from dltool.config.variants import SELECTOR, VARIANTS, config_dir, default_choices, rewrite_selectors
from dltool.errors import ConfigError
from dltool.train import checkpoint as ckpt_io
from dltool.train.run import prepare
from tests.test_bad_inputs import fingerprint, reset_logging, run_main

TINY = ["model=mlp", "data.subset=200", "trainer.eval_test=false", "trainer.progress=false"]


@pytest.fixture(scope="module")
def run2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run (tiny MLP) to resume and to break in copies."""
    root = tmp_path_factory.mktemp("trust")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        with pytest.raises(SystemExit) as ex:
            main(["train", *TINY, "trainer.epochs=2", "hydra.run.dir=run"])
        reset_logging()
    assert ex.value.code in (0, None)
    return root / "run"


def copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ---------------------------------------------------------------- 1. per-variant key sets
@pytest.mark.parametrize("group,variant", [(g, v) for g, vs in VARIANTS.items() for v in vs])
def test_each_variant_file_lists_exactly_the_keys_the_variant_reads(group, variant):
    path = config_dir() / group / f"{variant}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == set(VARIANTS[group][variant])
    assert raw[SELECTOR[group]] == variant
    for line in path.read_text().splitlines():  # every key carries its comment
        if line and not line.startswith((" ", "#", "-")):
            assert "#" in line, line


def test_every_registry_entry_has_a_variant_or_a_refusal():
    from dltool.data.build import DATASETS
    from dltool.models.init import INITIALIZERS
    from dltool.train.losses import LOSSES
    from dltool.train.optim import OPTIMIZERS, SCHEDULERS

    assert set(VARIANTS["optimizer"]) == set(OPTIMIZERS)
    assert set(VARIANTS["scheduler"]) == set(SCHEDULERS)
    assert set(VARIANTS["loss"]) == set(LOSSES)
    assert set(VARIANTS["data"]) == set(DATASETS)
    assert set(VARIANTS["init"]) == set(INITIALIZERS) - {"constant"}  # constant is refused (symmetry)


@pytest.mark.slow
def test_switching_by_name_or_by_group_gives_that_variants_keys_and_defaults():
    by_group, by_name = to_dict(train_config(["optimizer=sgd"])), to_dict(train_config(["optimizer.name=sgd"]))
    assert by_group == by_name
    assert by_name["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}
    assert rewrite_selectors(["init.scheme=orthogonal,normal"]) == ["init=orthogonal,normal"]
    assert to_dict(train_config(["init.scheme=orthogonal"]))["init"] == {"scheme": "orthogonal", "gain": 1.0,
                                                                         "bias": 0.0}


def test_config_tree_config_yaml_and_checkpoints_hold_only_keys_in_use(run2):
    default = to_dict(train_config([]))
    for group, variants in VARIANTS.items():
        assert set(default[group]) == set(variants[default[group][SELECTOR[group]]])
    stored = yaml.safe_load((run2 / "config.yaml").read_text())
    ck = ckpt_io.load(run2 / "checkpoints" / "best.pt")
    for cfg in (stored, ck["config"]):
        assert set(cfg["optimizer"]) == {"name", "lr", "betas", "eps", "weight_decay"}
        assert set(cfg["scheduler"]) == {"name", "min_lr", "warmup_epochs", "warmup_start_factor"}
        assert "noise" not in cfg["data"] and "std" not in cfg["init"]


def test_a_config_file_without_defaults_list_gets_the_documented_defaults(tmp_path):
    (tmp_path / "mine.yaml").write_text("trainer:\n  epochs: 2\noptimizer:\n  name: sgd\n")
    mine, documented = train_config([str(tmp_path / "mine.yaml")]), train_config(["optimizer=sgd"])
    assert (mine.trainer.monitor, mine.trainer.mode) == ("val_loss", "min")  # as configs/trainer/default.yaml
    for group in VARIANTS:
        assert to_dict(mine)[group] == to_dict(documented)[group]


@pytest.mark.slow
def test_an_older_flat_stored_config_still_loads_with_the_unused_keys_dropped():
    flat = to_dict(train_config([]))
    flat["optimizer"].update(momentum=0.0, nesterov=False, alpha=0.99)  # what dltool wrote before per-variant keys
    flat["data"].update(noise=0.2, points_per_class=100, root=None)
    with pytest.raises(ConfigError, match="optimizer adam does not read"):
        validate(flat)
    assert to_dict(validate(flat, stored=True)) == to_dict(train_config([]))


def test_optimizer_sgd_with_momentum_0_says_which_key_to_change():
    with pytest.raises(ConfigError, match="optimizer.nesterov=false"):
        prepare(train_config(["optimizer=sgd", "optimizer.momentum=0", *TINY]))
    assert train_config(["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=false"]).optimizer.momentum == 0


# ---------------------------------------------------------------- 2. no code from configs
def test_resume_of_a_run_whose_config_yaml_names_code_is_refused_and_changes_nothing(run2, tmp_path, capsys):
    run = copy_run(run2, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["extra"] = {"x": {"_target_": "os.system", "_args_": ["touch pwned"]}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = fingerprint(tmp_path)
    code, out = run_main(["train", f"resume={run}", "trainer.epochs=3"], capsys)
    assert code == 2 and "_target_" in out and "Traceback" not in out
    assert fingerprint(tmp_path) == before


def test_a_user_file_with_hydra_callbacks_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cb.yaml").write_text("defaults:\n  - train\n  - _self_\nhydra:\n  callbacks:\n"
                                      "    x: {_target_: builtins.print}\n")
    code, out = run_main(["train", "cb.yaml"], capsys)
    assert code == 2 and "hydra.callbacks" in out and not any(tmp_path.glob("outputs"))


def test_hydra_s_experimental_rerun_flag_never_unpickles_a_file(tmp_path, capsys, monkeypatch):
    """@hydra.main would load --experimental-rerun's pickle (code); dltool runs Hydra without its command line."""
    import pickle

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pickle").write_bytes(pickle.dumps(Planted(str(tmp_path / "pwned.txt"))))
    for args in (["train", "--experimental-rerun=evil.pickle"], ["train", "--experimental-rerun", "evil.pickle"],
                 ["cross-validate", "data.folds=2", "--experimental-rerun=evil.pickle"]):
        code, out = run_main(args, capsys)
        assert code == 2 and "--experimental-rerun" in out and "is not an option" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pickle"]  # no pwned.txt, no outputs/


class Planted:
    """Unpickling it writes a file (what a malicious pickle would do with os.system)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


# ---------------------------------------------------------------- 3. run dirs that never clobber
def test_two_runs_with_the_same_dir_name_get_two_dirs(tmp_path):
    first, second = reserve(tmp_path / "out" / "t_x", False), reserve(tmp_path / "out" / "t_x", False)
    assert first != second and first.is_dir() and second.is_dir() and second.name == "t_x_2"
    (first / "a").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        reserve(first, True)


@pytest.mark.parametrize("args", [["trainer.epochs=1"], ["model=mlp", "model.layers=[flatten, {fc: 7}, {fc: 10}]"],
                                  ["model.layers=[flatten, {fc: 7}, {fc: 10}]", "trainer.epochs=4"], "corrupt"],
                         ids=["fewer epochs", "model group", "other model", "corrupt last.pt"])
def test_a_refused_resume_leaves_the_run_dir_byte_for_byte(args, run2, tmp_path, capsys):
    run = copy_run(run2, tmp_path)
    if args == "corrupt":
        last = run / "checkpoints" / "last.pt"
        last.write_bytes(last.read_bytes()[:500])
        args = ["trainer.epochs=4"]
    before = fingerprint(run)
    code, out = run_main(["train", f"resume={run}", *args], capsys)
    reset_logging()
    assert code == 2, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert fingerprint(run) == before


def test_resume_removes_stale_temp_checkpoints_and_trains_on(run2, tmp_path, capsys):
    run = copy_run(run2, tmp_path)
    stale = run / "checkpoints" / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    code, out = run_main(["train", f"resume={run}", "trainer.epochs=3"], capsys)
    reset_logging()
    assert code == 0, out
    assert not stale.exists()
    assert ckpt_io.load(run / "checkpoints" / "last.pt")["epoch"] == 3
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + 3


def test_a_run_dir_under_a_file_is_one_sentence_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    before = fingerprint(tmp_path)
    code, out = run_main(["train", *TINY, "trainer.epochs=1", "hydra.run.dir=afile/run"], capsys)
    assert code == 2 and "afile" in out and "Traceback" not in out and len(out.strip().splitlines()) == 1
    assert fingerprint(tmp_path) == before


def test_a_full_disk_mid_training_is_one_sentence_and_the_last_good_checkpoints_still_load(run2, tmp_path, capsys):
    """A real write failure: RLIMIT_FSIZE makes every write past 4 KB fail with EFBIG, as a full disk does with
    ENOSPC (the checkpoint writer cannot tell them apart); checkpoints are bigger than that, config.yaml is not."""
    run = copy_run(run2, tmp_path)
    good = {name: (run / "checkpoints" / name).read_bytes() for name in ("best.pt", "last.pt")}
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))
    try:
        code, out = run_main(["train", f"resume={run}", "trainer.epochs=4"], capsys)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
        reset_logging()
    last_line = out.strip().splitlines()[-1]
    assert code == 1 and "Traceback" not in out
    assert last_line.startswith("error: cannot write") and "File too large" in last_line and "intact" in last_line
    for name, data in good.items():
        assert (run / "checkpoints" / name).read_bytes() == data
        assert ckpt_io.load(run / "checkpoints" / name)["epoch"] == 2
    assert not list((run / "checkpoints").glob("*.tmp"))
    assert errno.EFBIG  # the errno the limit raises (ENOSPC on a real full disk)


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_says_so_last_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = run_main(["train", "-m", *TINY, "trainer.epochs=1", "trainer.patience=0", "regularization.l2=0,-1",
                          "hydra.sweep.dir=sweep"], capsys)
    reset_logging()
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert code == 1, out
    assert "1 job(s) failed" in lines[-1] and "regularization.l2" in out
    assert yaml.safe_load((tmp_path / "sweep" / "1" / "summary.json").read_text())["failed"] is True


def test_dataclass_defaults_agree_with_the_default_files():
    """Defaults have one source: what a Python caller gets from the dataclasses is what train.yaml documents."""
    defaults = asdict(TrainConfig())
    files = {"trainer": "default", "regularization": "none", "augment": "none", **default_choices()}
    for group, choice in files.items():
        documented = yaml.safe_load((config_dir() / group / f"{choice}.yaml").read_text())
        assert {k: defaults[group][k] for k in documented} == documented, group
