"""The online state in Redis, shared by every `equilibra serve` replica (`EQUILIBRA_REDIS`).

The same methods and answers as `InProcessState` (tests/test_online_state.py runs one suite on
both). Each event is one Lua script, so a replica's update is atomic and the others see it on
their next read; a request reads with a few pipelined round trips.

Keys, under a prefix (default `equilibra`):

    {p}:meta          hash   clock, events, users
    {p}:uh:{user}     list   the user's latest events, "item␟type␟timestamp", oldest first
    {p}:us:{user}     hash   session_start, last_seen, events
    {p}:uc:{user}     set    items the user converted on
    {p}:ic            hash   item -> event count
    {p}:it            zset   item -> trend key, log(trend) + λ·t (see `ItemCounters`)
    {p}:if            zset   item -> first seen
    {p}:cv:{item}     hash   co-visited item -> weight (the strongest `covisit_per_item` kept)

The script names co-visitation keys it builds itself, so this layout needs one Redis (or a
cluster slot for the prefix), not a sharded cluster.

When Redis cannot be reached, reads answer as for an unknown user and an empty shop (the
service falls back to the model's lists), writes are counted as lost, and one warning is logged
per outage; after a failure Redis is not asked again for `retry_after_s`.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np

from equilibra.domain import CONVERSION_TYPES
from equilibra.errors import EquilibraError
from equilibra.online.state import EVENT_WEIGHT, ItemState, OnlineConfig, Seen, UserState

log = logging.getLogger("equilibra.online")
LEARN_CHUNK = 1_000  # events per pipelined round trip: well inside the socket timeout
SEP = "\x1f"  # between the fields of a history entry: ids may hold anything printable
T = TypeVar("T")

# KEYS: meta, uh, us, uc, ic, it, if. ARGV: item, type, timestamp, weight, history length,
# session gap, co-visit window, co-visits kept per item, trend rate, conversion (1/0), prefix.
LEARN = """
local meta, uh, us, uc, ic, it, itf = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local item, kind = ARGV[1], ARGV[2]
local ts, w = tonumber(ARGV[3]), tonumber(ARGV[4])
local keep, gap, window = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local per_item, rate, prefix = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[11]
local function f(x) return string.format('%.17g', x) end

redis.call('HINCRBY', meta, 'events', 1)
local clock = redis.call('HGET', meta, 'clock')
if (not clock) or ts > tonumber(clock) then redis.call('HSET', meta, 'clock', f(ts)) end

local saved = redis.call('HMGET', us, 'session_start', 'last_seen')
local start, last = ts, -math.huge
if saved[1] then
  start, last = tonumber(saved[1]), tonumber(saved[2])
else
  redis.call('HINCRBY', meta, 'users', 1)
end
if ts - last > gap then start = ts end

