"""n-way 10-shot meta-learning on digits: a CNN backbone tuned by hypergradients."""
