"""In-context learning vs fine-tuning (Dai et al. 2022) in a small linear-attention transformer."""
