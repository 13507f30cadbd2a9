"""`dltool cross-validate`'s launch: compose the config, reserve the parent directory atomically, run the folds
through Hydra (the same job as `dltool train`, which sees data.folds and trains fold_1 ... fold_K)."""

from __future__ import annotations

from dltool.commands.cross_validate import check_cv
from dltool.commands.rundir import reserve
from dltool.commands.train import train_task
from dltool.config.compose import compose, launch, split_args
from dltool.config.schema import validate
from dltool.errors import ConfigError


def launch_cross_validate(args: list[str]) -> int:
    """Compose, validate (one sentence before anything is written), reserve outputs/<time>_<name>_cv, run."""
    name, extra_dir, overrides = split_args(args, "train")
    if any(a in ("-m", "--multirun") for a in overrides):
        raise ConfigError("dltool cross-validate runs one cross-validation; for a sweep of them use "
                          "dltool train -m ... data.folds=K (each job's objective is its mean over folds).")
    explicit = any(a.lstrip("+").startswith("hydra.run.dir=") for a in overrides)
    if not explicit:
        overrides = [*overrides, "hydra.run.dir=outputs/${now:%Y-%m-%d_%H-%M-%S}_${name}_cv"]
    cfg = compose(name, extra_dir, overrides, with_hydra=True)
    check_cv(validate(cfg))
    run_dir = reserve(str(cfg.hydra.run.dir), explicit)  # its own dir, atomically; an existing run is refused
    overrides = [o for o in overrides if not o.lstrip("+").startswith("hydra.run.dir=")]
    launch(lambda c: train_task(c, False), name, extra_dir, overrides + [f"hydra.run.dir='{run_dir}'"],
           "cross_validate")
    return 0
