"""Feedback between replicas: the events each one stores, passed to the others' ledgers.

An impression is open in the ledger of the replica that served it; the click or purchase that
answers it may reach any replica. So every replica appends the events it stores to one Redis
stream (`{prefix}:feedback`, one entry per batch, capped in length) and reads everyone else's:
each event is attributed (`FeedbackLedger.observe`) by every replica, and credited by the one
holding the impression, so the reward is learnt once. The events also move each reader's event
clock, which closes its impressions on time. A replica that was down misses the stream, and
needs not: at start it reopens its open impressions with the events in the shared store.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from equilibra.data.columns import is_missing
from equilibra.service.engine import Engine
from equilibra.service.redis_worker import RedisWorker

log = logging.getLogger("equilibra.service")
KEEP = 100_000  # batches kept in the stream (approximately): minutes of traffic


class FeedbackBus(RedisWorker):
    name = "feedback bus"

    def __init__(self, engine: Engine, url: str, prefix: str, block_ms: int = 500):
        super().__init__(url)
        self.engine = engine
        self.stream = f"{prefix}:feedback"
        self.origin = uuid.uuid4().hex  # this replica, so it skips its own batches
        self.block_ms = block_ms
        self._last = "$"
        self.received = 0  # events from other replicas

    def publish(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """The events a replica just stored: (event_id, user, item, type, time, value,
        impression), as `Engine.ingest` has them."""
        if not rows:
            return
        batch = [
            [str(user), str(item), str(kind), float(stamp),
             None if is_missing(value) else float(value),
             None if is_missing(impression) else str(impression)]
            for _, user, item, kind, stamp, value, impression in rows
        ]  # fmt: skip
        try:
            self.client.xadd(
                self.stream,
                {"origin": self.origin, "events": json.dumps(batch)},
                maxlen=KEEP,
                approximate=True,
            )
        except self._errors as exc:  # the events are stored; only other replicas' credit waits
            log.warning("feedback bus: cannot publish %d events (%s)", len(batch), exc)

    def poll_once(self, block_ms: int | None = None) -> int:
        """Attribute the other replicas' next events here. -> events received."""
        wait = self.block_ms if block_ms is None else block_ms
        answer = self.client.xread({self.stream: self._last}, count=100, block=wait)
        received = 0
        for _, entries in answer or []:
            for entry_id, fields in entries:
                self._last = entry_id
                if fields.get("origin") == self.origin:
                    continue
                events = json.loads(fields["events"])
                received += len(events)
                self.engine.observe_elsewhere(events)
        self.received += received
        return received

    def start(self) -> None:
        # Read from now on: what came before is in the store, which `Engine.start` read.
        try:
            last = self.client.xrevrange(self.stream, count=1)
            self._last = last[0][0] if last else "0-0"
        except self._errors:
            self._last = "0-0"
        super().start()
