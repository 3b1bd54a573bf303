"""A Hydra sweeper on Optuna >= 4's ask-and-tell API, with pruning (``hydra/sweeper=optuna``).

Hydra imports every plugin when any command starts, so nothing heavy is imported here or at
the top of ``optuna_sweeper``.
"""

# Where the sweeper tells a trial's job its storage, study, trial id and heartbeat interval (through
# hydra.job.env_set); read by fmnist_lightning.training.study_trial.StudyTrial.
TRIAL_ENV = {"storage": "FMNIST_OPTUNA_STORAGE", "study": "FMNIST_OPTUNA_STUDY", "trial": "FMNIST_OPTUNA_TRIAL",
             "heartbeat": "FMNIST_OPTUNA_HEARTBEAT"}
