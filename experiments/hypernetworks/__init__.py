"""Hypernetworks: best-response tuning (Lorraine & Duvenaud 2018) and complexity control
(Grebenkova, Bakhteev & Strijov 2023)."""
