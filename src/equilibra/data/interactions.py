"""The user × item snapshot every model trains on: a CSR matrix with id maps and timestamps.

Models never read the store; they receive an :class:`Interactions` built here from events (a
DataFrame, or a store's `events_frame`). Weights per event type and an optional time decay turn a
stream of events into one number per (user, item); the time-ordered event log is kept alongside in
dense ids for models that need sequences (session models, temporal splits).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.columns import Columns
from equilibra.domain import CONVERSION_TYPES, EVENT_TYPE_CODE, EVENT_TYPES, EventType
from equilibra.errors import EquilibraError

C = Columns
DAY = 86_400.0
# What a training snapshot reads from a store.
SNAPSHOT_COLUMNS = (C.user, C.item, C.event_type, C.timestamp, C.value)


@dataclass(frozen=True)
class EventWeights:
    """How much one event of each type says about a user's interest in an item."""

    view: float = 1.0
    click: float = 2.0
    add_to_cart: float = 4.0
    purchase: float = 8.0
    favorite: float = 3.0
    # None: a rating event weighs its own value (a 5-star rating counts 5).
    rating: float | None = None
    # Older events count less: weight × 0.5 ** (age / half_life). None: no decay.
    half_life_days: float | None = None

    def by_code(self) -> np.ndarray:
        """Weights indexed by event type code; NaN for rating when the value is used."""
        return np.array(
            [
                np.nan if getattr(self, name) is None else float(getattr(self, name))
                for name in EVENT_TYPES
            ]
        )

    @classmethod
    def parse(cls, spec: str) -> EventWeights:
        """`view=1,add_to_cart=4,purchase=8` (unnamed types keep their defaults)."""
        values: dict[str, float | None] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, number = part.partition("=")
            name = name.strip()
            if name not in (*EVENT_TYPES, "half_life_days"):
                raise EquilibraError(f"weights: unknown event type {name!r}")
            try:
                values[name] = float(number)
            except ValueError:
                raise EquilibraError(f"weights: {name} needs a number, got {number!r}") from None
        return cls(**values)  # type: ignore[arg-type]


class IdMap:
    """External string ids <-> dense integer indices (0..n-1), in a fixed order."""

    def __init__(self, ids: Sequence[str] | np.ndarray | pd.Index):
        self._index = pd.Index(np.asarray(ids, dtype=object))
        if not self._index.is_unique:
            raise ValueError("IdMap: ids must be unique")

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, external: object) -> bool:
        return external in self._index

    @property
    def ids(self) -> np.ndarray:
        return self._index.to_numpy()

    def to_dense(self, external: Iterable[str] | np.ndarray | pd.Series) -> np.ndarray:
        """Dense indices; -1 where an id is unknown."""
        return self._index.get_indexer(
            pd.Index(
                np.asarray(
                    list(external)
                    if not isinstance(external, np.ndarray | pd.Series)
                    else external,
                    dtype=object,
                )
            )
        )

    def to_external(self, dense: np.ndarray | Sequence[int]) -> np.ndarray:
        return self._index.to_numpy()[np.asarray(dense, dtype=np.int64)]


