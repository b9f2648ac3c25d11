"""Equilibra's vocabulary: events, items, users and the rules that make them valid.

The same rules serve two paths: the pydantic models below validate one object at a time (HTTP
API, library calls), and :mod:`equilibra.data.validate` applies them to whole DataFrames during
bulk import. Both read the constants and helpers defined here, so they cannot drift apart.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    FAVORITE = "favorite"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)
# Compact codes used in numpy arrays and bit flags; order is part of the on-disk format.
EVENT_TYPE_CODE: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
# Event types that mean the shopper committed to an item (used by `--exclude converted`).
CONVERSION_TYPES: tuple[str, ...] = (EventType.ADD_TO_CART.value, EventType.PURCHASE.value)


class ValidationError(ValueError):
    """Bad input, with a message that names the field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ValidationRules:
    """Limits applied to every incoming event; configurable per shop."""

    rating_min: float = 0.0
    rating_max: float = 5.0
    # Clocks drift and time zones get mixed up, but a day ahead is already absurd.
    max_future_seconds: float = 86_400.0
    # Anything before this is a parsing accident (0, a missing date), not a shop event.
    min_timestamp: float = datetime(1980, 1, 1, tzinfo=UTC).timestamp()

    def latest_allowed(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) + self.max_future_seconds


DEFAULT_RULES = ValidationRules()
# A Unix-seconds value this large is almost always a millisecond timestamp read as seconds.
MILLISECONDS_HINT_THRESHOLD = 1e11


def normalise_id(value: Any, field: str) -> str:
    """Ids are strings; integers (and integral floats) are accepted and converted."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValidationError(field, "is missing")
    if isinstance(value, bool):
        raise ValidationError(field, "must be a string or a number, not a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise ValidationError(field, "is empty")
    return text


def parse_timestamp(
    value: Any,
    field: str = "timestamp",
    rules: ValidationRules = DEFAULT_RULES,
    now: float | None = None,
) -> float:
    """ISO-8601 string or Unix seconds (int, float or digit string) -> Unix seconds (UTC)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ValidationError(field, "is missing")
    if isinstance(value, datetime):
        seconds = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValidationError(
                    field, f"cannot parse {value!r} (expected ISO-8601 or Unix seconds)"
                ) from None
            seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        raise ValidationError(field, f"cannot parse {value!r} (expected ISO-8601 or Unix seconds)")
    check_timestamp(seconds, field, rules, now)
    return seconds


def check_timestamp(
    seconds: float,
    field: str = "timestamp",
    rules: ValidationRules = DEFAULT_RULES,
    now: float | None = None,
) -> None:
    if not math.isfinite(seconds):
        raise ValidationError(field, "is not a finite number")
    if seconds > rules.latest_allowed(now):
        hint = (
            " (looks like milliseconds, expected seconds)"
            if (seconds > MILLISECONDS_HINT_THRESHOLD)
            else ""
        )
        raise ValidationError(field, f"{seconds:.0f} lies too far in the future{hint}")
    if seconds < rules.min_timestamp:
        raise ValidationError(field, f"{seconds:.0f} is before 1980: a missing or broken date?")


def check_rating(value: float | None, rules: ValidationRules = DEFAULT_RULES) -> float:
    if value is None or not math.isfinite(value):
        raise ValidationError("value", "a rating event needs a numeric value")
    if not rules.rating_min <= value <= rules.rating_max:
        raise ValidationError(
            "value", f"rating {value:g} outside [{rules.rating_min:g}, {rules.rating_max:g}]"
        )
    return float(value)


def check_price(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValidationError("price", "is not a finite number")
    if value < 0:
        raise ValidationError("price", f"{value:g} is negative")
    return float(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(_Model):
    """One behaviour event. `timestamp` is Unix seconds (UTC) once validated."""

    user_id: str
    item_id: str
    type: EventType
    timestamp: float = Field(default_factory=time.time)
    value: float | None = None
    event_id: str | None = None
    impression_id: str | None = None
    context: dict[str, Any] | None = None

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _ids(cls, value: Any, info: Any) -> str:
        return normalise_id(value, info.field_name)

    @field_validator("event_id", "impression_id", mode="before")
    @classmethod
    def _optional_ids(cls, value: Any, info: Any) -> str | None:
        return None if value is None else normalise_id(value, info.field_name)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in EVENT_TYPE_CODE:
            raise ValueError(
                f"unknown event type {value!r}; expected one of {', '.join(EVENT_TYPES)}"
            )
        return text

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> float:
        return parse_timestamp(value)

    @model_validator(mode="after")
    def _rating_value(self) -> Event:
        if self.type is EventType.RATING:
            check_rating(self.value)
        elif self.value is not None and not math.isfinite(self.value):
            raise ValidationError("value", "is not a finite number")
        return self


class Item(_Model):
    item_id: str
    title: str | None = None
    description: str | None = None
    categories: tuple[str, ...] = ()
    price: float | None = None
    available: bool = True
    created_at: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("item_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return normalise_id(value, "item_id")

    @field_validator("categories", mode="before")
    @classmethod
    def _categories(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        parts = value.split("|") if isinstance(value, str) else list(value)
        return tuple(str(p).strip() for p in parts if str(p).strip())

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> float | None:
        return check_price(None if value is None else float(value))

    @field_validator("created_at", mode="before")
    @classmethod
    def _created(cls, value: Any) -> float | None:
        return None if value is None else parse_timestamp(value, "created_at")


class User(_Model):
    user_id: str
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return normalise_id(value, "user_id")
