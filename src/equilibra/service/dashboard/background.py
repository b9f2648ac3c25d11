"""Results too slow to compute while a page waits (the behaviour report, off-policy estimates):
computed in a thread, kept for a while, recomputed in the background when stale. A page gets
the last result at once, or None while the first one is being made."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("equilibra.service")


class Refreshing(Generic[T]):
    def __init__(self, name: str, compute: Callable[[], T], max_age_s: float):
        self.name = name
        self.compute = compute
        self.max_age_s = max_age_s
        self.value: T | None = None
        self.error: str | None = None
        self.computed_at: float | None = None  # wall time
        self.took_s: float | None = None
        self._busy = threading.Lock()

    def get(self, wait_s: float = 0.0) -> T | None:
        """The last result (starting a refresh if it is stale); waits up to `wait_s` for the
        first one."""
        stale = self.computed_at is None or time.time() - self.computed_at > self.max_age_s
        if stale:
            self.refresh()
        if self.value is None and wait_s > 0:
            deadline = time.monotonic() + wait_s
            while self.value is None and self.error is None and time.monotonic() < deadline:
                time.sleep(0.02)
        return self.value

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def refresh(self) -> bool:
        """Start computing in a thread unless that is under way already."""
        if not self._busy.acquire(blocking=False):
            return False
        threading.Thread(target=self._run, name=f"dashboard-{self.name}", daemon=True).start()
        return True

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.value = self.compute()
            self.error = None
        except Exception as exc:  # shown on the page; serving goes on
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("dashboard %s failed: %s", self.name, self.error)
        finally:
            self.computed_at = time.time()
            self.took_s = time.perf_counter() - started
            self._busy.release()
