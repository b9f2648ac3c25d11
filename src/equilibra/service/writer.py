"""The impression log written behind the requests: one thread, in order, in batches.

A recommend request builds its impression rows and hands them over; the thread commits what has
gathered every `interval` seconds, so a request never waits for a disk commit (on SQLite here a
commit costs about 2.5 ms, more than the model's answer; in a batch an impression costs 0.4 ms).
Rewards go through the same queue, so an impression's reward is never written before its rows.
What may lag is bounded (`interval`) and `flush` waits for it: forgetting a user, purging,
snapshots and shutdown flush first. A `kill -9` loses at most the impressions of the last
interval, and never one that an acknowledged event names (ingest flushes first); events are
written by the request that receives them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import pandas as pd

from equilibra.data.columns import Columns as C
from equilibra.data.impressions import encode_later_cells
from equilibra.store import Store

log = logging.getLogger("equilibra.service")
# Rows per transaction: about 20-40 ms of the store's lock on SQLite.
CHUNK_ROWS = 2000


class ImpressionWriter:
    def __init__(self, store: Store, interval: float = 0.1, retries: int = 5):
        self.store = store
        self.interval = interval
        self.retries = retries
        self._queue: list[tuple[str, Any]] = []
        self._queued = 0  # items ever queued
        self._done = 0  # items written (or given up on)
        self.failed = 0  # items given up on after `retries` attempts
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self._put(("rows", rows))

    def rewards(self, rewards: pd.DataFrame) -> None:
        if not rewards.empty:
            self._put(("rewards", rewards))

    def _put(self, item: tuple[str, Any]) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the impression writer is closed")
            self._queue.append(item)
            self._queued += 1

    @property
    def pending(self) -> int:
        with self._cond:
            return self._queued - self._done

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call is written; -> False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            self._cond.notify_all()
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, self.interval))
        return True

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._stopping:
                    self._cond.wait(self.interval)
                if not self._queue:
                    if self._stopping:
                        return
                    continue
                batch, self._queue = self._queue, []
            for kind, group in _coalesce(batch):
                self._write(kind, group)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()
            time.sleep(self.interval / 5)  # let a batch gather

    def _write(self, kind: str, group: list[Any]) -> None:
        # In chunks, each its own transaction: the store's lock is never held for long, so an
        # event batch waiting for it (on the event loop) waits milliseconds, not the seconds a
        # backlog of 100 k rows takes to write.
        if kind == "rows":
            rows = [r for rows in group for r in rows]
            encode_later_cells(rows, C.candidates)
            chunks = [rows[i : i + CHUNK_ROWS] for i in range(0, len(rows), CHUNK_ROWS)]
            write: Callable[[Any], object] = self.store.append_impression_rows
        else:
            rewards = pd.concat(group, ignore_index=True)
            chunks = [rewards.iloc[i : i + CHUNK_ROWS] for i in range(0, len(rewards), CHUNK_ROWS)]
            write = self.store.write_rewards
        for number, chunk in enumerate(chunks):
            if number:
                time.sleep(0.001)  # a thread waiting for the lock takes it between chunks
            if not self._attempt(partial(write, chunk)):
                self.failed += len(group)
                log.error("impression log: %d %s batches not written", len(group), kind)
                return

    def _attempt(self, write: Callable[[], object]) -> bool:
        """Write, retrying a locked or full database; -> False once the retries are spent."""
        for attempt in range(1, self.retries + 1):
            try:
                write()
                return True
            except Exception:
                if attempt == self.retries:
                    log.exception("impression log: a write failed %d times", attempt)
                    return False
                time.sleep(self.interval * 2**attempt)
        return False


def _coalesce(batch: list[tuple[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Consecutive items of one kind as one write, the order between kinds kept."""
    out: list[tuple[str, list[Any]]] = []
    for kind, item in batch:
        if out and out[-1][0] == kind:
            out[-1][1].append(item)
        else:
            out.append((kind, [item]))
    return out
