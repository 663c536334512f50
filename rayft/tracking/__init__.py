"""Metrics files, plots and run summaries."""
