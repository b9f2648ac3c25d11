"""The fleet log: what every replica sharing one Redis must learn or apply, in one order.

Replicas run one logical policy. The replica that closes an impression (the one that served it:
the ledger is per replica) appends it to `{prefix}:fleet`, a Redis stream capped in length;
every replica, that one included, reads the stream in order and teaches its policy each entry
(`Engine.apply_fleet`). Replicas that have read the same entries hold the same posteriors and the
same controller state, bit for bit, and so give the same propensities for the same candidates;
each reward is learnt once by each copy of the policy. The A/B tests' tallies come from the same
entries, so every replica reports the same intervals.

Not shared: budget spend. Each replica enforces the budgets on the slates it serves, so the
fleet's totals stay within them (every limit is a share: a sum of parts each within a share is
within it); an entry another replica closed is taught without its `charges`.

The same log carries the changes an admin call makes (`CHANGES`): items upserted, rules added
or deleted, users forgotten, A/B tests started, stopped or promoted. The replica that takes the
call applies it at once and appends it marked `applied`; the others apply it when they read it.
A promotion alone waits for its turn in the log (the replica that takes it applies it when it
reads it back), since it changes which policy learns the entries around it.

Redis unreachable: the replica teaches (or applies) what it has at once and keeps the entry,
marked `applied`, to append when Redis answers again. The others learn it late, so their states
then differ by the order of what they learnt, never by what. A restart replays the stream from
the last entry its snapshot had applied.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from equilibra.explore.feedback import ClosedImpression
from equilibra.service.redis_worker import RedisWorker

if TYPE_CHECKING:
    from equilibra.service.engine import Engine

log = logging.getLogger("equilibra.service")
KEEP = 50_000  # entries kept (approximately): a restart replays from here
UNSENT_LIMIT = 100_000  # entries kept in memory while Redis is down; beyond, the oldest go
START = "0-0"  # before the first entry
CLOSED = "closed"  # a closing batch of impressions
CHANGES = ("items", "rule", "unrule", "forget", "experiment", "stop", "promote")


def stream_id(text: str) -> tuple[int, int]:
    """A Redis stream id `ms-seq` as a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Entry:
    """One entry of the log as a replica reads it."""

    entry_id: str
    mine: bool  # appended by this replica
    applied: bool  # already learnt or applied here (by this replica, when it was appended)
    kind: str
    body: Any  # CLOSED: a list of ClosedImpression; a change: its JSON object


