"""The policy's shared learning: every replica learns every closed impression, in one order.

Replicas sharing Redis run one logical policy. The replica that closes an impression (the one
that served it: design.md's ledger is per replica) appends it to `{prefix}:learning`, a Redis
stream capped in length; every replica, that one included, reads the stream in order and
teaches its policy each entry (`Engine.learn_shared`). Replicas that have read the same entries
hold the same posteriors and the same controller state, bit for bit, and so give the same
propensities for the same candidates; each reward is learnt once by each copy of the policy.

Not shared: budget spend. Each replica enforces the budgets on the slates it serves, so the
fleet's totals stay within them (every limit is a share: a sum of parts each within a share is
within it); an entry another replica closed is taught without its `charges`.

Redis unreachable when an impression closes: the closing replica teaches its own policy at once
and keeps the entry, marked `taught`, to append when Redis answers again; reading it back, it
skips it. The others learn it late, so their states then differ by the order of what they learnt,
never by what. A restart replays the stream from the last entry its snapshot had learnt.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from equilibra.explore.feedback import ClosedImpression
from equilibra.service.redis_worker import RedisWorker

if TYPE_CHECKING:
    from equilibra.service.engine import Engine

log = logging.getLogger("equilibra.service")
KEEP = 50_000  # entries kept (approximately; one per closing batch): a restart replays from here
UNSENT_LIMIT = 100_000  # entries kept in memory while Redis is down; beyond, the oldest go
START = "0-0"  # before the first entry


def stream_id(text: str) -> tuple[int, int]:
    """A Redis stream id `ms-seq` as a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class LearningLog(RedisWorker):
    name = "learning log"

    def __init__(self, engine: Engine, url: str, prefix: str, block_ms: int = 100):
        super().__init__(url)
        self.engine = engine
        self.stream = f"{prefix}:learning"
        self.origin = engine.origin
        self.block_ms = block_ms
        self._unsent: deque[str] = deque(maxlen=UNSENT_LIMIT)  # taught here, not yet appended
        self._unsent_lock = threading.Lock()
        self.published = 0  # entries this replica appended
        self.applied = 0  # entries this replica learnt from the stream

    # --- writing --------------------------------------------------------------------------------
    def publish(self, closed: Sequence[ClosedImpression]) -> bool:
        """Append one closing batch. False when Redis does not answer: the caller teaches the
        batch here at once, and it is appended later, marked as already taught."""
        if not closed:
            return True
        payload = json.dumps([c.to_json() for c in closed], allow_nan=True)
        try:
            self._send_unsent()
            self.client.xadd(
                self.stream,
                {"origin": self.origin, "closed": payload},
                maxlen=KEEP,
                approximate=True,
            )
        except self._errors as exc:
            with self._unsent_lock:
                if not self._unsent:
                    log.warning(
                        "learning log: Redis unreachable (%s): this replica learns its own "
                        "impressions alone until it answers",
                        exc,
                    )
                self._unsent.append(payload)
            return False
        self.published += 1
        return True

    def _send_unsent(self) -> None:
        """What was taught here during an outage, for the other replicas (in the order taught)."""
        with self._unsent_lock:
            while self._unsent:
                self.client.xadd(
                    self.stream,
                    {"origin": self.origin, "closed": self._unsent[0], "taught": "1"},
                    maxlen=KEEP,
                    approximate=True,
                )
                self._unsent.popleft()
                self.published += 1

    # --- reading --------------------------------------------------------------------------------
    def poll_once(self, block_ms: int | None = None) -> int:
        """Teach the policy the stream's next entries. -> entries read (0: up to date)."""
        self._send_unsent()
        wait = self.block_ms if block_ms is None else block_ms
        answer = self.client.xread(
            {self.stream: self.engine.learned_through}, count=200, block=wait or None
        )
        entries: list[tuple[str, bool, list[ClosedImpression]]] = []
        for _, rows in answer or []:
            for entry_id, fields in rows:
                mine = fields.get("origin") == self.origin
                if mine and fields.get("taught"):
                    entries.append((entry_id, mine, []))  # learnt when it closed
                    continue
                closed = [ClosedImpression.from_json(d) for d in json.loads(fields["closed"])]
                entries.append((entry_id, mine, closed))
        if entries:
            self.engine.learn_shared(entries)
            self.applied += len(entries)
        return len(entries)

    def catch_up(self) -> int:
        """Before serving: learn everything appended since the snapshot. -> entries learnt.

        If the stream no longer holds the entry after the snapshot's last (trimmed while this
        replica was away), the missing rewards come from the impression log instead."""
        first = self.client.xrange(self.stream, count=1)
        through = self.engine.learned_through
        if first and through != START and stream_id(first[0][0]) > stream_id(through):
            last = self.client.xrevrange(self.stream, count=1)
            log.warning(
                "learning log: the entries after %s were trimmed; relearning from the "
                "impression log instead",
                through,
            )
            self.engine.learn_gap(last[0][0])
            return 0
        learnt = 0
        while True:
            read = self.poll_once(block_ms=0)
            if not read:
                return learnt
            learnt += read

    def start(self) -> None:
        try:
            learnt = self.catch_up()
            if learnt:
                log.info("learning log: caught up on %d entries since the snapshot", learnt)
        except self._errors as exc:
            log.warning("learning log: Redis unreachable at start (%s)", exc)
        super().start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:  # the rest of the fleet still needs what this replica taught itself
            self._send_unsent()
        except self._errors:
            log.warning("learning log: %d entries never reached Redis", len(self._unsent))
        self.client.close()
