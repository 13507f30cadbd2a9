"""dltool's Hydra sweeper on current Optuna: `hydra/sweeper=optuna` (see config.py and _impl.py)."""
