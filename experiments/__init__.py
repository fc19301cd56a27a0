"""Reproductions and presets; each subfolder is one result with its README."""
