"""Off-policy estimates on the service's own recent impression log: an A/B test's preview of
its variants, and the dashboard's estimates of other settings. One read of the log (through the
engine's store, after the impressions still queued are written), each distinct policy spec
evaluated once."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from equilibra.errors import EquilibraError
from equilibra.evaluate.bandit_logs import BanditLog, evaluate_on_log, log_from_frame

if TYPE_CHECKING:
    from equilibra.service.engine import Engine

DAY = 86_400.0
N_BOOT = 200  # bootstrap resamples of whole impressions per estimate


def recent_log(engine: Engine, days: float) -> BanditLog:
    """The impressions of the last `days` (by the event clock) whose windows have closed."""
    engine.writer.flush()
    clock = engine.clock
    since = clock - days * DAY if math.isfinite(clock) else None
    frame = engine.store.impressions_frame(since=since)
    if frame.empty:
        raise EquilibraError("the store holds no impressions")
    return log_from_frame(frame, "the impression log", lambda i: "row")


def estimates(
    logged: BanditLog, specs: Iterable[str], paths: int = 0
) -> dict[str, dict[str, Any] | str]:
    """Per distinct spec: `equilibra ope`'s report as a dict, or why it could not be made.
    `paths`: `evaluate_on_log`'s (intervals that hold the learning path)."""
    out: dict[str, dict[str, Any] | str] = {}
    for spec in dict.fromkeys(specs):
        try:
            out[spec] = evaluate_on_log(logged, spec, n_boot=N_BOOT, paths=paths).as_dict()
        except (EquilibraError, ValueError) as exc:
            out[spec] = str(exc)
    return out
