"""Training: the LightningModule, its callbacks and loggers, building a run from config, checkpoints, resume."""
