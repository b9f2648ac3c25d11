"""A thread that reads a Redis stream batch by batch until stopped, riding out outages: the
shared loop of the event stream (stream.py) and the feedback bus (feedback_bus.py)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("equilibra.service")


class RedisWorker:
    """Subclasses set `name` and implement `poll_once` (one blocking read and its work);
    `reconnected` runs before the first poll and after each outage."""

    name = "redis worker"

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5.0)
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> int:
        raise NotImplementedError

    def reconnected(self) -> None:
        """What must be (re)made on the server before reading."""

    def drain(self) -> None:
        """What must still reach the server once the thread has stopped, before closing."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        down, fresh = False, True
        while not self._stop.is_set():
            try:
                if down or fresh:
                    self.reconnected()
                    fresh = False
                self.poll_once()
                if down:
                    log.warning("%s: Redis answers again", self.name)
                    down = False
            except self._errors as exc:
                if not down:
                    log.warning("%s: Redis unreachable (%s)", self.name, exc)
                    down = True
                self._stop.wait(1.0)
            except Exception:  # a bug must not end the thread silently: log it and go on
                log.exception("%s: a batch failed (it is read again)", self.name)
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.drain()
        self.client.close()
