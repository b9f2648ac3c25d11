"""`adaptive`: slot streams whose shares the balance controller sets, per request.

Three streams, each slot drawing one independently (so propensities are exact, `marginals.py`):

- exploit: the top of the posterior means, in order;
- uncertain: a uniform pick among the `pool` known candidates outside the top k with the
  highest optimistic score (mean + bonus · posterior spread) — exploration aimed at what might
  be good, at the controller's rate for the request's placement and segment;
- new: a uniform pick among new items (younger than `new_age`) whose reward-rate interval is
  still wider than ±`new_width` — each new item's exposure guarantee, worth `new_rate` slots per
  request for each item still owed, at most `new_cap` of the slate.

How far the exploit stream trusts the ranker over what items earned (the Beta prior's
strength) is itself chosen online (`strength.py`): the strength that best orders the items
that earned within closed slates, by a confidence sequence.

Budgets (`budget.py`) cap the sum and can switch exploration off for a request; only candidates
marked `explorable` are explored. Each shown slate carries, in `extras["controller"]`, how it was
drawn (streams, shares, the challengers' shares, budget charges), which the controller learns
from when the impression closes.
"""

from __future__ import annotations

import math

import numpy as np

from equilibra.explore.budget import Budget
from equilibra.explore.controller import BalanceController, ControllerConfig, split_key
from equilibra.explore.feedback import ClosedImpression
from equilibra.explore.policies import Evidence, Pool, SlotStreamPolicy, StreamPlan, _top
from equilibra.explore.slate import Candidates, Slate
from equilibra.explore.strength import StrengthJudge

Z95 = 1.959963984540054
GRID = 1000
EXPLOIT_KEY = "exploit"  # the history's key for the exploit estimate's changes


def _grid(share: float) -> float:
    return math.floor(max(share, 0.0) * GRID + 1e-9) / GRID


