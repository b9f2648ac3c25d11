"""Exploration: slate policies with exact (or Monte-Carlo) propensities, and their learning."""

from equilibra.explore.feedback import FeedbackLedger, Outcome, RewardConfig
from equilibra.explore.marginals import Marginals
from equilibra.explore.policies import Policy
from equilibra.explore.slate import Candidates, Slate, SlateEntry
from equilibra.explore.spec import POLICIES, load_policy, parse_policy, save_policy

__all__ = [
    "POLICIES",
    "Candidates",
    "FeedbackLedger",
    "Marginals",
    "Outcome",
    "Policy",
    "RewardConfig",
    "Slate",
    "SlateEntry",
    "load_policy",
    "parse_policy",
    "save_policy",
]
