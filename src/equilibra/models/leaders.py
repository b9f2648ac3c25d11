"""The best items of a model's fixed background vector, found once per array and reused.

A background (a popularity tie-breaker over the whole catalogue) is the same array on every call,
so its maximum and its best items are facts about the array: on a 235 k-item shop, finding them
again for each one-user request cost more than the rest of the model's answer.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

# Leaders are kept at least this many deep, so k + exclusions rarely needs a new pass.
MIN_DEPTH = 512


class _Facts:
    __slots__ = ("maximum", "order")

    def __init__(self, maximum: float):
        self.maximum = maximum
        self.order = np.empty(0, dtype=np.int64)


_facts: dict[int, tuple[weakref.ref[np.ndarray], _Facts]] = {}
_lock = threading.Lock()


def _facts_of(vector: np.ndarray) -> _Facts:
    key = id(vector)
    with _lock:
        entry = _facts.get(key)
        if entry is not None and entry[0]() is vector:
            return entry[1]

        def forget(ref: weakref.ref[np.ndarray], key: int = key) -> None:
            with _lock:
                if _facts.get(key, (None,))[0] is ref:
                    del _facts[key]

        facts = _Facts(float(vector.max()) if len(vector) else 0.0)
        _facts[key] = (weakref.ref(vector, forget), facts)
        return facts


def maximum(vector: np.ndarray) -> float:
    return _facts_of(vector).maximum


def leaders(vector: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` largest entries, best first (ties in index order)."""
    n = min(n, len(vector))
    facts = _facts_of(vector)
    if len(facts.order) < n:
        depth = min(max(n, 2 * len(facts.order), MIN_DEPTH), len(vector))
        part = np.argpartition(-vector, depth - 1)[:depth] if depth < len(vector) else None
        part = np.arange(len(vector)) if part is None else np.sort(part)
        facts.order = part[np.argsort(-vector[part], kind="stable")]
    return facts.order[:n]
