"""Sufficient statistics the policies learn from, updated in O(1) (arms) or O(d²) (linear).

Both support exponential discounting for non-stationary worlds: with `discount` γ < 1 every
older observation's weight shrinks by γ per later update, so the statistics track a moving
target (an effective memory of about 1 / (1 - γ) updates). Arms decay lazily: each keeps the
step of its last update and is brought up to date when read.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from itertools import repeat

import numpy as np


def beta_posterior(
    prior: np.ndarray, rewards: np.ndarray, counts: np.ndarray, strength: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(α, β) of a reward rate whose prior mean is `prior`, worth `strength` impressions, after
    `rewards` in `counts` exposures (arrays broadcast: several strengths at once)."""
    alpha = strength * prior + rewards
    beta = strength * (1.0 - prior) + np.maximum(counts - rewards, 0.0)
    return alpha, beta


class ArmStats:
    """Discounted reward sums and pull counts per (segment, item)."""

    def __init__(self, discount: float = 1.0) -> None:
        if not 0 < discount <= 1:
            raise ValueError("discount: must lie in (0, 1]")
        self.discount = discount
        self.step = 0
        self._slots: dict[str, dict[str, int]] = {}  # segment -> item -> slot
        self._size = 0
        self._reward = np.zeros(64)
        self._count = np.zeros(64)
        self._stamp = np.zeros(64, dtype=np.int64)

    def __len__(self) -> int:
        return self._size

    def _slot(self, key: tuple[str, str]) -> int:
        items = self._slots.setdefault(key[0], {})
        slot = items.get(key[1])
        if slot is None:
            slot = items[key[1]] = self._size
            self._size += 1
            if slot >= len(self._reward):
                grow = len(self._reward)
                self._reward = np.concatenate([self._reward, np.zeros(grow)])
                self._count = np.concatenate([self._count, np.zeros(grow)])
                self._stamp = np.concatenate([self._stamp, np.zeros(grow, dtype=np.int64)])
        return slot

    def update(
        self, segment: str, item: object, reward: float, exposure: float = 1.0, tick: bool = True
    ) -> None:
        """`exposure`: the chance the item was looked at (position bias); 1 counts a full pull.
        `tick=False` records a second view of the same observation without advancing time."""
        self.step += int(tick)
        slot = self._slot((segment, str(item)))
        decay = self.discount ** (self.step - self._stamp[slot]) if self.discount < 1 else 1.0
        self._reward[slot] = self._reward[slot] * decay + reward
        self._count[slot] = self._count[slot] * decay + exposure
        self._stamp[slot] = self.step

    def scale(self, segment: str, factor: float) -> None:
        """Keep only `factor` of one segment's evidence (after a detected change)."""
        known = self._slots.get(segment)
        if known:
            slots = np.fromiter(known.values(), dtype=np.int64, count=len(known))
            self._reward[slots] *= factor
            self._count[slots] *= factor

    def lookup(self, segment: str, items: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
        """(reward sums, counts) for the items, decayed to now; zeros for unseen items."""
        known = self._slots.get(segment)
        if not known:
            return np.zeros(len(items)), np.zeros(len(items))
        get = known.get
        array = np.asarray(items)
        if array.dtype.kind == "O":  # Python objects: strings as they are (no new copies)
            keys = [k if type(k) is str else str(k) for k in array.tolist()]
        else:
            keys = (array if array.dtype.kind == "U" else array.astype(str)).tolist()
        slots = np.fromiter(map(get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        seen = slots >= 0
        # An unseen item's slot is -1: read (any) value, then masked to 0.
        rewards = np.where(seen, self._reward[slots], 0.0)
        counts = np.where(seen, self._count[slots], 0.0)
        if self.discount < 1:
            decay = self.discount ** (self.step - self._stamp[slots])
            rewards *= decay
            counts *= decay
        return rewards, counts

    def state_dict(self) -> dict[str, object]:
        """Per segment: its items, and their statistics as base64 of little-endian binary.
        Saved every few seconds while serving, under the engine's lock: a list per arm and a
        float's repr each (the first format) took 30-65 ms for 33 k arms, a stall of every
        request every snapshot; this takes a few (lists of strings, one buffer per array)."""
        segments: dict[str, dict[str, object]] = {}
        for segment, items in self._slots.items():
            slots = np.fromiter(items.values(), dtype=np.int64, count=len(items))
            segments[segment] = {
                "items": list(items),
                "reward": _pack(self._reward[slots], "<f8"),
                "count": _pack(self._count[slots], "<f8"),
                "stamp": _pack(self._stamp[slots], "<i8"),
            }
        return {"discount": self.discount, "step": self.step, "segments": segments}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> ArmStats:
        stats = cls(float(state["discount"]))  # type: ignore[arg-type]
        stats.step = int(state["step"])  # type: ignore[arg-type]
        if "segments" not in state:  # the first format: one [segment, item] per arm
            for segment, item in state["keys"]:  # type: ignore[attr-defined]
                stats._slot((segment, item))
            n = stats._size
            stats._reward[:n] = state["reward"]
            stats._count[:n] = state["count"]
            stats._stamp[:n] = state["stamp"]
            return stats
        for segment, saved in dict(state["segments"]).items():  # type: ignore[call-overload]
            slots = np.fromiter(
                (stats._slot((segment, item)) for item in saved["items"]), dtype=np.int64
            )
            stats._reward[slots] = _unpack(saved["reward"], "<f8", len(slots))
            stats._count[slots] = _unpack(saved["count"], "<f8", len(slots))
            stats._stamp[slots] = _unpack(saved["stamp"], "<i8", len(slots))
        return stats


def _pack(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def _unpack(text: str, dtype: str, size: int) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(text), dtype=dtype)
    if len(values) != size:
        raise ValueError(f"arm statistics: {len(values)} values for {size} items")
    return values


class LinearStats:
    """Ridge regression kept as (A⁻¹, b) and updated by Sherman–Morrison: O(d²) per update."""

    def __init__(self, dim: int, ridge: float = 1.0, discount: float = 1.0) -> None:
        if dim <= 0:
            raise ValueError("dim: must be positive")
        if ridge <= 0:
            raise ValueError("ridge: must be positive")
        if not 0 < discount <= 1:
            raise ValueError("discount: must lie in (0, 1]")
        self.dim = dim
        self.ridge = ridge
        self.discount = discount
        self.a_inv = np.eye(dim) / ridge
        self.b = np.zeros(dim)
        self.updates = 0
        self._ridge_left = ridge

    def update(self, x: np.ndarray, reward: float, weight: float = 1.0) -> None:
        """Add one observation with importance `weight`: A += w·xxᵀ, b += w·r·x."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise ValueError(f"features: expected {self.dim} values, got shape {x.shape}")
        if self.discount < 1:
            # A ← γA + xxᵀ: scaling A⁻¹ by 1/γ is exact for the decay.
            self.a_inv /= self.discount
            self.b *= self.discount
            self._ridge_left *= self.discount
        a_inv_x = self.a_inv @ x
        self.a_inv -= weight * np.outer(a_inv_x, a_inv_x) / (1.0 + weight * (x @ a_inv_x))
        self.b += weight * reward * x
        self.updates += 1
        if self.discount < 1 and self.updates % 256 == 0:
            # The decay also shrinks the ridge; put it back now and then (O(d³) / 256 updates)
            # so predictions for directions with no recent data stay bounded.
            a = np.linalg.inv(self.a_inv) + (self.ridge - self._ridge_left) * np.eye(self.dim)
            self.a_inv = np.linalg.inv(a)
            self._ridge_left = self.ridge

    @property
    def theta(self) -> np.ndarray:
        return self.a_inv @ self.b

    def width(self, features: np.ndarray) -> np.ndarray:
        """sqrt(xᵀ A⁻¹ x) for each row: the confidence width of a prediction."""
        return np.sqrt(np.einsum("nd,de,ne->n", features, self.a_inv, features).clip(min=0))

    def state_dict(self) -> dict[str, object]:
        return {
            "dim": self.dim,
            "ridge": self.ridge,
            "discount": self.discount,
            "a_inv": self.a_inv.tolist(),
            "b": self.b.tolist(),
            "updates": self.updates,
            "ridge_left": self._ridge_left,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> LinearStats:
        stats = cls(int(state["dim"]), float(state["ridge"]), float(state["discount"]))  # type: ignore[arg-type]
        stats.a_inv = np.asarray(state["a_inv"], dtype=float)
        stats.b = np.asarray(state["b"], dtype=float)
        stats.updates = int(state["updates"])  # type: ignore[arg-type]
        stats._ridge_left = float(state.get("ridge_left", stats.ridge))  # type: ignore[arg-type]
        return stats
