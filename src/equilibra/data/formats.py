"""Readers that turn known file formats into canonical frames, a chunk at a time.

A reader only renames and maps; it never judges a row. Validation happens afterwards in one place
(:mod:`equilibra.data.validate`), so every format gets the same rules and the same reject reasons.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns
from equilibra.errors import EquilibraError

C = Columns
DEFAULT_CHUNK = 250_000


@dataclass
class Chunk:
    """Canonically named (not yet validated) rows read from one slice of a source file."""

    events: pd.DataFrame
    items: pd.DataFrame | None = None
    impressions: pd.DataFrame | None = None
    timestamp_unit: str = "s"
    done: int = 0  # progress so far, in the units of `total` (bytes or rows)
    total: int = 0


@dataclass(frozen=True)
class ColumnMapping:
    """A generic mapping from a user's columns to canonical ones (`equilibra import --map`)."""

    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> source column
    types: dict[str, str] = field(default_factory=dict)  # source event name -> canonical type
    timestamp_unit: str = "s"
    sep: str = ","
    header: bool = True

    @classmethod
    def parse(
        cls, spec: str, type_spec: str = "", timestamp_unit: str = "s", sep: str = ","
    ) -> ColumnMapping:
        def pairs(text: str, what: str) -> dict[str, str]:
            out: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                if "=" not in part:
                    raise EquilibraError(f"{what}: expected NAME=VALUE pairs, got {part!r}")
                key, value = (s.strip() for s in part.split("=", 1))
                out[key] = value
            return out

        columns = pairs(spec, "map")
        allowed = {C.user, C.item, C.event_type, C.timestamp, C.value, C.event_id, C.impression_id}
        unknown = set(columns) - allowed
        if unknown:
            raise EquilibraError(
                f"map: unknown canonical column(s) {sorted(unknown)}; "
                f"expected some of {sorted(allowed)}"
            )
        missing = {C.user, C.item, C.event_type} - set(columns)
        if missing:
            raise EquilibraError(f"map: must name a source column for {sorted(missing)}")
        if timestamp_unit not in ("s", "ms", "us", "ns"):
            raise EquilibraError("timestamp-unit: expected s, ms, us or ns")
        return cls(
            columns=columns,
            types=pairs(type_spec, "type-map"),
            timestamp_unit=timestamp_unit,
            sep=sep,
        )


# --- opening files ---------------------------------------------------------------------------