@dataclass
class Interactions:
    """A snapshot of behaviour: weights, last-seen times, type flags and the event log."""

    matrix: sp.csr_matrix  # users × items, float32 summed (decayed) weights
    users: IdMap
    items: IdMap
    last_seen: sp.csr_matrix  # same pattern as `matrix`: latest event time per (user, item)
    type_flags: sp.csr_matrix  # same pattern: bit (1 << type code) set for each type seen
    event_user: np.ndarray  # int32, time-ordered event log in dense ids
    event_item: np.ndarray  # int32
    event_type: np.ndarray  # int8 codes (EVENT_TYPE_CODE)
    event_time: np.ndarray  # float64 Unix seconds
    event_value: np.ndarray  # float32 (NaN where an event has no value)
    weights: EventWeights = field(default_factory=EventWeights)
    reference_time: float = 0.0  # "now" for the time decay

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        events: pd.DataFrame,
        weights: EventWeights | None = None,
        reference_time: float | None = None,
        users: Sequence[str] | None = None,
        items: Sequence[str] | None = None,
    ) -> Interactions:
        """Build from canonical events (user_id, item_id, event_type, timestamp[, value]).

        `users`/`items` fix the id maps (e.g. the whole catalogue, so items nobody touched yet
        still get a column); events naming ids outside them are an error, not silently dropped.
        """
        weights = weights or EventWeights()
        missing = [c for c in (C.user, C.item, C.event_type, C.timestamp) if c not in events]
        if missing:
            raise EquilibraError(f"events: missing column(s) {missing}")
        types = events[C.event_type].map(EVENT_TYPE_CODE)
        if types.isna().any():
            bad = events.loc[types.isna(), C.event_type].iloc[0]
            raise EquilibraError(f"event_type: unknown type {bad!r}")
        user_codes, user_map = _encode(events[C.user], users, "user_id")
        item_codes, item_map = _encode(events[C.item], items, "item_id")
        times = events[C.timestamp].to_numpy(dtype=np.float64)
        values = (
            events[C.value].to_numpy(dtype=np.float32)
            if C.value in events
            else np.full(len(events), np.nan, dtype=np.float32)
        )
        order = np.argsort(times, kind="stable")
        return cls._build(
            user_codes[order],
            item_codes[order],
            types.to_numpy(np.int8)[order],
            times[order],
            values[order],
            user_map,
            item_map,
            weights,
            reference_time,
        )

    @classmethod
    def from_store(
        cls,
        store: object,
        since: float | None = None,
        until: float | None = None,
        types: Iterable[str] | None = None,
        weights: EventWeights | None = None,
        reference_time: float | None = None,
    ) -> Interactions:
        frame = store.events_frame(  # type: ignore[attr-defined]
            since=since, until=until, types=types, columns=SNAPSHOT_COLUMNS
        )
        return cls.from_frame(frame, weights, reference_time)

    @classmethod
    def from_cells(
        cls,
        rows: np.ndarray,
        cols: np.ndarray,
        weight: np.ndarray,
        latest: np.ndarray,
        flags: np.ndarray,
        users: IdMap,
        items: IdMap,
        weights: EventWeights,
        reference_time: float,
    ) -> Interactions:
        """Cells already summed elsewhere (Spark): one (row, col) each, in any order.

        The event log stays empty: models that read cells (ALS, kNN, popularity, cold start)
        train on it; sequence models and temporal splits need `from_frame`."""
        shape = (len(users), len(items))
        order = np.lexsort((cols, rows))
        rows, cols = np.asarray(rows)[order], np.asarray(cols, dtype=np.int32)[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])

        def csr(data: np.ndarray) -> sp.csr_matrix:
            return sp.csr_matrix((np.asarray(data)[order], cols, indptr), shape=shape)

        empty = np.zeros(0, dtype=np.int32)
        return cls(
            matrix=csr(weight.astype(np.float32)),
            users=users,
            items=items,
            last_seen=csr(latest.astype(np.float64)),
            type_flags=csr(flags.astype(np.uint8)),
            event_user=empty,
            event_item=empty.copy(),
            event_type=np.zeros(0, dtype=np.int8),
            event_time=np.zeros(0, dtype=np.float64),
            event_value=np.zeros(0, dtype=np.float32),
            weights=weights,
            reference_time=float(reference_time),
        )

    @classmethod
    def _build(
        cls,
        user: np.ndarray,
        item: np.ndarray,
        kind: np.ndarray,
        time: np.ndarray,
        value: np.ndarray,
        users: IdMap,
        items: IdMap,
        weights: EventWeights,
        reference_time: float | None,
    ) -> Interactions:
        reference = (
            float(time.max())
            if reference_time is None and len(time)
            else float(reference_time or 0.0)
        )
        per_type = weights.by_code()
        w = per_type[kind]
        rating = kind == EVENT_TYPE_CODE[EventType.RATING]
        w = np.where(np.isnan(w) & rating, value.astype(np.float64), w)
        w = np.nan_to_num(w, nan=0.0)
        if weights.half_life_days:
            age_days = np.clip(reference - time, 0, None) / DAY
            w = w * np.power(0.5, age_days / weights.half_life_days)
        shape = (len(users), len(items))
        # One pass groups events by cell; weights, latest time and the set of types seen all
        # land on the same sparsity pattern (a cell whose weights are 0 still counts as seen).
        key = user.astype(np.int64) * shape[1] + item
        cells, cell_of_event = np.unique(key, return_inverse=True)
        summed = np.bincount(cell_of_event, weights=w, minlength=len(cells))
        latest = np.full(len(cells), -np.inf)
        np.maximum.at(latest, cell_of_event, time)
        flags = np.zeros(len(cells), dtype=np.uint8)
        np.bitwise_or.at(flags, cell_of_event, (1 << kind.astype(np.uint8)).astype(np.uint8))
        rows, cols = cells // shape[1], cells % shape[1]
        # `cells` is sorted by (row, col), so CSR arrays can be written directly.
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
        indices = cols.astype(np.int32)

        def csr(data: np.ndarray) -> sp.csr_matrix:
            return sp.csr_matrix((data, indices, indptr), shape=shape)

        matrix, last_seen, type_flags = csr(summed.astype(np.float32)), csr(latest), csr(flags)
        return cls(
            matrix=matrix,
            users=users,
            items=items,
            last_seen=last_seen,
            type_flags=type_flags,
            event_user=user.astype(np.int32),
            event_item=item.astype(np.int32),
            event_type=kind.astype(np.int8),
            event_time=time,
            event_value=value.astype(np.float32),
            weights=weights,
            reference_time=reference,
        )

    # --- views --------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape  # type: ignore[return-value]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def n_events(self) -> int:
        return len(self.event_time)

    def has_type(self, types: Iterable[str]) -> sp.csr_matrix:
        """Boolean user × item matrix: cells where any of `types` occurred."""
        return cells_with_types(self.type_flags, types)

    def converted(self) -> sp.csr_matrix:
        """Cells the user carted or bought (what `--exclude converted` hides)."""
        return self.has_type(CONVERSION_TYPES)

    def interacted(self) -> sp.csr_matrix:
        return sp.csr_matrix(
            (
                np.ones(self.nnz, dtype=bool),
                self.type_flags.indices.copy(),
                self.type_flags.indptr.copy(),
            ),
            shape=self.shape,
        )

    def item_popularity(self) -> np.ndarray:
        """Distinct users per item."""
        return np.bincount(self.matrix.indices, minlength=self.shape[1])

    def memory_bytes(self) -> int:
        arrays = [
            self.matrix.data,
            self.matrix.indices,
            self.matrix.indptr,
            self.last_seen.data,
            self.last_seen.indices,
            self.last_seen.indptr,
            self.type_flags.data,
            self.type_flags.indices,
            self.type_flags.indptr,
            self.event_user,
            self.event_item,
            self.event_type,
            self.event_time,
            self.event_value,
        ]
        return int(sum(a.nbytes for a in arrays))

    def events_frame(self) -> pd.DataFrame:
        """The event log back in canonical form (external ids)."""
        return pd.DataFrame(
            {
                C.user: self.users.to_external(self.event_user),
                C.item: self.items.to_external(self.event_item),
                C.event_type: np.asarray(EVENT_TYPES, dtype=object)[self.event_type],
                C.timestamp: self.event_time,
                C.value: self.event_value.astype(np.float64),
            }
        )

    def __repr__(self) -> str:
        return (
            f"Interactions(users={self.shape[0]:,}, items={self.shape[1]:,}, "
            f"nnz={self.nnz:,}, events={self.n_events:,})"
        )


