"""Bulk import: read a file in chunks, validate, append to a store, and account for every row."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd

from equilibra.data.formats import (
    DEFAULT_CHUNK,
    Chunk,
    ColumnMapping,
    read_events,
    read_items,
    read_users,
)
from equilibra.data.validate import (
    Checked,
    validate_events,
    validate_impressions,
    validate_items,
    validate_users,
)
from equilibra.domain import DEFAULT_RULES, ValidationRules
from equilibra.store import Store

T = TypeVar("T")
BULK_LOAD_BYTES = 32 * 1024 * 1024
ProgressCallback = Callable[[int, int], None]  # (done, total) in the reader's units


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    items: int = 0
    items_rejected: int = 0
    users: int = 0
    users_rejected: int = 0
    impressions: int = 0
    impression_duplicates: int = 0
    impressions_rejected: int = 0
    seconds: float = 0.0
    rejects_file: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}


class RejectsWriter:
    """Appends rejected rows to one CSV: table, source_row, reason, and the row's fields as JSON.

    The JSON column keeps the file rectangular whatever the source's columns were, and keeps
    every field of the rejected row, so nothing is lost and a fixed file can be re-imported.
    """

    COLUMNS = ("table", "source_row", "reason", "row")

    def __init__(self, path: Path | None):
        self.path = path
        self.written = 0

    def write(self, rejects: pd.DataFrame, table: str) -> None:
        if rejects.empty or self.path is None:
            return
        fields = rejects.drop(columns=["reason", "source_row"], errors="ignore")
        records = fields.astype(object).where(fields.notna(), None).to_dict("records")
        source_row = (
            rejects["source_row"]
            if "source_row" in rejects
            else pd.Series([None] * len(rejects), index=rejects.index)
        )
        out = pd.DataFrame(
            {
                "table": table,
                "source_row": source_row.astype("Int64").to_numpy(),
                "reason": rejects["reason"].to_numpy(),
                "row": [json.dumps(r, default=str, ensure_ascii=False) for r in records],
            }
        )
        first = self.written == 0
        if first:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(self.path, mode="w" if first else "a", header=first, index=False)
        self.written += len(out)


def _store_items(
    store: Store, checked: Checked, report: ImportReport, rejects: RejectsWriter
) -> None:
    report.items += store.upsert_items(checked.valid)
    report.items_rejected += len(checked.rejects)
    rejects.write(checked.rejects, "items")


def _store_users(
    store: Store, checked: Checked, report: ImportReport, rejects: RejectsWriter
) -> None:
    report.users += store.upsert_users(checked.valid)
    report.users_rejected += len(checked.rejects)
    rejects.write(checked.rejects, "users")


def _store_impressions(
    store: Store, checked: Checked, report: ImportReport, rejects: RejectsWriter
) -> None:
    appended = store.append_impressions(checked.valid)
    report.impressions += appended.accepted
    report.impression_duplicates += appended.duplicates
    report.impressions_rejected += len(checked.rejects)
    rejects.write(checked.rejects, "impressions")


def _store_events(
    store: Store, checked: Checked, rows: int, report: ImportReport, rejects: RejectsWriter
) -> None:
    result = store.append_events(checked.valid)
    report.rows += rows
    report.accepted += result.accepted
    report.duplicates += result.duplicates
    report.rejected += len(checked.rejects)
    rejects.write(checked.rejects, "events")


def import_files(
    store: Store,
    events: Path | None,
    fmt: str = "canonical",
    items: Path | None = None,
    users: Path | None = None,
    mapping: ColumnMapping | None = None,
    rejects_path: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    rules: ValidationRules = DEFAULT_RULES,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import items and users first (so events can refer to them), then events in chunks."""
    report = ImportReport(rejects_file=str(rejects_path) if rejects_path else None)
    rejects = RejectsWriter(rejects_path)
    started = time.perf_counter()
    now = time.time()
    if items is not None:
        _store_items(store, validate_items(read_items(items, fmt), rules, now), report, rejects)
    if users is not None:
        _store_users(store, validate_users(read_users(users, fmt)), report, rejects)
    if events is not None:
        # Rebuilding indexes pays off only when the file is big against what is stored.
        large = Path(events).stat().st_size >= BULK_LOAD_BYTES if Path(events).is_file() else False
        with store.bulk_load() if large else contextlib.nullcontext():
            _import_event_chunks(
                store,
                read_events(events, fmt, chunk_size, mapping),
                report,
                rejects,
                rules,
                now,
                progress,
            )
    report.seconds = time.perf_counter() - started
    if rejects.written == 0:
        report.rejects_file = None
    return report


@dataclass
class _CheckedChunk:
    chunk: Chunk
    events: Checked
    items: Checked | None
    impressions: Checked | None


def _check_chunk(chunk: Chunk, rules: ValidationRules, now: float) -> _CheckedChunk:
    has_items = chunk.items is not None and not chunk.items.empty
    has_shown = chunk.impressions is not None and not chunk.impressions.empty
    return _CheckedChunk(
        chunk=chunk,
        events=validate_events(chunk.events, rules, now, chunk.timestamp_unit),
        items=validate_items(chunk.items, rules, now) if has_items else None,  # type: ignore[arg-type]
        impressions=(
            validate_impressions(chunk.impressions, rules, now)  # type: ignore[arg-type]
            if has_shown
            else None
        ),
    )


def prefetched(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Run an iterator one or two steps ahead in a thread.

    Reading and validating the next chunk (pandas, mostly outside the GIL) then overlaps with
    writing the current one to the database.
    """
    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        slots.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(("done", None))
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(("error", exc))

    worker = threading.Thread(target=produce, name="equilibra-import-reader", daemon=True)
    worker.start()
    try:
        while True:
            kind, payload = slots.get()
            if kind == "done":
                return
            if kind == "error":
                raise payload  # type: ignore[misc]
            yield payload  # type: ignore[misc]
    finally:
        stop.set()


def _import_event_chunks(
    store: Store,
    chunks: Iterable[Chunk],
    report: ImportReport,
    rejects: RejectsWriter,
    rules: ValidationRules,
    now: float,
    progress: ProgressCallback | None,
) -> None:
    checked_chunks = (_check_chunk(chunk, rules, now) for chunk in chunks)
    for checked in prefetched(checked_chunks):
        if checked.items is not None:
            _store_items(store, checked.items, report, rejects)
        if checked.impressions is not None:
            _store_impressions(store, checked.impressions, report, rejects)
        _store_events(store, checked.events, len(checked.chunk.events), report, rejects)
        if progress is not None:
            progress(checked.chunk.done, checked.chunk.total)


def import_frames(
    store: Store,
    events: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    rules: ValidationRules = DEFAULT_RULES,
) -> ImportReport:
    """The library path: canonical DataFrames (e.g. from the synthetic shop) into a store."""
    report = ImportReport()
    no_file = RejectsWriter(None)  # the caller holds the frames; rejects are only counted
    started = time.perf_counter()
    now = time.time()
    if items is not None:
        _store_items(store, validate_items(items, rules, now), report, no_file)
    if users is not None:
        _store_users(store, validate_users(users), report, no_file)
    if events is not None:
        _store_events(store, validate_events(events, rules, now), len(events), report, no_file)
    report.seconds = time.perf_counter() - started
    return report
