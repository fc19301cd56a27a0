"""Data hyper-cleaning on digits with per-example weights tuned by hypergradients."""
