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
from scipy.special import comb, ndtr

from equilibra.explore.scores import ScoreDistribution, interval_mass


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
    return _cached_streams_dp(k, tuple(probs.tolist()), tuple(int(s) for s in pool_sizes))


@lru_cache(maxsize=1024)
def _cached_streams_dp(
    k: int, probs: tuple[float, ...], pool_sizes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    # A policy whose shares move slowly (the balance controller's, on a grid of 0.001) asks
    # for the same streams request after request.
    exploit, pool = _streams_dp(k, np.asarray(probs), list(pool_sizes))
    exploit.setflags(write=False)
    pool.setflags(write=False)
    return exploit, pool


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
    """Exact slot-stream marginals when a pool can run dry: the probability of every vector of
    draws taken from each pool so far, advanced one position at a time (vectorised over the
    grid of counts; a dry pool's share goes to the exploit stream)."""
    n_pools = len(pool_sizes)
    exploit = np.zeros((k, k))
    pool = np.zeros((n_pools, k))
    # At most k - 1 draws precede the last position, so counts up to min(size, k) suffice.
    shape = tuple(min(size, k) + 1 for size in pool_sizes)
    counts = np.indices(shape)
    drawn = counts.sum(axis=0)
    shares = [probs[s + 1] * (counts[s] < pool_sizes[s]) for s in range(n_pools)]
    exploit_share = 1.0 - sum(shares, np.zeros(shape))
    mass = np.zeros(shape)
    mass[(0,) * n_pools] = 1.0
    for j in range(k):
        stay = mass * exploit_share
        live = mass > 0
        np.add.at(exploit[:, j], (j - drawn)[live], stay[live])
        following = stay
        for s in range(n_pools):
            moving = mass * shares[s]
            pool[s, j] = moving.sum()
            if shape[s] > 1:
                source = [slice(None)] * n_pools
                target = [slice(None)] * n_pools
                source[s], target[s] = slice(0, shape[s] - 1), slice(1, shape[s])
                following[tuple(target)] += moving[tuple(source)]
        mass = following
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


def _order_statistics(scores: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Each draw's k + 1 best scores, best first, padded with -inf where k = n.

    Only values are needed (an item's place follows from its own score), and a value partition
    costs a quarter of an index partition."""
    n_samples, n = scores.shape
    depth = min(k + 1, n)
    values = np.sort(np.partition(scores, n - depth, axis=1)[:, n - depth :], axis=1)[:, ::-1]
    if depth <= k:  # k = n: nobody is below the last place
        values = np.concatenate([values, np.full((n_samples, 1), -np.inf)], axis=1)
    return values, depth


def _places(scores: np.ndarray, values: np.ndarray, rows: np.ndarray, depth: int) -> np.ndarray:
    """(S, T): where each requested item sits in each draw's top (depth if it is not there):
    the number of top scores above its own (scores are continuous, so ties have probability 0)."""
    own = scores[:, rows]
    return (values[:, None, :depth] > own[:, :, None]).sum(axis=2)


def _mean_and_error(per_draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the first axis and its standard error (1 where one draw says nothing of it)."""
    n = per_draw.shape[0]
    mean = per_draw.mean(axis=0)
    if n < 2:
        return mean, np.ones_like(mean)
    return mean, per_draw.std(axis=0, ddof=1) / np.sqrt(n)


def conditional_marginals(
    scores: np.ndarray,
    dist: ScoreDistribution,
    k: int,
    rows: np.ndarray | None = None,
) -> Marginals:
    """Rao–Blackwellised Monte Carlo for independent random scores.

    `scores` is (S, n) draws from `dist`. For item i and each draw, given everyone else's
    scores the chance that i lands at position j is exact: P(o_j < score_i <= o_{j-1}), with o_j
    the j-th largest score among the others (o_{-1} = +inf). Averaging that over draws
    estimates the marginal without bias and with far less variance than counting how often i
    came j-th. `rows` restricts the answer to some candidates (one matrix row per entry).
    """
    n_samples, n = scores.shape
    k = min(k, n)
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    values, depth = _order_statistics(scores, k)
    place = _places(scores, values, rows, depth)  # (S, T)
    j = np.arange(k)[None, :, None]
    # Others' j-th largest: skip the item's own place.  (S, k, T)
    shifted = j + (j >= place[:, None, :])
    others = values[np.arange(n_samples)[:, None, None], shifted]
    upper = np.concatenate([np.full((n_samples, 1, len(rows)), np.inf), others[:, :-1]], axis=1)
    per_draw = interval_mass(dist, rows, others, upper)
    mean, error = _mean_and_error(per_draw)
    return Marginals(mean.T, float(error.max()) if error.size else 0.0)


def conditional_propensities(
    scores: np.ndarray,
    dist: ScoreDistribution,
    rows: np.ndarray,
    positions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`conditional_marginals` for one (item, position) pair each — what a served slate logs —
    at two distribution evaluations per pair and draw. -> (propensities, standard errors).

    When draw 0 is the one the slate was taken from, its term is positive for every shown item
    (the item's own score lies between its neighbours'), so no shown item logs 0, and the
    inverse of the estimate is an unbiased importance weight: with X_s the terms,
    E[1{shown} · (S+1) / Σ X_s] = (S+1) · E[X_0 / Σ X_s] = 1 by exchangeability."""
    rows = np.asarray(rows, dtype=np.int64)
    r = np.asarray(positions, dtype=np.int64)
    values, _ = _order_statistics(scores, int(r.max()) + 1)  # (S, ≥ k + 1), best first
    own = scores[:, rows]  # (S, T)
    # The others' r-th best is the draw's r-th best unless the item itself is at or above it,
    # in which case everyone from there moves up one: the (r + 1)-th.
    at_r, after_r = values[:, r], values[:, r + 1]
    lower = np.where(at_r > own, at_r, after_r)
    before_r = values[:, np.maximum(r - 1, 0)]
    upper = np.where(r > 0, np.where(before_r > own, before_r, at_r), np.inf)
    per_draw = interval_mass(dist, rows, lower, upper)
    return _mean_and_error(per_draw)


def linear_conditional_marginals(
    scores: np.ndarray,
    mean: np.ndarray,
    features: np.ndarray,
    covariance: np.ndarray,
    rows: np.ndarray,
    k: int,
    groups: np.ndarray | None = None,
    positions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rao–Blackwellised Monte Carlo for correlated Gaussian scores s = mean + features·δ,
    δ ~ N(0, covariance) (linear Thompson sampling).

    Returns (T, k) propensities of `rows` at every position with their standard errors, or,
    given `positions` (one 0-based position per row, what a served slate logs), (T,) arrays.

    For item i write δ = δ⊥ + (Σx_i / σ_i)·z with σ_i² = x_iᵀΣx_i and z ~ N(0, 1) independent of
    δ⊥. Given δ⊥ every score is a line in z (s_l = a_l + b_l·z, s_i = mean_i + σ_i·z), so i's
    place only changes where one of those lines crosses i's: sorting the crossings gives,
    exactly, the probability of each place given the draw. `groups` labels candidates with
    identical scores in every draw (equal mean and features), which the slate orders at random
    among themselves: a group of g fills g consecutive places, each with chance 1/g.
    """
    n_samples, n = scores.shape
    rows = np.asarray(rows, dtype=np.int64)
    n_rows = len(rows)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    cov_x = features[rows] @ covariance  # (T, d)
    sigma = np.sqrt(np.maximum((cov_x * features[rows]).sum(axis=1), 0.0))  # (T,)
    safe = np.where(sigma > 0, sigma, 1.0)
    slope = (cov_x @ features.T) / safe[:, None]  # b: (T, n)
    z = (scores[:, rows] - mean[rows]).T / safe[:, None]  # (T, S): each draw's own z
    # r_l = a_l - mean_i with a_l = s_l - b_l·z; l beats i where r_l > (σ_i - b_l)·z.
    # Arrays are (T, S, n): the sort runs along contiguous memory.
    offset = scores[None, :, :] - z[:, :, None] * slope[:, None, :] - mean[rows][:, None, None]
    gap = sigma[:, None] - slope  # (T, n)
    peer = groups[None, :] == groups[rows][:, None]  # i's own tie group, i included
    size = peer.sum(axis=1)  # g per row
    # A line parallel to i's (gap exactly 0; e.g. every line when σ_i = 0, which makes i's score
    # fixed) beats i for every z or for none: its offset decides. Any other gap, however small,
    # has a crossing (perhaps far out, which is harmless).
    flat = (gap == 0) & ~peer
    always = (flat[:, None, :] & (offset > 0)).sum(axis=2)  # beat i whatever z: (T, S)
    moving = ~flat & ~peer
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(moving[:, None, :], offset / gap[:, None, :], np.inf)  # (T, S, n)
    # Below its crossing, l beats i when gap > 0 (i's line is steeper); above it, when gap < 0.
    step = np.where(moving & (gap > 0), -1, np.where(moving, 1, 0))  # count change at crossing
    start = always + (moving & (gap > 0)).sum(axis=1)[:, None]  # count at z = -inf: (T, S)
    order = np.argsort(crossing, axis=2)
    edges = np.take_along_axis(crossing, order, axis=2)  # ascending
    steps = step[np.arange(n_rows)[:, None, None], order]
    count = np.empty((n_rows, n_samples, n + 1), dtype=np.int64)
    count[:, :, 0] = start
    np.cumsum(steps, axis=2, out=count[:, :, 1:])
    count[:, :, 1:] += start[:, :, None]  # the count in each of the n + 1 intervals between edges
    g = size[:, None, None]
    # Only intervals that put the row's group on a wanted place carry mass worth computing.
    if positions is None:
        wanted = (count < k) & (count + g > 0)
    else:
        target = np.asarray(positions, dtype=np.int64)[:, None, None]
        wanted = (count <= target) & (count + g > target)
    t_idx, s_idx, m_idx = np.nonzero(wanted)
    padded = np.concatenate(
        [np.full((n_rows, n_samples, 1), -np.inf), edges, np.full((n_rows, n_samples, 1), np.inf)],
        axis=2,
    )
    low, high = padded[t_idx, s_idx, m_idx], padded[t_idx, s_idx, m_idx + 1]
    mass = np.where(low > 0, ndtr(-low) - ndtr(-high), ndtr(high) - ndtr(low))
    np.clip(mass, 0.0, 1.0, out=mass)
    share = mass / size[t_idx]
    base = count[t_idx, s_idx, m_idx]
    if positions is not None:
        per_draw = np.bincount(t_idx * n_samples + s_idx, share, n_rows * n_samples)
        per_draw = per_draw.reshape(n_rows, n_samples)
    else:
        flat_draw = np.zeros(n_rows * n_samples * k)
        cell = (t_idx * n_samples + s_idx) * k
        for extra in range(int(size.max())):
            place = base + extra
            use = (place >= 0) & (place < k) & (extra < size[t_idx])
            flat_draw += np.bincount(cell[use] + place[use], share[use], len(flat_draw))
        per_draw = flat_draw.reshape(n_rows, n_samples, k)
    return _mean_and_error(np.moveaxis(per_draw, 1, 0))


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k largest values, best first."""
    n = scores.shape[1]
    if k >= n:
        return np.argsort(-scores, axis=1, kind="stable")
    if n <= 4 * k:  # a full sort of a short row beats partition + sort
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
