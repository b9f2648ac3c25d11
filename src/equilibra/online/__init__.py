"""Online state: what every event changes at once (user histories and sessions, item counters
and trends, co-visitation, fold-in user vectors); in-process by default."""

from equilibra.online.state import InProcessState, OnlineConfig, UserState

__all__ = ["InProcessState", "OnlineConfig", "UserState"]
