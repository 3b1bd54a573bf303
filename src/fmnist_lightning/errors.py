"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""


class FmnistError(Exception):
    """Bad input from the user (data, config, checkpoint); the CLI prints it as one line."""


class DataError(FmnistError):
    """The dataset files are missing, truncated or malformed."""


class ConfigError(FmnistError):
    """A config value is impossible or unknown."""


class CheckpointError(FmnistError):
    """A checkpoint cannot be read or does not match the model."""


class TrainingError(FmnistError):
    """Training cannot go on (for example, the loss is no longer finite)."""
