"""Training: build everything from a config (run), the loop, callbacks, checkpoints, losses, optimizers."""
