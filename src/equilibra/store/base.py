"""The storage interface every backend implements, and the results it returns.

Frames going in are already validated (see :mod:`equilibra.data.validate`); frames coming out use
the canonical column names of :mod:`equilibra.data.columns`. Models never call a store: they get
an :class:`~equilibra.data.interactions.Interactions` snapshot built from `events_frame`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int


@dataclass(frozen=True)
class ForgetResult:
    events: int
    impressions: int
    profile: int


@dataclass(frozen=True)
class EventPage:
    events: pd.DataFrame
    # Opaque token for the next page; None when this page was the last.
    next_cursor: str | None


@dataclass(frozen=True)
class StoreStats:
    events: int
    users: int
    items: int
    impressions: int


class Store(ABC):
    """Events, catalogue, users and impressions of one shop."""

    url: str

    # --- writes -------------------------------------------------------------------------------
    @abstractmethod
    def append_events(self, events: pd.DataFrame) -> AppendResult:
        """Append validated events; an `event_id` already stored counts as a duplicate."""

    @abstractmethod
    def upsert_items(self, items: pd.DataFrame) -> int:
        """Insert or replace items by `item_id`; returns the number of rows written."""

    @abstractmethod
    def upsert_users(self, users: pd.DataFrame) -> int:
        """Insert or replace users by `user_id`; returns the number of rows written."""

    @abstractmethod
    def append_impressions(self, impressions: pd.DataFrame) -> AppendResult:
        """One row per shown item, keyed by (`impression_id`, `position`)."""

    @abstractmethod
    def save_snapshot(self, name: str, state: str, saved_at: float) -> None:
        """Keep one named snapshot of online state (JSON text), replacing the last."""

    @abstractmethod
    def load_snapshot(self, name: str) -> tuple[str, float] | None:
        """(state, saved_at) of the named snapshot, None if there is none."""

    @abstractmethod
    def event_time_range(self) -> tuple[float | None, float | None]:
        """The earliest and latest event timestamps (None, None for an empty store)."""

    @abstractmethod
    def existing_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids are stored already (the service learns each event once)."""

    @abstractmethod
    def append_impression_rows(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Impression-log rows as dicts (one served slate): the server's path, no frame."""

    @abstractmethod
    def write_rewards(self, rewards: pd.DataFrame) -> int:
        """Write back what shown items earned when their attribution window closed:
        `impression_id, position, reward` per row. Returns the number of rows updated."""

    @abstractmethod
    def reassign_open_impressions(self, replica: str, to: str) -> list[str]:
        """Make the impressions `replica` served whose reward is not written yet `to`'s (a
        replica adopting one that is gone); -> the ids of those moved. One transaction: of two
        replicas adopting the same one, the second finds nothing left."""

    @abstractmethod
    def purge_before(self, timestamp: float) -> tuple[int, int]:
        """Delete events and impressions older than `timestamp`; -> (events, impressions)."""

    @abstractmethod
    def forget_user(self, user_id: str) -> ForgetResult:
        """Delete everything stored about a user: events, impressions and profile."""

    # --- reads --------------------------------------------------------------------------------
    @abstractmethod
    def events_frame(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Iterable[str] | None = None,
        users: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Events with `since <= timestamp < until`, of the given types, ordered by time.

        `columns` narrows what is read (a training snapshot needs no ids or contexts).
        """

    @abstractmethod
    def count_events(
        self,
        since: float | None = None,
        until: float | None = None,
        types: Iterable[str] | None = None,
    ) -> int: ...

    @abstractmethod
    def page_events(self, limit: int = 1000, cursor: str | None = None) -> EventPage:
        """Events in (timestamp, event_id) order, `limit` at a time (keyset pagination)."""

    @abstractmethod
    def items_frame(self) -> pd.DataFrame: ...

    @abstractmethod
    def users_frame(self) -> pd.DataFrame: ...

    @abstractmethod
    def impressions_frame(
        self,
        user_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        open_only: bool = False,
    ) -> pd.DataFrame:
        """Impression-log rows with `since <= timestamp < until` in time order; `open_only`:
        those whose reward is not written yet (their window was open at the last write)."""

    @abstractmethod
    def stats(self) -> StoreStats: ...

    @abstractmethod
    def close(self) -> None: ...

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Around a large import: a backend may defer index upkeep until the end."""
        yield

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
