"""A Hydra sweeper on Optuna >= 4's ask-and-tell API, with pruning (``hydra/sweeper=optuna``).

Hydra imports every plugin when any command starts, so nothing heavy is imported here or at
the top of ``optuna_sweeper``.
"""
