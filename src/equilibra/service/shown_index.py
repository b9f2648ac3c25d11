"""Which impression last showed an item to a user, across replicas: attribution of events that
name no impression.

design.md's rule for such an event: the user's latest open impression that showed the item.
Each replica's ledger holds only the impressions it served, so with several replicas every one
holding such an impression would credit the same click. So the replica that serves an
impression records in `{prefix}:shown:{user}` (a hash: item → "impression_id timestamp", kept
for the latest impression by its time, expiring a while after the attribution window) which
items it showed; the replica that stores an event with no impression id looks the pair up and
attributes the event to that impression: in its own ledger if it holds it, else through the
feedback bus to the replica that does. One replica credits it, once.

Only event types that earn a reward are looked up (views earn none by default: most events cost
nothing). Redis unreachable: the event is attributed by the ledger's own rule, as on one server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

log = logging.getLogger("equilibra.service")

# Per item: keep the entry of the latest impression by its time (impressions are recorded out of
# time order when requests carry their own timestamps).
REMEMBER = """
local ts = tonumber(ARGV[3])
for i = 4, #ARGV do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if (not old) or tonumber(string.match(old, ' (.*)$')) <= ts then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[2] .. ' ' .. ARGV[3])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""


class ShownIndex:
    def __init__(self, url: str, prefix: str, window_s: float, timeout_s: float = 0.5):
        import redis

        self.client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._errors = (redis.RedisError,)  # whatever fails, attribution falls back
        self._remember = self.client.register_script(REMEMBER)
        self.prefix = prefix
        self.window_s = window_s
        # Wall seconds a user's entries live: event time and wall time may differ, so the
        # window itself is checked on event time at lookup.
        self.ttl_s = int(max(2 * window_s, 3600))
        self.failures = 0  # calls Redis did not answer (attributed by the ledger's rule)

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}:shown:{user_id}"

    def remember(
        self, user_id: str, items: Sequence[str], impression_id: str, timestamp: float
    ) -> None:
        """An impression showed these items to the user."""
        if not items or not math.isfinite(timestamp):
            return
        try:
            self._remember(
                keys=[self._key(user_id)],
                args=[self.ttl_s, impression_id, repr(float(timestamp)), *items],
            )
        except self._errors:
            self.failures += 1

    def lookup(self, events: Sequence[tuple[str, str, float]]) -> list[str | None]:
        """Per (user, item, event time): the impression it answers, or None (none within the
        window, or Redis unreachable)."""
        if not events:
            return []
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for user, item, _ in events:
                    pipe.hget(self._key(user), item)
                found = pipe.execute()
        except self._errors:
            self.failures += 1
            return [None] * len(events)
        answers: list[str | None] = []
        for (_, _, stamp), entry in zip(events, found, strict=True):
            if not entry:
                answers.append(None)
                continue
            impression_id, _, shown = str(entry).rpartition(" ")
            at = float(shown)
            answers.append(impression_id if at <= stamp <= at + self.window_s else None)
        return answers

    def close(self) -> None:
        self.client.close()
