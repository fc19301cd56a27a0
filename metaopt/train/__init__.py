"""Outer training runs: typed configs, the driver loop, evaluation and plots (edges)."""
