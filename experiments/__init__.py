"""Reproductions; each subfolder is one result with its README."""
