"""Ranking over candidate generators: weighted blends and a learned ranker."""