def _encode(
    column: pd.Series, fixed: Sequence[str] | None, field_name: str
) -> tuple[np.ndarray, IdMap]:
    if fixed is None:
        codes, uniques = pd.factorize(column, sort=False)
        if (codes < 0).any():
            raise EquilibraError(f"{field_name}: missing ids in events")
        return codes.astype(np.int64), IdMap(np.asarray(uniques, dtype=object))
    id_map = IdMap(fixed)
    codes = id_map.to_dense(column.to_numpy())
    if (codes < 0).any():
        unknown = column.to_numpy()[codes < 0][0]
        raise EquilibraError(f"{field_name}: {unknown!r} is not among the given ids")
    return codes.astype(np.int64), id_map


def type_mask(types: Iterable[str]) -> int:
    """The bit flags (1 << type code) of a set of event types, as stored in `type_flags`."""
    mask = 0
    for name in types:
        mask |= 1 << EVENT_TYPE_CODE[name]
    return mask


def cells_with_types(type_flags: sp.csr_matrix, types: Iterable[str]) -> sp.csr_matrix:
    """Boolean matrix of the cells of `type_flags` that saw any of `types`."""
    flags = sp.csr_matrix(type_flags)
    hit = (flags.data & np.uint8(type_mask(types))) != 0
    # copy=True: eliminate_zeros works in place and must not touch the flags' arrays.
    out = sp.csr_matrix((hit, flags.indices, flags.indptr), shape=flags.shape, copy=True)
    out.eliminate_zeros()
    return out
