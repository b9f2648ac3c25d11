"""Request and response bodies of HTTP API v1 (design.md), as pydantic models: FastAPI checks
every request against them and answers 422 naming the field, and they make the OpenAPI."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from equilibra.domain import DEFAULT_RULES, EVENT_TYPES, normalise_id, parse_timestamp
from equilibra.rank.rules import Rule

Id = str | int


# A rule's end date may lie years ahead (an event's timestamp may not: a day at most).
RULE_TIMES = dataclasses.replace(DEFAULT_RULES, max_future_seconds=100 * 365 * 86_400.0)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(_Body):
    user_id: Id
    item_id: Id
    type: str = Field(description=f"one of {', '.join(EVENT_TYPES)}")
    timestamp: str | float | int | None = Field(
        None, description="ISO-8601 or Unix seconds; default: arrival"
    )
    value: float | None = None
    event_id: Id | None = None
    impression_id: Id | None = None
    context: dict[str, Any] | None = None

    @field_validator("user_id", "item_id", "event_id", "impression_id", mode="before")
    @classmethod
    def _ids(cls, value: Any, info: Any) -> Any:
        if value is None and info.field_name in ("event_id", "impression_id"):
            return None
        return normalise_id(value, info.field_name)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        text = value.strip().lower()
        if text not in EVENT_TYPES:
            raise ValueError(
                f"unknown event type {value!r}; expected one of {', '.join(EVENT_TYPES)}"
            )
        return text


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int


class ItemIn(_Body):
    item_id: Id
    title: str | None = None
    description: str | None = None
    categories: list[str] | str | None = None
    price: float | None = None
    available: bool = True
    created_at: str | float | int | None = None
    attributes: dict[str, Any] | None = None

    @field_validator("item_id", mode="before")
    @classmethod
    def _item(cls, value: Any) -> str:
        return normalise_id(value, "item_id")


class UserIn(_Body):
    user_id: Id
    attributes: dict[str, Any] | None = None

    @field_validator("user_id", mode="before")
    @classmethod
    def _user(cls, value: Any) -> str:
        return normalise_id(value, "user_id")


class Upserted(BaseModel):
    upserted: int


class RecommendIn(_Body):
    user_id: Id
    k: int = Field(10, ge=1, description="how many items (at most the server's max_k)")
    placement: str = Field("default", min_length=1, max_length=100)
    context: dict[str, Any] | None = None
    exclude: Literal["converted", "interacted", "none"] = "converted"
    filters: dict[str, Any] | None = Field(
        None, description="category (or categories), price_min, price_max, exclude_items"
    )
    timestamp: str | float | int | None = None

    @field_validator("user_id", mode="before")
    @classmethod
    def _user(cls, value: Any) -> str:
        return normalise_id(value, "user_id")


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    propensity: float
    propensity_error: float | None = None
    explore: bool
    reason: str


class PolicyOut(BaseModel):
    name: str
    exploration_rate: float


class ArmOut(BaseModel):
    name: str  # the experiment
    variant: str


class RecommendOut(BaseModel):
    impression_id: str | None
    model_version: int | None
    items: list[RecommendedItem]
    policy: PolicyOut
    experiment: ArmOut | None = None  # the A/B test arm that served this list, if any


class ScoredItem(BaseModel):
    item_id: str
    score: float
    reason: str | None = None


class ListOut(BaseModel):
    items: list[ScoredItem]


class StatsOut(BaseModel):
    events: int
    users: int
    items: int
    impressions: int
    model_version: int | None


class Forgotten(BaseModel):
    events: int
    impressions: int
    profile: int
    open_impressions: int


class RuleIn(_Body):
    id: str | None = None
    action: Literal["boost", "bury", "exclude", "pin"]
    items: list[Id] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    factor: float = Field(2.0, gt=0)
    position: int | None = Field(None, ge=1)
    placement: str | None = None
    until: str | float | int | None = None

    def to_rule(self) -> Rule:
        """The rule this body describes (an id made up if none is given); ValueError naming
        the field when it cannot be one."""
        until = None if self.until is None else parse_timestamp(self.until, "until", RULE_TIMES)
        return Rule(
            id=self.id or uuid.uuid4().hex[:12],
            action=self.action,
            items=tuple(str(i) for i in self.items),
            categories=tuple(self.categories),
            factor=self.factor,
            position=self.position,
            placement=self.placement,
            until=until,
        )


class VariantIn(_Body):
    name: str = Field(min_length=1, max_length=100)
    share: float = Field(gt=0, le=1)
    policy: str | None = Field(None, description="a policy spec; default: the service's")
    model_version: int | None = Field(None, ge=1, description="default: the version served")
    rules: list[RuleIn] = Field(default_factory=list, description="added to the shop's rules")


class ExperimentIn(_Body):
    name: str = Field(min_length=1, max_length=100)
    placement: str | None = Field(None, description="default: every placement")
    variants: list[VariantIn] = Field(min_length=2, max_length=10)
    metric: Literal["reward", "click", "add_to_cart", "purchase", "revenue"] = "reward"


class PromoteIn(_Body):
    variant: str
