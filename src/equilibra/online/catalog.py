"""The catalogue as the service filters and explains by it: categories, availability, price and
creation time per item, updated by every item upsert (and by a stub for an item first seen in
an event, until its metadata arrives)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from equilibra.data.columns import Columns as C


@dataclass(frozen=True)
class ItemInfo:
    categories: tuple[str, ...] = ()
    available: bool = True
    price: float | None = None
    created_at: float | None = None
    title: str | None = None
    stub: bool = False  # known only from events so far


class Catalog:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, ItemInfo] = {}
        self._by_category: dict[str, set[str]] = {}
        self._unavailable: set[str] = set()  # so a request screens without reading each item

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def upsert_frame(self, items: pd.DataFrame) -> int:
        """Validated item rows (`data.validate.validate_items`'s output or a store's)."""
        count = 0
        with self._lock:
            for row in items.itertuples(index=False):
                record = row._asdict()
                categories = record.get(C.categories)
                self.put(
                    str(record[C.item]),
                    ItemInfo(
                        categories=tuple(str(categories).split("|"))
                        if isinstance(categories, str) and categories
                        else (),
                        available=bool(record.get(C.available, True)),
                        price=_number(record.get(C.price)),
                        created_at=_number(record.get(C.created_at)),
                        title=record.get(C.title) if isinstance(record.get(C.title), str) else None,
                    ),
                )
                count += 1
        return count

    def put(self, item_id: str, info: ItemInfo) -> None:
        with self._lock:
            old = self._items.get(item_id)
            if old is not None:
                for category in old.categories:
                    self._by_category.get(category, set()).discard(item_id)
            self._items[item_id] = info
            if info.available:
                self._unavailable.discard(item_id)
            else:
                self._unavailable.add(item_id)
            for category in info.categories:
                self._by_category.setdefault(category, set()).add(item_id)

    def ensure(self, items: Iterable[str]) -> list[str]:
        """Stub items first seen in events (design.md); returns the ids that were new."""
        created = []
        with self._lock:
            for item in items:
                if item not in self._items:
                    self._items[item] = ItemInfo(stub=True)
                    created.append(item)
        return created

    def get(self, item_id: str) -> ItemInfo | None:
        with self._lock:
            return self._items.get(item_id)

    def get_many(self, item_ids: Iterable[str]) -> list[ItemInfo | None]:
        """`get` for a request's candidates under one lock."""
        with self._lock:
            items = self._items
            return [items.get(i) for i in item_ids]

    def missing_or_unavailable(self, item_ids: list[str]) -> tuple[list[int], set[str]]:
        """-> (positions of the items not in the catalogue, the items marked unavailable)."""
        with self._lock:
            items = self._items
            missing = [i for i, item in enumerate(item_ids) if item not in items]
            return missing, self._unavailable.intersection(item_ids)

    def available(self, item_id: str) -> bool:
        info = self.get(item_id)
        return info is None or info.available

    def in_category(self, category: str) -> set[str]:
        with self._lock:
            return set(self._by_category.get(category, set()))

    def categories_of(self, item_id: str) -> tuple[str, ...]:
        info = self.get(item_id)
        return () if info is None else info.categories


def _number(value: object) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
