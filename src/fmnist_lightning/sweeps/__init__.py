"""Sweeps and the jobs a scheduler runs for them: SLURM's queue as submitit sees it."""
