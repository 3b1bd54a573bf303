"""What every command shares: one ``error:`` line for any failure, the Hydra entry points, known warnings."""
