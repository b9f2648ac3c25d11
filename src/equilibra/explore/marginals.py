"""Marginal slate propensities: P(item i at position j | policy state), exact or Monte Carlo.

Two slate constructions cover every policy:

- *slot streams* (greedy, ε-greedy, UCB, LinUCB, Gorse-style injection): each slot picks a
  stream at random — the exploit stream fills slots with a fixed ranking in order, each explore
  stream draws uniformly without replacement from its own pool. The marginals have a closed
  form (a binomial over how many earlier slots exploited) when every pool holds at least K
  items, and an exact dynamic programme over the streams' counts when one does not.
- *random scores* (softmax / Plackett–Luce, Thompson sampling, linear TS): the slate is the
  top K of one draw of random scores. No closed form for positions past the first, so the
  marginals are a Monte-Carlo estimate over many draws, with its standard error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import comb


@dataclass(frozen=True)
class Marginals:
    """(n_candidates, k) matrix; `error` is the largest standard error (0 when exact)."""

    matrix: np.ndarray
    error: float = 0.0


def stream_marginals(
    k: int, probs: Sequence[float], pool_sizes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Slot-stream probabilities.

    `probs[0]` is the exploit stream's share, `probs[s]` pool s's (they sum to 1), `pool_sizes[s-1]`
    the size of pool s. A pool that has run dry stops being chosen and its share goes to the
    exploit stream (which never runs dry: it holds at least K items).

    Returns `exploit[m, j]` = P(the m-th item of the exploit ranking sits at position j) and
    `pool[s, j]` = P(position j draws from pool s); each item of pool s is then at position j
    with probability `pool[s, j] / pool_sizes[s]` (uniform draws without replacement).
    """
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 1 or len(probs) != len(pool_sizes) + 1:
        raise ValueError("probs: one share for the exploit stream and one per pool")
    if np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-9:
        raise ValueError("probs: shares must be non-negative and sum to 1")
    n_pools = len(pool_sizes)
    if all(size >= k for size in pool_sizes):
        return _independent_streams(k, probs, n_pools)
    return _streams_dp(k, probs, list(pool_sizes))


def _independent_streams(k: int, probs: np.ndarray, n_pools: int) -> tuple[np.ndarray, np.ndarray]:
    exploit = _exploit_binomial(k, float(probs[0]))
    pool = np.tile(probs[1:, None], (1, k)) if n_pools else np.zeros((0, k))
    return exploit, pool


@lru_cache(maxsize=256)
def _exploit_binomial(k: int, p: float) -> np.ndarray:
    # Position j exploits, and exactly m of the j earlier slots exploited too.
    j = np.arange(k)[None, :]
    m = np.arange(k)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        exploit = p * comb(j, m) * p**m * (1 - p) ** np.where(m <= j, j - m, 0)
    exploit = np.where(m <= j, exploit, 0.0)
    exploit.setflags(write=False)
    return exploit


def _streams_dp(k: int, probs: np.ndarray, pool_sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    n_pools = len(pool_sizes)
    exploit = np.zeros((k, k))
    pool = np.zeros((n_pools, k))
    # state: draws taken from each pool so far -> probability
    states: dict[tuple[int, ...], float] = {(0,) * n_pools: 1.0}
    for j in range(k):
        following: dict[tuple[int, ...], float] = {}
        for counts, mass in states.items():
            open_pools = [s for s in range(n_pools) if counts[s] < pool_sizes[s]]
            shares = {s: probs[s + 1] for s in open_pools}
            exploit_share = 1.0 - sum(shares.values())
            m = j - sum(counts)
            exploit[m, j] += mass * exploit_share
            following[counts] = following.get(counts, 0.0) + mass * exploit_share
            for s, share in shares.items():
                if share == 0:
                    continue
                pool[s, j] += mass * share
                bumped = tuple(c + (1 if t == s else 0) for t, c in enumerate(counts))
                following[bumped] = following.get(bumped, 0.0) + mass * share
        states = following
    return exploit, pool


def draw_streams(
    k: int, probs: np.ndarray, pool_sizes: Sequence[int], rng: np.random.Generator
) -> np.ndarray:
    """One draw of the stream for each slot (0 = exploit), with dry pools falling back to 0."""
    cumulative = np.cumsum(probs)
    streams = np.minimum(
        np.searchsorted(cumulative, rng.random(k), side="right"), len(probs) - 1
    ).astype(np.int64)
    if all(size >= k for size in pool_sizes):
        return streams
    taken = [0] * len(pool_sizes)
    for j, s in enumerate(streams):
        if s > 0 and taken[s - 1] >= pool_sizes[s - 1]:
            streams[j] = 0
        elif s > 0:
            taken[s - 1] += 1
    return streams


def monte_carlo_marginals(
    draw_scores: Callable[[int], np.ndarray], n_items: int, k: int, n_samples: int
) -> Marginals:
    """Frequencies of each item at each position over `n_samples` draws of random scores.

    `draw_scores(r)` returns an (r, n_items) array; the slate of a draw is its top k.
    """
    scores = draw_scores(n_samples)
    top = top_k_rows(scores, k)
    flat = top * k + np.arange(k)[None, :]
    counts = np.bincount(flat.ravel(), minlength=n_items * k).reshape(n_items, k)
    matrix = counts / n_samples
    error = float(np.sqrt((matrix * (1 - matrix)).max() / n_samples))
    return Marginals(matrix, error)


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k largest values, best first."""
    n = scores.shape[1]
    if k >= n:
        return np.argsort(-scores, axis=1, kind="stable")
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
