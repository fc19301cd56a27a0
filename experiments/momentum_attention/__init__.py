"""Attention with momentum (Dai et al. 2022) vs plain attention on an in-context task."""
