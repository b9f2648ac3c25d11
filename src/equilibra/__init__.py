"""Equilibra: a recommendation engine for shops that balances exploration and exploitation."""

from equilibra.domain import Event, EventType, Item, User, ValidationError, ValidationRules

__version__ = "0.1.0"

__all__ = [
    "Event",
    "EventType",
    "Item",
    "User",
    "ValidationError",
    "ValidationRules",
    "__version__",
]
