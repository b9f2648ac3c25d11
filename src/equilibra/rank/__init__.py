"""What turns candidates into a list: the hybrid blend, the learned ranker and cold start.

Importing this package registers `hybrid` and `ranker` as algorithms.
"""

from equilibra.rank.coldstart import ColdStart
from equilibra.rank.hybrid import Hybrid
from equilibra.rank.ranker import LearnedRanker

__all__ = ["ColdStart", "Hybrid", "LearnedRanker"]
