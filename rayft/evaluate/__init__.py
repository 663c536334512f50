"""Metrics, generation and validation during and after training."""
