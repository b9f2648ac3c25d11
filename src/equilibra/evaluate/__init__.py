"""Evaluation: ranking metrics, temporal splitters (and, later, off-policy estimators)."""
