"""Data: canonical frames, readers for known formats, interactions, cleaning, synthetic shops."""
