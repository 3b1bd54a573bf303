"""Foundations every layer may use: where configs and run files live, the run record, value checks."""
