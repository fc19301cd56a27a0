"""Evidence from the entropy of gradient descent (Duvenaud, Maclaurin & Adams 2016)."""
