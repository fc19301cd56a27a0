"""Cosine similarity of hypergradient estimators with the exact one on the Shaban toy."""