class Adaptive(SlotStreamPolicy):
    name = "adaptive"

    def __init__(
        self,
        *,
        floor: float = 0.005,
        start: float = 0.05,
        cap: float = 0.3,
        drift_boost: float = 0.15,
        stale_factor: float = 0.2,
        pool: int = 20,
        bonus: float = 1.0,
        new_age: float = 7 * 86400.0,
        new_width: float = 0.35,
        new_rate: float = 0.01,
        new_cap: float = 0.15,
        budget: Budget | None = None,
        tune_strength: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if pool < 1 or bonus < 0 or new_age < 0 or new_width <= 0:
            raise ValueError("pool ≥ 1, bonus ≥ 0, new_age ≥ 0 and new_width > 0 are required")
        if not 0 <= new_rate <= 1 or not 0 <= new_cap <= 1:
            raise ValueError("new_rate, new_cap: must lie in [0, 1]")
        config = ControllerConfig(
            floor=floor, start=start, cap=cap, drift_boost=drift_boost, stale_factor=stale_factor
        )
        self.controller = BalanceController(config, budget)
        # The Beta belief's prior strength, judged online (the lift belief has none to tune).
        self.strength = (
            StrengthJudge(champion=self.prior_strength)
            if tune_strength and self.belief == "beta"
            else None
        )
        self.pool = pool
        self.bonus = bonus
        self.new_age = new_age
        self.new_width = new_width
        self.new_rate = new_rate
        self.new_cap = new_cap
        # Per new item: (looked-at exposures, scaled reward), pooled over segments.
        self.new_evidence: dict[str, list[float]] = {}
        self._request: tuple[Candidates, dict[str, object]] | None = None

    @property  # type: ignore[override]
    def prior_strength(self) -> float:
        """The Beta prior's strength: the judge's champion where it is tuned online."""
        judge = getattr(self, "strength", None)  # not there yet while Policy.__init__ runs
        return self._prior_strength if judge is None else judge.champion

    @prior_strength.setter
    def prior_strength(self, value: float) -> None:
        self._prior_strength = value

    # --- the request ------------------------------------------------------------------------

    def _read_evidence(self, c: Candidates) -> Evidence:
        """A new item's evidence in other segments moves its prior here (partial pooling):
        the ranker knows nothing of it, and every segment learning it alone takes eight times
        as long with eight segments. Established items keep their own segment's evidence (the
        same pooling for every item cost 3 % of reward in the simulator's stationary world)."""
        e = super()._read_evidence(c)
        if c.age is None or not self.new_evidence or self.belief != "beta":
            return e
        young = np.flatnonzero(c.age < self.new_age)
        if not len(young):
            return e
        get = self.new_evidence.get
        pooled = np.array([get(str(item), (0.0, 0.0)) for item in c.items[young].tolist()])
        other_counts = np.maximum(pooled[:, 0] - e.counts[young], 0.0)
        other_rewards = np.clip(pooled[:, 1] - e.rewards[young], 0.0, other_counts)
        prior = e.prior.copy()
        s = self.prior_strength
        prior[young] = np.clip(
            (s * prior[young] + other_rewards) / (s + other_counts), 1e-6, 1 - 1e-6
        )
        return Evidence(prior, e.rewards, e.counts, e.shared_lift)

    def owes(self, exposures: float, rewards: float) -> bool:
        """Is a new item still owed exposure: its 95 % reward-rate interval (Agresti–Coull,
        over looked-at exposures) wider than ±new_width?"""
        p = (rewards + 2.0) / (exposures + 4.0)
        return Z95 * math.sqrt(p * (1.0 - p) / (exposures + 4.0)) > self.new_width

    def _owed(self, items: np.ndarray) -> np.ndarray:
        get = self.new_evidence.get
        owed = np.ones(len(items), dtype=bool)
        for i, item in enumerate(items.tolist()):
            seen = get(str(item))
            if seen is not None:
                owed[i] = self.owes(seen[0], seen[1])
        return owed

    def _plan(self, c: Candidates, k: int) -> tuple[np.ndarray, list[Pool], np.ndarray, list[str]]:
        e = self._evidence(c)
        mean, spread = self._moments(e)
        ranking = np.argsort(-mean, kind="stable")
        rest = ranking[k:]
        if c.explorable is not None:
            rest = rest[c.explorable[rest]]
        young = np.zeros(len(c), dtype=bool) if c.age is None else c.age < self.new_age
        new = np.zeros(len(c), dtype=bool)
        if len(rest):
            candidates = rest[young[rest]]
            new[candidates[self._owed(c.items[candidates])]] = True
        new_pool = rest[new[rest]]
        known = rest[~new[rest]]
        optimism = (
            mean[known] + self.bonus * math.sqrt(2 * math.log(self.arms.step + 2)) * (spread[known])
        )
        uncertain = known[_top(optimism, min(self.pool, len(known)))] if len(known) else known

        key = self._key(c.segment, c.placement)
        rates = self.controller.rates(key, c.placement)
        allowed = self.controller.allows(c.placement, k, c.timestamp)
        # Shares on a grid of 0.001 (rounded down, so caps hold): the same streams recur
        # request after request, and their exact marginals are computed once.
        owed_share = self.new_rate * len(new_pool) * rates.new_pace
        new_share = _grid(min(self.new_cap, owed_share, rates.share_cap))
        epsilon = _grid(min(rates.epsilon, rates.share_cap - new_share))
        challengers = {
            m: _grid(min(eps, rates.share_cap - new_share)) for m, eps in rates.challengers.items()
        }
        if not allowed:
            epsilon = new_share = 0.0
            challengers = dict.fromkeys(challengers, 0.0)
        self._request = (
            c,
            {
                "key": key,
                "epsilon": epsilon,
                "why": rates.why,
                "challengers": challengers,
                "new": c.items[young].tolist(),
                "evidence": e,
            },
        )
        pools = [
            Pool(
                uncertain,
                epsilon,
                f"explore: uncertain (rate {epsilon:.3f} for this segment)",
                "uncertain",
            ),
            Pool(new_pool, new_share, "explore: new item (exposure guarantee)", "new"),
        ]
        return ranking[:k], pools, np.zeros(k, dtype=bool), ["exploit: best estimate"] * k

    def _annotate(
        self, c: Candidates, slate: Slate, plan: StreamPlan, streams: np.ndarray
    ) -> Slate:
        request = self._request
        if request is None or request[0] is not c:
            return slate
        notes = request[1]
        key = str(notes["key"])
        charges = self.controller.charge(key, c.placement, slate.explore_flags, c.timestamp)
        self.controller.remember(key, float(notes["epsilon"]), notes["why"])  # type: ignore[arg-type]
        names = [p.name for p in plan.pools]
        challengers: dict[float, tuple[float, ...]] = {}
        if "uncertain" in names:
            for multiplier, eps in notes["challengers"].items():  # type: ignore[attr-defined]
                shares = [
                    eps if name == "uncertain" else p.share
                    for name, p in zip(names, plan.pools, strict=True)
                ]
                challengers[float(multiplier)] = (1.0 - sum(shares), *shares)
        e: Evidence = notes["evidence"]  # type: ignore[assignment]
        # Tuples and arrays, no lists: the note stays with the open impression for the
        # attribution window, and tuples of numbers leave the cyclic collector's walk (lists
        # made every full collection walk ~30 per open impression: 0.1 s stalls at 200/s).
        slate.extras["controller"] = {
            "streams": tuple(streams.tolist()),
            "probs": tuple(plan.probs.tolist()),
            "sizes": tuple(plan.sizes),
            "pools": tuple(names),
            "challengers": challengers,
            "charges": tuple(charges),
            "new": tuple(notes["new"]),  # type: ignore[call-overload]
        }
        if self.strength is not None and self.learn:  # each strength's view of the shown items
            i = slate.indices
            means = self.strength.means(e.prior[i], e.rewards[i], e.counts[i])
            # One array (0.9 KB for a slate of 20), not 20 tuples of 5 floats (4 KB): it stays
            # in memory with the open impression for the attribution window.
            slate.extras["controller"]["predictions"] = means
        return slate

    # --- learning ---------------------------------------------------------------------------

    def learn_impression(self, closed: ClosedImpression) -> None:
        if not self.learn:
            return
        self._judge_strength(closed)
        new = set(map(str, (closed.info or {}).get("new", ())))  # type: ignore[call-overload]
        for outcome in closed.outcomes:
            if outcome.learnable and outcome.item in new:
                seen = self.new_evidence.setdefault(outcome.item, [0.0, 0.0])
                seen[0] += outcome.exposure
                seen[1] += outcome.reward
        changed = self.controller.learn(closed)
        if changed:
            # Evidence from before a detected change is mostly stale: keep a fraction of it.
            factor = self.controller.config.stale_factor
            for key in changed:
                placement, segment = split_key(key)
                self.arms.scale(self._key(segment, placement), factor)
            if self.pooled:
                self.arms.scale(self._pool_key(closed.placement), factor)

    def _judge_strength(self, closed: ClosedImpression) -> None:
        predictions = (closed.info or {}).get("predictions")
        if self.strength is None or predictions is None or not len(predictions):  # type: ignore[arg-type]
            return
        learnable = [o for o in closed.outcomes if o.learnable]
        if len(learnable) != len(predictions):  # type: ignore[arg-type]
            return  # not the slate these predictions were made for
        self.strength.compare(
            np.array([o.reward for o in learnable]),
            np.array([o.exposure for o in learnable]),
            np.asarray(predictions, dtype=float),
        )
        decided = self.strength.decide()
        if decided is None:
            return
        old, new, (n, mean, lower, _) = decided
        self.controller.record(
            EXPLOIT_KEY,
            "prior strength",
            f"the ranker's prior now worth {new:g} impressions (was {old:g}): it orders the "
            f"rewarded items better by {mean:.4f} per slate, 95 % time-uniform lower bound "
            f"{lower:.4f} over {n} slates",
            {"previous": old, "strength": new, "improvement": mean, "lower": lower, "n": float(n)},
        )

    def explain(self) -> dict[str, object]:
        """The controller's state and how far the exploit stream trusts the ranker."""
        estimate = (
            {"prior_strength": self.prior_strength, "tuned": False}
            if self.strength is None
            else {**self.strength.explain(), "tuned": True}
        )
        return {**self.controller.explain(), "exploit_estimate": estimate}

    # --- persistence ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        state = super().state_dict()
        state["controller"] = self.controller.state_dict()
        state["new_evidence"] = self.new_evidence
        state["strength"] = None if self.strength is None else self.strength.state_dict()
        return state

    def learned_state(self) -> dict[str, object]:
        state = super().learned_state()
        state["controller"] = self.controller.learned_state()
        state["new_evidence"] = self.new_evidence
        state["strength"] = None if self.strength is None else self.strength.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state.get("controller", {}))  # type: ignore[arg-type]
        strength = state.get("strength")
        if self.strength is not None and strength is not None:  # older snapshots: start afresh
            self.strength = StrengthJudge.from_state(strength)  # type: ignore[arg-type]
        self.new_evidence = {
            str(k): [float(v[0]), float(v[1])]
            for k, v in dict(state.get("new_evidence", {})).items()  # type: ignore[call-overload]
        }
