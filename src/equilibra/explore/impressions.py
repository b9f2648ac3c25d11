"""A served slate as rows of the impression log (design.md), the one format the store, the
simulator, the feedback ledger and `equilibra ope` share."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from equilibra.data.columns import Columns as C
from equilibra.data.impressions import LaterCandidates, encode_candidates
from equilibra.explore.slate import Candidates, Slate


def slate_rows(
    slate: Slate,
    candidates: Candidates,
    *,
    impression_id: str,
    timestamp: float,
    user_id: str,
    base_rate: float,
    model_version: str | None = None,
    exposure: Sequence[float] | None = None,
    context: dict[str, Any] | None = None,
    variant: str | None = None,
    replica: str | None = None,
    encode_later: bool = False,
) -> list[dict[str, object]]:
    """One row per shown item; the first also carries the candidates with their priors
    (`encode_later`: as a `LaterCandidates`, for a writer that encodes it off the request path).

    `exposure[j]` is the chance position j + 1 is looked at (1 where unknown); the reward stays
    empty until the attribution window closes and the ledger writes it back."""
    priors = candidates.prior_or(base_rate)
    logged: object = (
        LaterCandidates(candidates.items.tolist(), candidates.scores, priors)
        if encode_later
        else encode_candidates(candidates.items.tolist(), candidates.scores, priors)
    )
    rows: list[dict[str, object]] = []
    for entry in slate.entries:
        first = entry.position == 1
        rows.append(
            {
                C.impression_id: impression_id,
                C.timestamp: float(timestamp),
                C.user: str(user_id),
                C.placement: candidates.placement,
                C.segment: candidates.segment,
                C.policy: slate.policy,
                C.model_version: model_version,
                C.position: entry.position,
                C.item: str(entry.item),
                C.score: entry.score,
                C.prior: entry.prior,
                C.propensity: entry.propensity,
                C.propensity_error: entry.propensity_error,
                C.explore: entry.explore,
                C.reason: entry.reason,
                C.exposure: 1.0 if exposure is None else float(exposure[entry.position - 1]),
                C.reward: None,
                C.candidates: logged if first else None,
                C.context: json.dumps(context, sort_keys=True) if first and context else None,
                C.variant: variant,
                C.replica: replica,
            }
        )
    return rows
