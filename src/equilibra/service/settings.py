"""How `equilibra serve` is configured: design.md's environment variables, or a TOML file that
sets the same keys (lower-case, without the prefix); the environment wins over the file.

    EQUILIBRA_DB=sqlite:///shop.db        db = "sqlite:///shop.db"
    EQUILIBRA_MODEL_DIR=model/            model_dir = "model/"
    EQUILIBRA_POLICY=adaptive             policy = "adaptive"
    EQUILIBRA_ADMIN_KEY / _READ_KEY       admin_key / read_key
    EQUILIBRA_ATTRIBUTION_WINDOW=1800     attribution_window = 1800
    EQUILIBRA_REWARD=click=1,…            reward = "click=1,add_to_cart=2,purchase=5,revenue=0"
    EQUILIBRA_REDIS=redis://…             redis (the online state shared by replicas)

and Equilibra's own: `EQUILIBRA_CANDIDATES` (per generator and request, 100),
`EQUILIBRA_SHORTLIST` (the best screened candidates the policy chooses among and the impression
logs, 100, at least 2 k), `EQUILIBRA_RETRAIN_EVENTS`,
`EQUILIBRA_RETRAIN_SECONDS`, `EQUILIBRA_REPLAY_DAYS` (events replayed into the online state at
start, 7), `EQUILIBRA_RETENTION_DAYS` (events and impressions older than this, in event time, are
deleted; default: kept), `EQUILIBRA_DIVERSITY` (the MMR weight λ in [0, 1], 0 = off; a
request's `context.diversity` overrides it), `EQUILIBRA_MAX_BATCH` (events per POST, 10,000),
`EQUILIBRA_RULES` (a JSON file of business rules, a list of objects as `POST /v1/rules` takes),
`EQUILIBRA_EXPLORE_BUDGET` (the balance controller's budgets: `default=0.25,checkout=0,loss=0.05,
period=3600`, see `explore/budget.py`; default `checkout=0`), `EQUILIBRA_EXPLORE_EXCLUDE`
(categories never explored, comma-separated; brands kept as categories work the same),
`EQUILIBRA_REDIS_PREFIX` (the Redis keys' prefix, `equilibra`: one Redis may hold several shops),
`EQUILIBRA_REDIS_STREAM` (a Redis stream whose entries' `event` field is an event as `POST
/v1/events` takes it, in JSON: read beside the API, see `service/stream.py`; needs EQUILIBRA_REDIS),
`EQUILIBRA_REPLICA` (this replica's stable name among several sharing one store: it owns the
impressions it serves and, after a restart, reopens and relearns only those; unset: one server),
`EQUILIBRA_REPLICA_TTL` (seconds without a heartbeat after which another replica adopts a named
replica's open impressions, 30; see `service/adoption.py`), `EQUILIBRA_PREVIEW_PATHS` (an A/B
test's preview: replays on the impression log resampled by impression, whose spread its
intervals hold, 6; 0 = the one replay's bootstrap interval).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from equilibra.errors import EquilibraError
from equilibra.explore.budget import Budget
from equilibra.explore.feedback import RewardConfig
from equilibra.explore.spec import parse_policy

PREFIX = "EQUILIBRA_"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = "sqlite:///equilibra.db"
    model_dir: Path = Path("model")
    policy: str = "adaptive"
    admin_key: str | None = None
    read_key: str | None = None
    redis: str | None = None
    redis_stream: str | None = None  # a Redis stream of events, read as a consumer group
    redis_prefix: str = Field("equilibra", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # This replica's stable name among several sharing one store (a StatefulSet pod name, a
    # host:port): it owns the impressions it serves, and only it reopens and relearns them
    # after a restart. Unset: one server, which owns every impression.
    replica: str | None = Field(None, min_length=1, max_length=200)
    # Seconds without a heartbeat after which a named replica on Redis counts as gone, and
    # another adopts its open impressions (service/adoption.py).
    replica_ttl: float = Field(30.0, gt=0, le=86_400)
    attribution_window: float = Field(1800.0, ge=0)
    reward: str = "click=1,add_to_cart=2,purchase=5,revenue=0"
    candidates: int = Field(100, ge=1, le=10_000)  # per generator
    shortlist: int = Field(100, ge=1, le=10_000)  # the best screened ones the policy sees
    max_k: int = Field(500, ge=1)
    max_batch: int = Field(10_000, ge=1)
    retrain_events: int | None = Field(None, ge=1)
    retrain_seconds: float | None = Field(None, gt=0)
    replay_days: float = Field(7.0, ge=0)
    # An A/B test's preview: replays on the impression log resampled by impression, whose
    # spread its intervals hold (a learning policy's path; 0: the one replay's interval).
    preview_paths: int = Field(6, ge=0, le=100)
    retention_days: float | None = Field(None, gt=0)
    diversity: float = Field(0.0, ge=0, le=1)
    rules: Path | None = None
    # The balance controller's budgets (explore/budget.py) and what it may not explore.
    explore_budget: str = "checkout=0"
    explore_exclude: str = ""  # categories (or brands kept as categories), comma-separated
    seed: int = 0

    @field_validator("redis_stream")
    @classmethod
    def _stream_needs_redis(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("redis") is None:  # `redis` is checked first
            raise ValueError("needs EQUILIBRA_REDIS (the server to read the stream from)")
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        parse_policy(value)  # an EquilibraError names what is wrong
        return value.strip()

    @field_validator("explore_budget")
    @classmethod
    def _budget(cls, value: str) -> str:
        Budget.parse(value)
        return value

    @field_validator("reward")
    @classmethod
    def _reward(cls, value: str) -> str:
        RewardConfig.parse(value)
        return value

    @property
    def policy_spec(self) -> str:
        return self.policy

    @property
    def budget(self) -> Budget:
        return Budget.parse(self.explore_budget)

    @property
    def explore_excluded(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.explore_exclude.split(",") if c.strip())

    @property
    def rewards(self) -> RewardConfig:
        return RewardConfig.parse(self.reward)

    @property
    def auth(self) -> bool:
        return self.admin_key is not None


FIELDS = tuple(Settings.model_fields)


def load_settings(
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """The file (if any), then the environment, then explicit overrides (CLI options)."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            values.update(tomllib.loads(Path(config).read_text()))
        except OSError as exc:
            raise EquilibraError(f"config: cannot read {config} ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise EquilibraError(f"config: {config} is not TOML ({exc})") from None
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise EquilibraError(
                f"config: unknown key(s) {', '.join(sorted(unknown))} in {config}; "
                f"known: {', '.join(FIELDS)}"
            )
    env = os.environ if environ is None else environ
    for name in FIELDS:
        text = env.get(PREFIX + name.upper())
        if text is not None and text != "":
            values[name] = text
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise EquilibraError(f"{PREFIX}{field.upper()}: {message}") from None
