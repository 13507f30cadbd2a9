"""The config edge: typed schemas, Hydra composition and override translation, check-command options."""