-- The session's distinct items before this event, newest first (out-of-order ones skipped).
local previous, history = {}, redis.call('LRANGE', uh, 0, -1)
for i = #history, 1, -1 do
  local entry = history[i]
  local a = string.find(entry, '\\31', 1, true)
  local b = string.find(entry, '\\31', a + 1, true)
  if tonumber(string.sub(entry, b + 1)) >= start then
    local other, known = string.sub(entry, 1, a - 1), false
    for _, p in ipairs(previous) do if p == other then known = true break end end
    if not known then
      previous[#previous + 1] = other
      if #previous == window then break end
    end
  end
end

redis.call('RPUSH', uh, item .. '\\31' .. kind .. '\\31' .. f(ts))
redis.call('LTRIM', uh, -keep, -1)
redis.call('HSET', us, 'session_start', f(start), 'last_seen', f(math.max(last, ts)))
redis.call('HINCRBY', us, 'events', 1)
if ARGV[10] == '1' then redis.call('SADD', uc, item) end

redis.call('HINCRBY', ic, item, 1)
local key, old = math.log(w) + rate * ts, redis.call('ZSCORE', it, item)
if old then
  old = tonumber(old)
  local high = math.max(old, key)
  key = high + math.log(math.exp(old - high) + math.exp(key - high))
end
redis.call('ZADD', it, f(key), item)
redis.call('ZADD', itf, 'LT', f(ts), item)  -- LT still adds a new item

local function link(source, target, weight)
  local row = prefix .. ':cv:' .. source
  redis.call('HINCRBYFLOAT', row, target, f(weight))
  if redis.call('HLEN', row) > 2 * per_item then
    local all, pairs_ = redis.call('HGETALL', row), {}
    for j = 1, #all, 2 do pairs_[#pairs_ + 1] = {all[j], tonumber(all[j + 1])} end
    table.sort(pairs_, function(x, y) return x[2] > y[2] end)
    for j = per_item + 1, #pairs_ do redis.call('HDEL', row, pairs_[j][1]) end
  end
end
for distance, other in ipairs(previous) do
  if other ~= item then
    link(other, item, w / distance)
    link(item, other, 0.5 * w / distance)
  end
end
return 1
"""

# KEYS: meta, uh, us, uc. -> 1 if the user was known.
FORGET = """
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HINCRBY', KEYS[1], 'users', -1) end
return redis.call('DEL', KEYS[2], KEYS[3], KEYS[4]) > 0 and 1 or 0
"""


def _float(value: Any, default: float) -> float:
    return default if value is None else float(value)


class RedisState:
    """Online state in Redis (`url` as redis-py takes it: redis://host:port/db)."""

    def __init__(
        self,
        url: str,
        config: OnlineConfig | None = None,
        prefix: str = "equilibra",
        timeout_s: float = 0.5,
        retry_after_s: float = 1.0,
    ):
        try:
            import redis
        except ImportError:  # pragma: no cover - the extra is part of dev
            raise EquilibraError(
                "EQUILIBRA_REDIS needs redis-py: pip install 'equilibra[redis]'"
            ) from None
        self.config = config or OnlineConfig()
        self.prefix = prefix
        self.rate = math.log(2.0) / self.config.trend_half_life_s
        self.retry_after_s = retry_after_s
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        try:
            self.client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise EquilibraError(f"EQUILIBRA_REDIS: {exc}") from None
        self._learn = self.client.register_script(LEARN)
        self._forget = self.client.register_script(FORGET)
        self._down_since: float | None = None  # monotonic time of the outage's first failure
        self._failed_at = 0.0  # monotonic time of the latest failure
        self._guard = threading.Lock()
        self.lost_writes = 0  # events that reached the store but not this state (Redis down)

    # --- keys -----------------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _user_keys(self, user_id: str) -> list[str]:
        return [self._k("meta"), *(self._k(kind, user_id) for kind in ("uh", "us", "uc"))]

    # --- outages --------------------------------------------------------------------------------
    def _call(self, action: Callable[[], T], fallback: T, write: bool = False) -> T:
        """Run `action` against Redis; during an outage answer `fallback` at once."""
        if self._down_since is not None and time.monotonic() < self._failed_at + self.retry_after_s:
            if write:
                self.lost_writes += 1
            return fallback
        try:
            result = action()
        except self._errors as exc:
            with self._guard:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning(
                        "Redis unreachable (%s): serving without the shared online state"
                        " (the model's lists) until it answers again",
                        exc,
                    )
                self._failed_at = time.monotonic()
            if write:
                self.lost_writes += 1
            return fallback
        if self._down_since is not None:
            with self._guard:
                if self._down_since is not None:
                    log.warning(
                        "Redis answers again after %.1f s; %d events were not learnt meanwhile",
                        time.monotonic() - self._down_since,
                        self.lost_writes,
                    )
                    self._down_since = None
        return result

    @property
    def degraded(self) -> bool:
        """True during an outage (from its first failure until Redis answers again)."""
        return self._down_since is not None

    @property
    def available(self) -> bool:
        return self._call(lambda: bool(self.client.ping()), False)

    # --- learning -------------------------------------------------------------------------------
    def _learn_args(self, user_id: str, item_id: str, event_type: str, timestamp: float):
        c = self.config
        keys = [
            *self._user_keys(user_id),
            self._k("ic"),
            self._k("it"),
            self._k("if"),
        ]
        args = [
            item_id,
            event_type,
            repr(float(timestamp)),
            repr(EVENT_WEIGHT.get(event_type, 1.0)),
            c.history,
            repr(c.session_gap_s),
            c.covisit_window,
            c.covisit_per_item,
            repr(self.rate),
            "1" if event_type in CONVERSION_TYPES else "0",
            self.prefix,
        ]
        return keys, args

    def learn_one(self, user_id: str, item_id: str, event_type: str, timestamp: float) -> None:
        keys, args = self._learn_args(user_id, item_id, event_type, timestamp)
        self._call(lambda: self._learn(keys=keys, args=args), None, write=True)

    def learn_many(self, events: Iterable[tuple[str, str, str, float]]) -> None:
        """Events in order, pipelined a chunk at a time (each still its own atomic script)."""
        rows = list(events)
        for start in range(0, len(rows), LEARN_CHUNK):
            chunk = rows[start : start + LEARN_CHUNK]

            def run(chunk: list[tuple[str, str, str, float]] = chunk) -> None:
                pipe = self.client.pipeline(transaction=False)
                for user, item, kind, stamp in chunk:
                    keys, args = self._learn_args(user, item, kind, stamp)
                    self._learn(keys=keys, args=args, client=pipe)
                pipe.execute()

            before = self.lost_writes
            self._call(run, None, write=True)
            if self.lost_writes > before:  # the whole chunk, not one call
                self.lost_writes += len(chunk) - 1

    def forget_user(self, user_id: str) -> bool:
        return bool(self._call(lambda: self._forget(keys=self._user_keys(user_id)), 0, write=True))

    def claim_seed(self) -> bool:
        """True for the first replica to start on this Redis: it replays recent events in."""
        return bool(self._call(lambda: self.client.hsetnx(self._k("meta"), "seeded", 1), False))

    # --- reading --------------------------------------------------------------------------------
    @property
    def clock(self) -> float:
        value = self._call(lambda: self.client.hget(self._k("meta"), "clock"), None)
        return _float(value, float("-inf"))

    @property
    def events(self) -> int:
        value = self._call(lambda: self.client.hget(self._k("meta"), "events"), None)
        return int(_float(value, 0))

    def user(self, user_id: str) -> UserState | None:
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            _, history, session, converted = self._user_keys(user_id)
            pipe.lrange(history, 0, -1)
            pipe.hmget(session, "session_start", "last_seen", "events")
            pipe.smembers(converted)
            return pipe.execute()

        answer = self._call(run, None)
        if answer is None:
            return None
        entries, (start, last, events), converted = answer
        if last is None:
            return None
        history: deque[Seen] = deque(maxlen=self.config.history)
        for entry in entries:
            item, kind, stamp = entry.rsplit(SEP, 2)
            history.append(Seen(item, kind, float(stamp)))
        return UserState(history, float(start), float(last), set(converted), int(events))

    def known_users(self) -> int:
        value = self._call(lambda: self.client.hget(self._k("meta"), "users"), None)
        return int(_float(value, 0))

    def neighbours(self, items: Iterable[str], n: int) -> list[tuple[str, float]]:
        items = list(items)
        if not items:
            return []

        def run() -> list[dict[str, str]]:
            pipe = self.client.pipeline(transaction=False)
            for item in items:
                pipe.hgetall(self._k("cv", item))
            return pipe.execute()

        scores: dict[str, float] = {}
        for rank, row in enumerate(self._call(run, [])):
            weight = 1.0 / (1 + rank) ** 2  # the last item says most
            for other, value in row.items():
                scores[other] = scores.get(other, 0.0) + weight * float(value)
        return heapq.nlargest(n, scores.items(), key=lambda kv: kv[1])

    def _with_clock(self, now: float | None, read: Callable[[Any], None]) -> tuple[float, Any]:
        """(the time to answer at, `read`'s answer) in one round trip."""

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(self._k("meta"), "clock")
            read(pipe)
            return pipe.execute()

        answer = self._call(run, None)
        if answer is None:
            return float("-inf"), None
        return (_float(answer[0], float("-inf")) if now is None else now), answer[1]

    def trending(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        at, top = self._with_clock(
            now, lambda pipe: pipe.zrevrange(self._k("it"), 0, n - 1, withscores=True)
        )
        if not top:
            return []
        return [(item, math.exp(key - self.rate * at)) for item, key in top]

    def newest(self, n: int, now: float | None = None) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        at, latest = self._with_clock(
            now,
            lambda pipe: pipe.zrevrange(self._k("if"), 0, n - 1, withscores=True),
        )
        if not latest:
            return []
        limit = self.config.new_item_age_s
        return [(item, at - seen) for item, seen in latest if at - seen <= limit]

    def item(self, item_id: str) -> ItemState | None:
        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(self._k("meta"), "clock")
            pipe.hget(self._k("ic"), item_id)
            pipe.zscore(self._k("it"), item_id)
            pipe.zscore(self._k("if"), item_id)
            return pipe.execute()

        answer = self._call(run, None)
        if answer is None or answer[1] is None:
            return None
        clock, count, key, first = answer
        trend = math.exp(float(key) - self.rate * _float(clock, float("-inf")))
        return ItemState(float(count), trend, float(first))

    def item_stats(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(`item_counts`, `first_seen`) of the items in one round trip."""
        if not items:
            return np.zeros(0), np.zeros(0)

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self._k("ic"), items)
            pipe.zmscore(self._k("if"), items)
            return pipe.execute()

        answer = self._call(run, None)
        if answer is None:
            return np.zeros(len(items)), np.full(len(items), np.inf)
        counts, first = answer
        return (
            np.array([0.0 if c is None else float(c) for c in counts]),
            np.array([np.inf if f is None else float(f) for f in first]),
        )

    def n_items(self) -> int:
        return int(self._call(lambda: self.client.zcard(self._k("if")), 0))

    def memory_bytes(self) -> int:
        """What Redis reports it uses in all (for the memory benchmark)."""
        return int(self._call(lambda: self.client.info("memory")["used_memory"], 0))

    def close(self) -> None:
        self.client.close()
