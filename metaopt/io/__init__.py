"""Edges: checkpoints, metrics files, signals. Nothing here is called inside jit."""
