"""Events from a Redis stream, beside `POST /v1/events` (`EQUILIBRA_REDIS_STREAM`).

Each stream entry has a field `event`: one event as `POST /v1/events` takes it, in JSON. The
replicas read as one consumer group, so each entry goes to one of them. An entry is acknowledged
(XACK) only once its event is stored; an entry that is not a valid event is copied, with the
reason, to `{stream}:rejected` and then acknowledged, so nothing is lost silently. Delivery is
at-least-once: the entries a consumer read and did not acknowledge (it died) are claimed by
another after `claim_idle_ms`, and by itself at its next start. The store's `event_id` makes that
exactly-once; an event without one is given the entry's own id (`{stream}-{entry id}`), which a
redelivery repeats.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as SchemaError

from equilibra.data.validate import validate_events
from equilibra.service.engine import Engine
from equilibra.service.redis_worker import RedisWorker
from equilibra.service.routes.events import events_frame
from equilibra.service.schemas import EventIn

log = logging.getLogger("equilibra.service")
_EVENT = TypeAdapter(EventIn)


class EventStream(RedisWorker):
    def __init__(
        self,
        engine: Engine,
        url: str,
        stream: str,
        group: str = "equilibra",
        consumer: str | None = None,
        batch: int = 500,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        on_stored: Callable[[int, int], None] | None = None,
    ):
        super().__init__(url)
        import redis

        self.name = f"event stream {stream}"
        self.engine = engine
        self.stream, self.group = stream, group
        self.rejected = f"{stream}:rejected"
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch, self.block_ms, self.claim_idle_ms = batch, block_ms, claim_idle_ms
        self._response_error = redis.ResponseError
        self._claimed_at = 0.0
        self.on_stored = on_stored  # (accepted, duplicates), for the metrics
        self.stored = 0  # events stored from the stream (duplicates not counted)
        self.rejects = 0

    # --- one pass -------------------------------------------------------------------------------
    def reconnected(self) -> None:
        self.ensure_group()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except self._response_error as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll_once(self, block_ms: int | None = None) -> int:
        """Read, store and acknowledge one batch: this consumer's own unacknowledged entries
        first, then entries idle too long at other consumers, then new ones. -> entries read."""
        entries = self._read(self.stream, "0", None)  # ours, read before and not acknowledged
        if not entries and time.monotonic() - self._claimed_at > self.claim_idle_ms / 1000:
            self._claimed_at = time.monotonic()
            answer = self.client.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
            )
            entries = [(i, f) for i, f in answer[1] if f]
        if not entries:
            entries = self._read(self.stream, ">", self.block_ms if block_ms is None else block_ms)
        if entries:
            self._handle(entries)
        return len(entries)

    def _read(self, stream: str, start: str, block_ms: int | None) -> list[tuple[str, dict]]:
        answer = self.client.xreadgroup(
            self.group, self.consumer, {stream: start}, count=self.batch, block=block_ms
        )
        return [(i, f) for _, rows in answer or [] for i, f in rows if f]

    def _handle(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        events: list[EventIn] = []
        ids: list[str] = []
        bad: list[tuple[str, dict[str, Any], str]] = []
        for entry_id, fields in entries:
            try:
                event = _EVENT.validate_python(json.loads(fields["event"]))
            except KeyError:
                bad.append((entry_id, fields, "event: the entry has no field 'event'"))
                continue
            except ValueError as exc:  # JSON, or the schema (pydantic's errors are ValueErrors)
                bad.append((entry_id, fields, _reason(exc)))
                continue
            if event.event_id is None:
                event = event.model_copy(update={"event_id": f"{self.stream}-{entry_id}"})
            events.append(event)
            ids.append(entry_id)
        if events:
            checked = validate_events(events_frame(events, time.time()))
            fields_of = dict(entries)
            rejects = checked.rejects
            for row, reason in zip(rejects["_row"], rejects["reason"], strict=True):
                entry = ids[int(row)]
                bad.append((entry, fields_of[entry], str(reason)))
            if len(checked.valid):
                accepted, duplicates = self.engine.ingest(checked.valid)  # durable now
                self.stored += accepted
                if self.on_stored is not None:
                    self.on_stored(accepted, duplicates)
        order = {entry_id: i for i, (entry_id, _) in enumerate(entries)}
        bad.sort(key=lambda b: order[b[0]])  # in the stream's order
        pipe = self.client.pipeline(transaction=False)
        for entry_id, fields, reason in bad:
            pipe.xadd(self.rejected, {**fields, "entry_id": entry_id, "reason": reason})
        pipe.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))
        pipe.execute()
        if bad:
            self.rejects += len(bad)
            log.warning(
                "event stream %s: %d entries rejected to %s (first: %s)",
                self.stream,
                len(bad),
                self.rejected,
                bad[0][2],
            )


def _reason(exc: Exception) -> str:
    if isinstance(exc, SchemaError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "event"
        return f"{field}: {str(first['msg']).removeprefix('Value error, ')}"
    return f"event: not JSON ({exc})"