class FleetLog(RedisWorker):
    name = "fleet log"

    def __init__(self, engine: Engine, url: str, prefix: str, block_ms: int = 100):
        super().__init__(url)
        self.engine = engine
        self.stream = f"{prefix}:fleet"
        self.origin = engine.origin
        self.block_ms = block_ms
        self._unsent: deque[dict[str, str]] = deque(maxlen=UNSENT_LIMIT)
        self._unsent_lock = threading.Lock()
        import redis

        # Any failure of an append (an outage, a failover's READONLY, OOM): kept for later.
        self._append_errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self.published = 0  # entries this replica appended
        self.read = 0  # entries this replica read from the stream

    @property
    def unsent(self) -> int:
        """Entries applied here during an outage, waiting to be appended."""
        return len(self._unsent)

    # --- writing --------------------------------------------------------------------------------
    def publish(self, closed: Sequence[ClosedImpression]) -> bool:
        """Append one closing batch. False when Redis does not answer: the caller teaches the
        batch here at once, and it is appended later, marked as applied."""
        if not closed:
            return True
        body = json.dumps([c.to_json() for c in closed], allow_nan=True)
        return self._append(CLOSED, body, applied=False) is not None

    def publish_change(self, kind: str, body: Mapping[str, Any], applied: bool) -> str | None:
        """Append an admin change; `applied`: the caller has applied it here already. -> the
        entry's id, None when Redis does not answer (then it is appended later, as applied:
        the caller applies it here now)."""
        if kind not in CHANGES:
            raise ValueError(f"kind: not a change the fleet log carries: {kind!r}")
        return self._append(kind, json.dumps(body, allow_nan=True), applied)

    def _append(self, kind: str, body: str, applied: bool) -> str | None:
        fields = {"origin": self.origin, "kind": kind, "body": body}
        if applied:
            fields["applied"] = "1"
        try:
            self._send_unsent()
            entry_id = self.client.xadd(self.stream, fields, maxlen=KEEP, approximate=True)  # type: ignore[arg-type]
        except self._append_errors as exc:
            with self._unsent_lock:
                if not self._unsent:
                    log.warning(
                        "fleet log: Redis unreachable (%s): this replica learns and applies "
                        "its own changes alone until it answers",
                        exc,
                    )
                self._unsent.append({**fields, "applied": "1"})
            return None
        self.published += 1
        return str(entry_id)

    def _send_unsent(self) -> None:
        """What was applied here during an outage, for the other replicas (in that order)."""
        with self._unsent_lock:
            while self._unsent:
                self.client.xadd(self.stream, self._unsent[0], maxlen=KEEP, approximate=True)  # type: ignore[arg-type]
                self._unsent.popleft()
                self.published += 1

    # --- reading --------------------------------------------------------------------------------
    def poll_once(self, block_ms: int | None = None) -> int:
        """Learn and apply the stream's next entries. -> entries read (0: up to date)."""
        self._send_unsent()
        wait = self.block_ms if block_ms is None else block_ms
        answer = self.client.xread(
            {self.stream: self.engine.learned_through}, count=200, block=wait or None
        )
        entries = [
            self._entry(entry_id, fields) for _, rows in answer or [] for entry_id, fields in rows
        ]
        if entries:
            self.engine.apply_fleet(entries)
            self.read += len(entries)
        return len(entries)

    def _entry(self, entry_id: str, fields: Mapping[str, str]) -> Entry:
        mine = fields.get("origin") == self.origin
        applied = mine and bool(fields.get("applied"))
        kind = fields.get("kind", "")
        body: Any = None
        if not applied:  # what this replica did itself is not read again
            try:
                data = json.loads(fields.get("body", "null"))
                body = [ClosedImpression.from_json(d) for d in data] if kind == CLOSED else data
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                log.error("fleet log: entry %s (%s) unreadable, skipped: %s", entry_id, kind, exc)
                return Entry(entry_id, mine, True, kind, None)
        return Entry(entry_id, mine, applied, kind, body)

    def catch_up(self) -> int:
        """Before serving: learn everything appended since the snapshot. -> entries read.

        If the stream no longer holds entries after the snapshot's last (trimmed while this
        replica was away), the missing rewards come from the impression log instead."""
        through = self.engine.learned_through
        if through != START and self._trimmed_after(through):
            last = self.client.xrevrange(self.stream, count=1)
            log.warning(
                "fleet log: entries after %s were trimmed; relearning from the impression "
                "log instead (changes made meanwhile are in the store, or lost for rules)",
                through,
            )
            self.engine.learn_gap(last[0][0] if last else through)
            return 0
        read = 0
        while True:
            now = self.poll_once(block_ms=0)
            if not now:
                return read
            read += now

    def _trimmed_after(self, through: str) -> bool:
        """Were entries after `through` trimmed? Judged by the first entry the stream still
        holds: if it is later than `through`, some may have been (when only `through` itself
        was, this says yes too, and the replica relearns from the impression log needlessly:
        the safe side)."""
        first = self.client.xrange(self.stream, count=1)
        return bool(first) and stream_id(first[0][0]) > stream_id(through)

    def start(self) -> None:
        try:
            read = self.catch_up()
            if read:
                log.info("fleet log: caught up on %d entries since the snapshot", read)
        except self._errors as exc:
            log.warning("fleet log: Redis unreachable at start (%s)", exc)
        super().start()

    def drain(self) -> None:
        try:  # the rest of the fleet still needs what this replica did alone
            self._send_unsent()
        except self._append_errors:
            log.warning("fleet log: %d entries never reached Redis", len(self._unsent))
