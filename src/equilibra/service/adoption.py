"""Replicas that do not come back: another one adopts their open impressions.

An impression is open in the ledger of the replica that served it, which credits it when its
window closes; a replica that restarts reopens its own from the store. One scaled away, or lost
for good, would leave them open forever, their rewards never written nor learnt. So every named
replica (`EQUILIBRA_REPLICA`) on Redis keeps a heartbeat, `{prefix}:alive:{name}`, which expires
after `EQUILIBRA_REPLICA_TTL` seconds and is renewed three times as often, and is listed in
`{prefix}:replicas`. When a listed replica's heartbeat has expired, the first live replica to
take the lock `{prefix}:adopting:{name}` adopts it (`Engine.adopt`): the impressions it left open
become the adopter's in the shared store (one transaction) and in its ledger, with the feedback
that reached the fleet meanwhile, and are credited once when their windows close.

A replica that comes back under its name first renews its heartbeat and waits for an adoption
of it in progress to finish (`announce`), then reopens what is still its own: nothing is opened
by two replicas. A replica alive but cut off from Redis for longer than the TTL may be adopted
while it still holds its impressions; those that close on both are credited twice (keep the TTL
well above Redis outages you expect).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from equilibra.service.redis_worker import RedisWorker

if TYPE_CHECKING:
    from equilibra.service.engine import Engine

log = logging.getLogger("equilibra.service")


class Adoption(RedisWorker):
    name = "adoption"

    def __init__(self, engine: Engine, url: str, prefix: str, ttl_s: float):
        super().__init__(url)
        assert engine.settings.replica is not None, "only named replicas adopt and are adopted"
        self.engine = engine
        self.me = engine.settings.replica
        self.prefix = prefix
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self.every_s = ttl_s / 3
        self.registry = f"{prefix}:replicas"
        self.adopted = 0  # impressions adopted by this replica
        # False while this replica starts: it only beats (a long start must not look like a
        # death), and adopts nobody before its own ledger is rebuilt.
        self.adopting = False

    def _alive(self, name: str) -> str:
        return f"{self.prefix}:alive:{name}"

    def _lock(self, name: str) -> str:
        return f"{self.prefix}:adopting:{name}"

    def beat(self) -> None:
        self.client.set(self._alive(self.me), f"{time.time():.3f}", px=self.ttl_ms)

    def announce(self, wait_s: float = 60.0) -> None:
        """Before this replica reopens its impressions: alive, not being adopted, listed."""
        try:
            self.beat()
            deadline = time.monotonic() + wait_s
            while self.client.exists(self._lock(self.me)) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.client.sadd(self.registry, self.me)
        except self._errors as exc:
            log.warning("adoption: Redis unreachable at start (%s): no heartbeat yet", exc)

    def reconnected(self) -> None:
        self.client.sadd(self.registry, self.me)

    def poll_once(self) -> int:
        """Renew the heartbeat; adopt the replicas whose heartbeat has expired. -> adopted."""
        self.beat()
        adopted = 0
        names = sorted(self.client.smembers(self.registry)) if self.adopting else []  # type: ignore[arg-type]
        for name in names:
            if name == self.me or self.client.exists(self._alive(name)):
                continue
            if not self.client.set(self._lock(name), self.me, nx=True, px=4 * self.ttl_ms):
                continue  # another replica is adopting it
            if self.client.exists(self._alive(name)):  # it came back meanwhile
                self.client.delete(self._lock(name))
                continue
            try:
                adopted += self.engine.adopt(name)
                self.client.srem(self.registry, name)
            finally:
                self.client.delete(self._lock(name))
        self.adopted += adopted
        self._stop.wait(self.every_s)
        return adopted