class _Source:
    """A file opened for pandas, with the byte position of the underlying file for progress."""

    def __init__(self, path: Path):
        if not path.exists():
            raise EquilibraError(f"events: file {path} does not exist")
        if path.is_dir():
            raise EquilibraError(f"events: {path} is a folder; give the file inside it")
        self.path = path
        self.total = path.stat().st_size
        self.raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.stream: IO[bytes] = (
            gzip.GzipFile(fileobj=self.raw) if path.suffix == ".gz" else self.raw
        )

    @property
    def done(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.stream.close()
        self.raw.close()


def _csv_chunks(
    path: Path, chunk_size: int, **options: Any
) -> Iterator[tuple[pd.DataFrame, int, int]]:
    """Yield (frame with a `source_row` column, bytes done, bytes total)."""
    source = _Source(path)
    try:
        # Rows are numbered as lines of the file, so a reject points at the line to fix.
        first_row = 1 if "header" in options and options["header"] is None else 2
        row = 0
        try:
            reader = pd.read_csv(
                source.stream,
                chunksize=chunk_size,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                **options,
            )
            for frame in reader:
                frame.insert(0, C.source_row, np.arange(row, row + len(frame)) + first_row)
                row += len(frame)
                yield frame, source.done, source.total
        except (pd.errors.ParserError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
            message = str(exc).strip().splitlines()[0]
            raise EquilibraError(
                f"events: cannot read {path.name} near row {row + first_row}: {message}"
            ) from exc
    finally:
        source.close()


def _parquet_chunks(path: Path, chunk_size: int) -> Iterator[tuple[pd.DataFrame, int, int]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise EquilibraError(f"events: cannot read {path.name} as Parquet: {exc}") from exc
    total = parquet.metadata.num_rows
    row = 0
    for batch in parquet.iter_batches(batch_size=chunk_size):
        frame = batch.to_pandas()
        frame.insert(0, C.source_row, np.arange(row, row + len(frame)) + 1)
        row += len(frame)
        yield frame, row, total


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _table_chunks(
    path: Path, chunk_size: int, **options: Any
) -> Iterator[tuple[pd.DataFrame, int, int]]:
    if _is_parquet(path):
        return _parquet_chunks(path, chunk_size)
    return _csv_chunks(path, chunk_size, **options)


def _require(frame: pd.DataFrame, columns: list[str], path: Path, fmt: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise EquilibraError(
            f"events: {path.name} lacks column(s) {missing} of the {fmt} format "
            f"(found {[c for c in frame.columns if c != C.source_row][:12]})"
        )


def _rename_types(column: pd.Series, names: dict[str, str]) -> pd.Series:
    """Map a source's event names to canonical ones; unknown names pass through to be rejected."""
    return column.map(names).fillna(column)


# --- event readers ---------------------------------------------------------------------------


def read_canonical(path: Path, chunk_size: int) -> Iterator[Chunk]:
    for frame, done, total in _table_chunks(path, chunk_size):
        if C.event_type not in frame and "type" in frame:
            frame = frame.rename(columns={"type": C.event_type})
        _require(frame, [C.user, C.item, C.event_type, C.timestamp], path, "canonical")
        yield Chunk(events=frame, done=done, total=total)


def read_mapped(path: Path, chunk_size: int, mapping: ColumnMapping) -> Iterator[Chunk]:
    options: dict[str, Any] = {"sep": mapping.sep}
    if not mapping.header:
        options["header"] = None
    for frame, done, total in _table_chunks(path, chunk_size, **options):
        frame.columns = [str(c) for c in frame.columns]
        _require(frame, list(mapping.columns.values()), path, "mapped")
        out = pd.DataFrame({C.source_row: frame[C.source_row]})
        for canonical, source in mapping.columns.items():
            out[canonical] = frame[source]
        if mapping.types:
            out[C.event_type] = _rename_types(out[C.event_type], mapping.types)
        yield Chunk(events=out, timestamp_unit=mapping.timestamp_unit, done=done, total=total)


def _movielens_flavour(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".dat"):
        return "dat"
    if name.startswith("u.data") or name.endswith(".data"):
        return "tab"
    return "csv"


def read_movielens(path: Path, chunk_size: int) -> Iterator[Chunk]:
    """ML-100K `u.data` (tab), ML-1M `ratings.dat` (`::`) or latest `ratings.csv` (header)."""
    flavour = _movielens_flavour(path)
    names = [C.user, C.item, C.value, C.timestamp]
    if flavour == "dat":
        # '::' read with ':' keeps pandas' fast C parser; the empty fields between fall away.
        chunks = _csv_chunks(
            path, chunk_size, sep=":", header=None, names=["u", "_1", "i", "_2", "r", "_3", "t"]
        )
        rename = {"u": C.user, "i": C.item, "r": C.value, "t": C.timestamp}
    elif flavour == "tab":
        chunks = _csv_chunks(path, chunk_size, sep="\t", header=None, names=names)
        rename = {}
    else:
        chunks = _csv_chunks(path, chunk_size)
        rename = {"userId": C.user, "movieId": C.item, "rating": C.value, "timestamp": C.timestamp}
    for frame, done, total in chunks:
        frame = frame.rename(columns=rename)
        _require(frame, names, path, "movielens")
        frame = frame[[C.source_row, *names]].assign(**{C.event_type: "rating"})
        yield Chunk(events=frame, done=done, total=total)


TAOBAO_TYPES = {"pv": "view", "cart": "add_to_cart", "fav": "favorite", "buy": "purchase"}


def read_taobao(path: Path, chunk_size: int) -> Iterator[Chunk]:
    """Tianchi UserBehavior: no header; user, item, category, behaviour (pv/cart/fav/buy), time."""
    names = [C.user, C.item, "category_id", "behavior_type", C.timestamp]
    for frame, done, total in _csv_chunks(path, chunk_size, header=None, names=names):
        types = _rename_types(frame["behavior_type"], TAOBAO_TYPES)
        events = frame[[C.source_row, C.user, C.item, C.timestamp]].assign(**{C.event_type: types})
        items = _categories_of(frame[[C.item, "category_id"]].dropna())
        yield Chunk(events=events, items=items, done=done, total=total)


def _categories_of(pairs: pd.DataFrame) -> pd.DataFrame:
    """(item, category) rows -> one item row with `|`-joined categories."""
    grouped = (
        pairs.drop_duplicates()
        .groupby(C.item, sort=False)["category_id"]
        .agg(lambda s: "|".join(sorted(map(str, s))))
    )
    return pd.DataFrame({C.item: grouped.index, C.categories: grouped.to_numpy()})


RETAILROCKET_TYPES = {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}


def read_retailrocket(path: Path, chunk_size: int) -> Iterator[Chunk]:
    """RetailRocket `events.csv`: timestamp (Unix ms), visitorid, event, itemid, transactionid."""
    for frame, done, total in _csv_chunks(path, chunk_size):
        _require(frame, ["timestamp", "visitorid", "event", "itemid"], path, "retailrocket")
        events = pd.DataFrame(
            {
                C.source_row: frame[C.source_row],
                C.user: frame["visitorid"],
                C.item: frame["itemid"],
                C.event_type: _rename_types(frame["event"], RETAILROCKET_TYPES),
                C.timestamp: frame["timestamp"],
            }
        )
        if "transactionid" in frame:
            tx = frame["transactionid"]
            context = pd.Series(None, index=frame.index, dtype=object)
            has_tx = tx.notna()
            context[has_tx] = '{"transaction_id": "' + tx[has_tx] + '"}'
            events[C.context] = context
        yield Chunk(events=events, timestamp_unit="ms", done=done, total=total)


REES46_TYPES = {"view": "view", "cart": "add_to_cart", "purchase": "purchase"}


def read_rees46(path: Path, chunk_size: int) -> Iterator[Chunk]:
    """REES46 eCommerce behaviour: event_time, event_type, product_id, …, user_id, user_session.

    `remove_from_cart` has no canonical type, so those rows are rejected with that reason.
    """
    for frame, done, total in _csv_chunks(path, chunk_size):
        _require(frame, ["event_time", "event_type", "product_id", "user_id"], path, "rees46")
        events = pd.DataFrame(
            {
                C.source_row: frame[C.source_row],
                C.user: frame["user_id"],
                C.item: frame["product_id"],
                C.event_type: _rename_types(frame["event_type"], REES46_TYPES),
                C.timestamp: frame["event_time"].str.replace(" UTC", "+00:00", regex=False),
            }
        )
        item_columns = {
            "product_id": C.item,
            "category_code": C.categories,
            "price": C.price,
            "brand": "brand",
            "category_id": "category_id",
        }
        present = [c for c in item_columns if c in frame]
        # Per item, the latest non-empty value of each field (groupby.last skips NaN).
        items = (
            frame[present]
            .rename(columns=item_columns)
            .groupby(C.item, sort=False)
            .last()
            .reset_index()
        )
        if C.categories in items:
            items[C.categories] = items[C.categories].str.replace(".", "|", regex=False)
        yield Chunk(events=events, items=items, done=done, total=total)


def read_obd(path: Path, chunk_size: int) -> Iterator[Chunk]:
    """Open Bandit Dataset `all.csv`: one row per shown item, with its logged propensity.

    Every row becomes an impression; rows with a click also become a `click` event linked to it.
    OBD has no user ids, only hashed features: their combination stands in as the user.
    """
    policy = path.parent.parent.name if path.parent.parent.name in ("random", "bts") else "logged"
    for frame, done, total in _csv_chunks(path, chunk_size):
        _require(
            frame, ["timestamp", "item_id", "position", "click", "propensity_score"], path, "obd"
        )
        index = frame[frame.columns[1]] if frame.columns[1] == "Unnamed: 0" else frame[C.source_row]
        features = [c for c in frame.columns if c.startswith("user_feature_")]
        user = (
            frame[features]
            .astype(str)
            .agg("|".join, axis=1)
            .map(lambda s: "obd-" + hashlib.sha1(s.encode()).hexdigest()[:12])
        )
        impression = f"obd-{policy}-" + index.astype(str)
        context = frame[features].to_dict("records")
        impressions = pd.DataFrame(
            {
                C.impression_id: impression,
                C.position: pd.to_numeric(frame["position"]),
                C.user: user,
                C.item: frame["item_id"],
                C.timestamp: frame["timestamp"],
                C.propensity: pd.to_numeric(frame["propensity_score"]),
                C.policy: policy,
                C.explore: None,
                C.reward: pd.to_numeric(frame["click"]),
                C.context: [json.dumps(c, sort_keys=True) for c in context],
            }
        )
        clicked = frame["click"].astype(str).str.strip() == "1"
        events = pd.DataFrame(
            {
                C.source_row: frame[C.source_row],
                C.user: user,
                C.item: frame["item_id"],
                C.event_type: "click",
                C.timestamp: frame["timestamp"],
                C.impression_id: impression,
                C.event_id: impression + "-click",
            }
        )[clicked]
        yield Chunk(events=events, impressions=impressions, done=done, total=total)


EventReader = Callable[[Path, int], Iterator[Chunk]]
FORMATS: dict[str, EventReader] = {
    "canonical": read_canonical,
    "movielens": read_movielens,
    "taobao": read_taobao,
    "retailrocket": read_retailrocket,
    "rees46": read_rees46,
    "obd": read_obd,
}


def read_events(
    path: Path | str,
    fmt: str = "canonical",
    chunk_size: int = DEFAULT_CHUNK,
    mapping: ColumnMapping | None = None,
) -> Iterator[Chunk]:
    path = Path(path)
    if mapping is not None:
        return read_mapped(path, chunk_size, mapping)
    if fmt not in FORMATS:
        raise EquilibraError(
            f"format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    return FORMATS[fmt](path, chunk_size)


# --- item and user readers --------------------------------------------------------------------

ML_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def read_items(path: Path | str, fmt: str = "canonical") -> pd.DataFrame:
    """A whole item file as a canonical (not yet validated) frame."""
    path = Path(path)
    if not path.exists():
        raise EquilibraError(f"items: file {path} does not exist")
    try:
        return _with_line_numbers(_ITEM_READERS.get(fmt, _read_canonical_table)(path))
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EquilibraError(f"items: cannot read {path.name}: {str(exc).splitlines()[0]}") from exc


def read_users(path: Path | str, fmt: str = "canonical") -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise EquilibraError(f"users: file {path} does not exist")
    if fmt == "movielens" and path.name.startswith("u.user"):
        frame = pd.read_csv(
            path,
            sep="|",
            header=None,
            dtype=str,
            encoding="latin-1",
            names=[C.user, "age", "gender", "occupation", "zip_code"],
        )
        return _with_line_numbers(frame, header=False)
    return _with_line_numbers(_read_canonical_table(path))


def _with_line_numbers(frame: pd.DataFrame, header: bool = True) -> pd.DataFrame:
    """Number rows as lines of their file so a reject points at the line to fix."""
    if C.source_row not in frame:
        frame.insert(0, C.source_row, np.arange(len(frame)) + (2 if header else 1))
    return frame


def _read_canonical_table(path: Path) -> pd.DataFrame:
    if _is_parquet(path):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def _read_movielens_items(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.startswith("u.item"):
        frame = pd.read_csv(
            path,
            sep="|",
            header=None,
            dtype=str,
            encoding="latin-1",
            names=[C.item, C.title, "release_date", "video_release_date", "imdb_url", *ML_GENRES],
        )
        flags = frame[ML_GENRES].astype(int).to_numpy().astype(bool)
        genres = ["|".join(g for g, f in zip(ML_GENRES, row, strict=True) if f) for row in flags]
        return pd.DataFrame(
            {
                C.item: frame[C.item],
                C.title: frame[C.title],
                C.categories: genres,
                "release_date": frame["release_date"],
            }
        )
    if name.endswith(".dat"):
        text = path.read_text(encoding="latin-1")
        rows = [line.split("::") for line in text.splitlines() if line]
        frame = pd.DataFrame(rows, columns=[C.item, C.title, C.categories])
    else:
        frame = pd.read_csv(path, dtype=str).rename(
            columns={"movieId": C.item, "title": C.title, "genres": C.categories}
        )
    frame[C.categories] = frame[C.categories].replace("(no genres listed)", None)
    return frame


def _read_retailrocket_items(path: Path) -> pd.DataFrame:
    """`item_properties*.csv` (timestamp, itemid, property, value): latest category/availability."""
    frame = pd.read_csv(path, dtype=str)
    frame = frame[frame["property"].isin(["categoryid", "available"])]
    frame = frame.assign(ts=pd.to_numeric(frame["timestamp"])).sort_values("ts")
    latest = frame.drop_duplicates(["itemid", "property"], keep="last").pivot(
        index="itemid", columns="property", values="value"
    )
    out = pd.DataFrame({C.item: latest.index})
    if "categoryid" in latest:
        out[C.categories] = latest["categoryid"].to_numpy()
    if "available" in latest:
        out[C.available] = latest["available"].to_numpy()
    return out


def _read_obd_items(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str)
    return frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed")])


def _read_taobao_items(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, header=None, dtype=str, names=[C.item, "category_id"])
    return _categories_of(frame)


_ITEM_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "movielens": _read_movielens_items,
    "retailrocket": _read_retailrocket_items,
    "obd": _read_obd_items,
    "taobao": _read_taobao_items,
}
