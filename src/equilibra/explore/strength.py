"""How far the exploit stream trusts the ranker over what items earned: the prior strength,
chosen online.

Each candidate's posterior is a Beta whose mean starts at the ranker's personal prior, worth
`s` impressions, and moves with what the item earned in the user's segment. `s` decides what
the exploit stream believes: small, and a segment's evidence on an item soon overrides the
ranker's view of each user (right where the ranker is miscalibrated item by item); large, and
the personal ordering survives (right where users within a segment differ more than items
do). Which holds is the shop's data, not a constant: in the simulator a fixed s = 320 earns
about 5 % more than the default 20 in the Taobao world, and 2 % more on one ml-100k seed.

So several strengths are kept side by side and judged on what happens. When a slate's window
closes with some reward, each strength is scored by the conditional likelihood of where the
reward fell within the slate: the share of the slate's expected reward (exposure × posterior
mean, computed when the slate was drawn) it gave the items that earned, −Σ_i r_i · log share_i.
This is indifferent to a strength's overall level (what moves the ranking is the order it puts
items in, not its calibration: a plain log-loss on the shown items picked strengths that
earned less, a squared error barely moved) and is a proper score of that order. For every
pair of strengths the per-slate difference of scores is kept with a time-uniform confidence
sequence (`sequential.RunningGain`, checked after every slate, Bonferroni over the pairs); the
champion gives way to the challenger whose lower bound on the improvement is highest above zero, and
every change is recorded. The pairs keep their evidence across changes, so a second step
(20 → 80 → 320) does not wait for new data.

What it is judged on are the items shown, chosen by the champion: the test the log allows
without spending exploration on it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from equilibra.explore.sequential import RunningGain, finite_or_none
from equilibra.explore.stats import beta_posterior

STRENGTHS = (5.0, 20.0, 80.0, 320.0, 1280.0)


@dataclass
class StrengthJudge:
    strengths: tuple[float, ...] = STRENGTHS
    champion: float = 20.0
    alpha: float = 0.05
    min_slates: int = 200  # judged slates before a challenger may win
    # per pair (a, b), a < b: score(a) − score(b) per judged slate (> 0: b orders better)
    pairs: dict[tuple[float, float], RunningGain] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(s <= 0 or not math.isfinite(s) for s in self.strengths) or self.champion <= 0:
            raise ValueError("prior strengths: must be positive and finite")
        self.strengths = tuple(sorted({*map(float, self.strengths), float(self.champion)}))
        self.champion = float(self.champion)
        self._column = np.asarray(self.strengths)[None, :]
        # Bonferroni over the pairs: every pair's sequence holds at once with probability 1 − α.
        level = self.alpha / max(len(self.strengths) * (len(self.strengths) - 1) // 2, 1)
        for a, b in itertools.combinations(self.strengths, 2):
            self.pairs.setdefault((a, b), RunningGain(level))

    def means(self, prior: np.ndarray, rewards: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(len(prior), len(strengths)): each strength's Beta posterior mean."""
        alpha, beta = beta_posterior(
            prior[:, None], rewards[:, None], counts[:, None], self._column
        )
        return alpha / (alpha + beta)

    def compare(self, rewards: np.ndarray, exposures: np.ndarray, predictions: np.ndarray) -> None:
        """One closed slate against every strength's predictions (len(slate), len(strengths)),
        made before the outcomes; a slate that earned nothing says nothing about the order."""
        if predictions.shape != (len(rewards), len(self.strengths)) or rewards.sum() <= 0:
            return
        weights = exposures[:, None] * np.clip(predictions, 1e-9, None)
        share = weights / weights.sum(axis=0, keepdims=True)
        scores = dict(
            zip(
                self.strengths,
                (-(rewards[:, None] * np.log(share)).sum(axis=0)).tolist(),
                strict=True,
            )
        )
        for (a, b), gain in self.pairs.items():
            gain.update(scores[a] - scores[b])

    def versus(self, challenger: float) -> tuple[int, float, float, float]:
        """(slates, mean, lower, upper) of the champion's score less the challenger's."""
        a, b = sorted((self.champion, challenger))
        gain = self.pairs[(a, b)]
        if a == self.champion:
            return gain.n, gain.mean, gain.lower(), gain.upper()
        return gain.n, -gain.mean, -gain.upper(), -gain.lower()

    def decide(self) -> tuple[float, float, tuple[int, float, float, float]] | None:
        """Promote the challenger whose lower bound is highest above zero:
        -> (old, new, its comparison with the old champion)."""
        best, best_lower = None, 0.0
        for s in self.strengths:
            if s == self.champion:
                continue
            n, _, lower, _ = self.versus(s)
            if n >= self.min_slates and lower > best_lower:
                best, best_lower = s, lower
        if best is None:
            return None
        old, won = self.champion, self.versus(best)
        self.champion = best
        return old, best, won

    def explain(self) -> dict[str, object]:
        challengers = {}
        for s in self.strengths:
            if s != self.champion:
                n, mean, lower, upper = self.versus(s)
                challengers[f"{s:g}"] = {
                    "slates": n,
                    "improvement": mean,
                    "lower": finite_or_none(lower),
                    "upper": finite_or_none(upper),
                }
        return {"prior_strength": self.champion, "challengers": challengers}

    def state_dict(self) -> dict[str, object]:
        return {
            "strengths": list(self.strengths),
            "champion": self.champion,
            "alpha": self.alpha,
            "min_slates": self.min_slates,
            "pairs": [[a, b, g.state_dict()] for (a, b), g in self.pairs.items()],
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> StrengthJudge:
        return cls(
            strengths=tuple(state["strengths"]),  # type: ignore[arg-type]
            champion=float(state["champion"]),  # type: ignore[arg-type]
            alpha=float(state["alpha"]),  # type: ignore[arg-type]
            min_slates=int(state["min_slates"]),  # type: ignore[call-overload]
            pairs={
                (float(a), float(b)): RunningGain.from_state(g)
                for a, b, g in state["pairs"]  # type: ignore[attr-defined]
            },
        )
