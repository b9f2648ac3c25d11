"""The impression writer: in order, batched, flushed on demand, loud when it cannot write."""

from __future__ import annotations

import threading

import pandas as pd

from equilibra.service.writer import ImpressionWriter


class Recording:
    def __init__(self, fail_times: int = 0):
        self.calls: list[tuple[str, int]] = []
        self.fail_times = fail_times
        self.lock = threading.Lock()

    def append_impression_rows(self, rows):
        self._maybe_fail()
        self.calls.append(("rows", len(rows)))
        return len(rows)

    def write_rewards(self, rewards):
        self._maybe_fail()
        self.calls.append(("rewards", len(rewards)))
        return len(rewards)

    def _maybe_fail(self):
        with self.lock:
            if self.fail_times:
                self.fail_times -= 1
                raise RuntimeError("database is locked")


def rewards(n: int) -> pd.DataFrame:
    return pd.DataFrame({"impression_id": ["x"] * n, "position": range(1, n + 1), "reward": 0.0})


def test_rows_and_rewards_are_written_in_order_and_batched() -> None:
    store = Recording()
    writer = ImpressionWriter(store, interval=0.5)  # type: ignore[arg-type]
    writer.rows([{"a": 1}, {"a": 2}])
    writer.rows([{"a": 3}])
    writer.rewards(rewards(2))
    writer.rows([{"a": 4}])
    assert writer.flush(timeout=5)
    # Consecutive rows go as one insert; a reward never overtakes the rows queued before it.
    assert store.calls == [("rows", 3), ("rewards", 2), ("rows", 1)]
    assert writer.flush(timeout=5) and len(store.calls) == 3  # nothing left to write twice
    writer.close()


def test_a_failing_store_is_retried_then_reported() -> None:
    store = Recording(fail_times=2)
    writer = ImpressionWriter(store, interval=0.01, retries=5)  # type: ignore[arg-type]
    writer.rows([{"a": 1}])
    assert writer.flush(timeout=5)
    assert store.calls == [("rows", 1)] and writer.failed == 0
    store.fail_times = 10
    writer.rows([{"a": 2}])
    assert writer.flush(timeout=5)
    assert writer.failed == 1  # given up on, counted, logged: not silently gone
    writer.close()
