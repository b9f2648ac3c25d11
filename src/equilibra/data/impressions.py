"""The impression log's per-impression part: the candidates a slate was drawn from.

One row per shown item carries what the policy did; the candidate set with its scores and
priors is kept once per impression (on its position-1 row, as JSON), so that any other policy
can be evaluated on the same requests (`equilibra ope`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LoggedCandidates:
    items: np.ndarray  # str ids
    scores: np.ndarray
    prior: np.ndarray | None


def encode_candidates(
    items: Sequence[object], scores: Sequence[float], prior: Sequence[float] | None = None
) -> str:
    record: dict[str, object] = {
        "items": [str(i) for i in items],
        "scores": np.round(np.asarray(scores, dtype=np.float64), 6).tolist(),
    }
    if prior is not None:
        # Priors are what the logged propensities were computed from: keep them exactly.
        record["prior"] = np.asarray(prior, dtype=np.float64).tolist()
    return json.dumps(record, separators=(",", ":"))


class LaterCandidates:
    """A `candidates` cell encoded when it is written, not when the impression is served: the
    JSON of a few hundred floats is most of a log row's cost, and the writer's thread can pay
    it off the request's path (`encode_later_cells` before the rows reach a store)."""

    __slots__ = ("items", "prior", "scores")

    def __init__(self, items: list[str], scores: np.ndarray, prior: np.ndarray | None) -> None:
        self.items, self.scores, self.prior = items, scores, prior

    def encode(self) -> str:
        return encode_candidates(self.items, self.scores, self.prior)


def encode_later_cells(rows: Sequence[dict[str, object]], column: str) -> None:
    """Encode, in place, the `LaterCandidates` cells of `column`."""
    for row in rows:
        cell = row.get(column)
        if isinstance(cell, LaterCandidates):
            row[column] = cell.encode()


def decode_candidates(text: object) -> LoggedCandidates:
    """Parse a `candidates` cell; ValueError with a message that says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("is empty")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(record, dict):
        raise ValueError("must be a JSON object with items and scores")
    # Logs written before the contract said "items" called them "candidates".
    items = record.get("items", record.get("candidates"))
    scores = record.get("scores")
    if not isinstance(items, list) or not isinstance(scores, list) or len(items) != len(scores):
        raise ValueError("needs lists `items` and `scores` of one length")
    if not items:
        raise ValueError("has no candidates")
    try:
        score_array = np.asarray(scores, dtype=float)
        prior = record.get("prior")
        prior_array = None if prior is None else np.asarray(prior, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("scores and priors must be numbers") from None
    if not np.all(np.isfinite(score_array)):
        raise ValueError("scores must be finite")
    if prior_array is not None and (
        prior_array.shape != score_array.shape
        or np.any(prior_array <= 0)
        or np.any(prior_array >= 1)
    ):
        raise ValueError("prior: one probability in (0, 1) per candidate")
    return LoggedCandidates(np.asarray([str(i) for i in items]), score_array, prior_array)
