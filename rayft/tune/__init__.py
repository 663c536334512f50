"""Hyperparameter sweeps: search spaces, the Tune run, budgets, the report."""
