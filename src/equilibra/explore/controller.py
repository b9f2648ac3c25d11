"""The balance controller: how much each segment and placement explores, and why.

Per key (placement / user segment) it keeps what it has measured from closed impressions and
turns it into the share of slots that explore among the known items (`epsilon`); new items get
their own exposure guarantee (`AdaptivePolicy`), and budgets cap both (`budget.py`).

    epsilon = clip(scale · uncertainty · value + boost, floor, cap)

- uncertainty = start · (1 + evidence / half_evidence)^(−1/3): the schedule of Vowpal Wabbit's
  `--epsilon_decay`, over the evidence gathered *since the last detected change* — so it falls
  in a stable world and starts over after a shift;
- value = the measured reward per looked-at exploratory slot relative to an exploit slot
  (importance weights are the exposures), divided by `value_ref`, raised to `value_power` and
  clipped to [1/16, 2]: cheap exploration (explored items earn nearly what exploited ones do)
  is bought more of;
- boost: a Page–Hinkley alarm on the exploit slots' reward stream (per key, and per placement
  over all its segments) adds `drift_boost`, which decays with `boost_memory` impressions; the
  alarm also discounts the key's evidence (its counts and the policy's arm statistics) by
  `stale_factor`;
- scale: the champion of a champion / challenger test. Each challenger multiplies the
  champion's scale (default ×0.5 and ×2). Its gain in reward per impression over the champion is
  estimated off-policy on the live impression log — exactly, with the likelihood ratio of the
  logged slot streams (each slot's stream is drawn independently, so the ratio of a prefix of
  slots is the product of per-slot ratios) — and a challenger replaces the champion when the
  lower end of a 95 % time-uniform confidence sequence on that gain is above zero
  (`sequential.py`). Every change is recorded.
- floor: no segment is starved of the data it needs to judge itself.

The controller never draws anything: given its state, a request's rates are deterministic, so
propensities computed from them are exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from equilibra.explore.budget import Budget, PlacementSpend
from equilibra.explore.drift import FALL, BatchedDetector, PageHinkley
from equilibra.explore.sequential import RunningGain, finite_or_none

if TYPE_CHECKING:
    from equilibra.explore.feedback import ClosedImpression

HISTORY_LIMIT = 500
VALUE_FIELDS = (
    "exploit_reward",
    "exploit_exposure",
    "explore_reward",
    "explore_exposure",
    "new_reward",
    "new_exposure",
)
VALUE_CLIP = (1.0 / 16, 2.0)
SCALE_LIMITS = (1.0 / 64, 8.0)


@dataclass(frozen=True)
class ControllerConfig:
    floor: float = 0.005
    start: float = 0.1
    half_evidence: float = 200.0
    cap: float = 0.3
    value_ref: float = 0.5
    value_power: float = 2.0  # how steeply the rate follows the measured value of exploring
    memory: float = 2000.0  # impressions: how long the value estimates remember
    drift_boost: float = 0.15
    boost_memory: float = 150.0
    stale_factor: float = 0.2
    drift_batch: int = 25  # impressions per sample of the change test
    drift_delta: float = 0.5
    drift_threshold: float = 12.0
    drift_min_samples: int = 12
    challengers: tuple[float, ...] = (0.5, 2.0)
    alpha: float = 0.05
    min_trials: int = 200  # impressions before a challenger may win

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= self.start <= 1 or not self.floor <= self.cap <= 1:
            raise ValueError("floor ≤ start ≤ 1 and floor ≤ cap ≤ 1 are required")
        if self.half_evidence <= 0 or self.memory <= 0 or self.boost_memory <= 0:
            raise ValueError("half_evidence, memory, boost_memory: must be positive")
        if not 0 <= self.stale_factor <= 1:
            raise ValueError("stale_factor: must lie in [0, 1]")
        if any(m <= 0 or m == 1 for m in self.challengers):
            raise ValueError("challengers: positive multipliers other than 1")


@dataclass
class KeyState:
    """What the controller has measured for one placement / segment."""

    evidence: float = 0.0  # impressions since the last change (discounted at a change)
    exploit_reward: float = 0.0
    exploit_exposure: float = 0.0
    explore_reward: float = 0.0
    explore_exposure: float = 0.0
    new_reward: float = 0.0  # slots the new-item guarantee filled
    new_exposure: float = 0.0
    boost: float = 0.0
    alarms: int = 0
    impressions: int = 0
    slots: int = 0
    explored: int = 0
    epsilon: float = 0.0  # last rate decided
    detector: BatchedDetector = field(default_factory=lambda: BatchedDetector(PageHinkley()))

    def exploit_value(self) -> float:
        """Reward per looked-at exploit slot (0.05 pseudo-rate until measured)."""
        return (self.exploit_reward + 0.05) / (self.exploit_exposure + 1.0)

    def value_ratio(self, ref: float) -> float:
        """Explore value / exploit value, shrunk towards `ref` by one pseudo-slot of each."""
        exploit = self.exploit_value()
        explore = (self.explore_reward + ref * exploit) / (self.explore_exposure + 1.0)
        return explore / exploit

    def new_ratio(self, ref: float) -> float:
        """What a slot of the new-item guarantee earns relative to an exploit slot (shrunk
        towards `ref` by one pseudo-slot)."""
        exploit = self.exploit_value()
        return (self.new_reward + ref * exploit) / (self.new_exposure + 1.0) / exploit


@dataclass
class Arena:
    """Champion / challenger state of one placement."""

    scale: float = 1.0
    gains: dict[float, RunningGain] = field(default_factory=dict)


@dataclass(frozen=True)
class Rates:
    """One request's exploration rate among known items, and why."""

    epsilon: float
    share_cap: float
    why: dict[str, float]
    challengers: dict[float, float]  # multiplier → the epsilon that challenger would use
    new_pace: float  # the share of full speed the new-item guarantee is paid at


class BalanceController:
    def __init__(self, config: ControllerConfig | None = None, budget: Budget | None = None):
        self.config = config or ControllerConfig()
        self.budget = budget or Budget()
        self.keys: dict[str, KeyState] = {}
        self.placement_detectors: dict[str, BatchedDetector] = {}
        self.spend: dict[str, PlacementSpend] = {}
        self.arenas: dict[str, Arena] = {}
        self.history: list[dict[str, object]] = []
        self.now = -math.inf

    # --- deciding ------------------------------------------------------------------------------

    def _state(self, key: str) -> KeyState:
        state = self.keys.get(key)
        if state is None:
            state = self.keys[key] = KeyState(detector=self._detector())
        return state

    def _detector(self) -> BatchedDetector:
        cfg = self.config
        test = PageHinkley(cfg.drift_delta, cfg.drift_threshold, cfg.drift_min_samples)
        return BatchedDetector(test, cfg.drift_batch)

    def _arena(self, placement: str) -> Arena:
        arena = self.arenas.get(placement)
        if arena is None:
            arena = self.arenas[placement] = Arena(
                gains={m: self._gain() for m in self.config.challengers}
            )
        return arena

    def _gain(self) -> RunningGain:
        return RunningGain(self.config.alpha)

    def _spend(self, placement: str, now: float) -> PlacementSpend:
        spend = self.spend.setdefault(placement, PlacementSpend())
        spend.roll(now, self.budget.period)
        return spend

    def advance(self, now: float | None) -> float:
        if now is not None and math.isfinite(now):
            self.now = max(self.now, now)
        return self.now if math.isfinite(self.now) else 0.0

    def _factor(self, ratio: float, most: float) -> float:
        """A measured value ratio as a multiplier: (ratio / value_ref)^value_power, clipped."""
        cfg = self.config
        return float(min(max((ratio / cfg.value_ref) ** cfg.value_power, VALUE_CLIP[0]), most))

    def rates(self, key: str, placement: str) -> Rates:
        cfg = self.config
        state = self._state(key)
        arena = self._arena(placement)
        uncertainty = cfg.start * (1.0 + state.evidence / cfg.half_evidence) ** (-1.0 / 3.0)
        explore_ratio = state.value_ratio(cfg.value_ref)
        value = self._factor(explore_ratio, VALUE_CLIP[1])
        new_ratio = state.new_ratio(cfg.value_ref)
        new_pace = self._factor(new_ratio, 1.0)
        share_cap = min(cfg.cap, self.budget.share_for(placement))

        def epsilon(scale: float) -> float:
            raw = scale * uncertainty * value + state.boost
            return float(min(max(raw, cfg.floor), share_cap))

        why = {
            "new_item_value_ratio": new_ratio,
            "new_item_pace": new_pace,
            "evidence_since_change": state.evidence,
            "uncertainty": uncertainty,
            "explore_value_ratio": explore_ratio,
            "value_factor": value,
            "drift_boost": state.boost,
            "champion_scale": arena.scale,
            "floor": cfg.floor,
            "cap": share_cap,
        }
        challengers = {m: epsilon(arena.scale * m) for m in cfg.challengers}
        return Rates(epsilon(arena.scale), share_cap, why, challengers, new_pace)

    def new_pace(self, key: str) -> float:
        """How fast the new-item guarantee is paid out: full speed while new items earn what
        the value reference expects, slower (never below 1/16) when they prove poor — every
        owed item still gets its exposure, over more requests."""
        return self._factor(self._state(key).new_ratio(self.config.value_ref), 1.0)

    def allows(self, placement: str, k: int, now: float | None = None) -> bool:
        """May a slate of k explore at all (the budgets' worst case: every slot explores,
        and earns nothing)? Each slot is charged what an exploit slot earns."""
        spend = self._spend(placement, self.advance(now))
        return spend.share_allows(k, self.budget.share_for(placement)) and spend.loss_allows(
            k * self._placement_value(placement), self.budget.max_loss
        )

    def _placement_value(self, placement: str) -> float:
        """Reward per looked-at exploit slot over the placement's keys."""
        reward = exposure = 0.0
        for key, state in self.keys.items():
            if split_key(key)[0] == placement:
                reward += state.exploit_reward
                exposure += state.exploit_exposure
        return (reward + 0.05) / (exposure + 1.0)

    def charge(
        self, key: str, placement: str, explore: np.ndarray, now: float | None
    ) -> list[float]:
        """A slate was shown: count its slots against the budgets; returns each slot's charge."""
        now = self.advance(now)
        spend = self._spend(placement, now)
        k = len(explore)
        rate = self._placement_value(placement)
        charges = np.where(explore, rate, 0.0)
        spend.slots += k
        spend.explored += int(np.count_nonzero(explore))
        spend.value += k * rate
        spend.charged += float(charges.sum())
        state = self._state(key)
        state.slots += k
        state.explored += int(np.count_nonzero(explore))
        return charges.tolist()

    def remember(self, key: str, epsilon: float, why: Mapping[str, float]) -> None:
        """Record a rate that moved by more than a quarter (or to/from the floor)."""
        state = self._state(key)
        previous = state.epsilon
        state.epsilon = epsilon
        moved = previous == 0.0 or abs(epsilon - previous) > 0.25 * previous
        if moved and (previous != 0.0 or state.impressions > 0):
            measured = {**why, "epsilon": epsilon, "previous_epsilon": previous}
            self.record(key, "rate", f"{previous:.4f} → {epsilon:.4f}", measured)

    # --- learning -----------------------------------------------------------------------------

    def learn(self, closed: ClosedImpression) -> list[str]:
        """One closed impression; returns the keys whose evidence was discounted (a change)."""
        cfg = self.config
        self.advance(closed.timestamp)
        key = closed.key
        state = self._state(key)
        memory = 1.0 - 1.0 / cfg.memory
        for name in VALUE_FIELDS:
            setattr(state, name, getattr(state, name) * memory)
        exploit_reward = exploit_exposure = 0.0
        learnable = [o for o in closed.outcomes if o.learnable]
        info = closed.info or {}
        streams, pools = info.get("streams"), info.get("pools")
        for j, outcome in enumerate(learnable):
            stream = streams[j] if streams is not None and j < len(streams) else None
            if outcome.explore and pools and stream and pools[stream - 1] == "new":
                state.new_reward += outcome.raw_reward
                state.new_exposure += outcome.exposure
            elif outcome.explore:
                state.explore_reward += outcome.raw_reward
                state.explore_exposure += outcome.exposure
            else:
                exploit_reward += outcome.raw_reward
                exploit_exposure += outcome.exposure
        state.exploit_reward += exploit_reward
        state.exploit_exposure += exploit_exposure
        state.evidence += 1.0
        state.impressions += 1
        state.boost *= math.exp(-1.0 / cfg.boost_memory)
        self._credit(closed, learnable)
        self._challenge(closed, learnable)
        changed: list[str] = []
        if exploit_exposure > 0:
            signal = state.detector.update(exploit_reward, exploit_exposure)
            if signal:
                changed += self._changed(key, signal, "segment")
            placement = self.placement_detectors.get(closed.placement)
            if placement is None:
                placement = self.placement_detectors[closed.placement] = self._detector()
            signal = placement.update(exploit_reward, exploit_exposure)
            if signal:
                for other in list(self.keys):
                    if split_key(other)[0] == closed.placement and other not in changed:
                        changed += self._changed(other, signal, "placement")
        return changed

    def _changed(self, key: str, signal: int, scope: str) -> list[str]:
        cfg = self.config
        state = self._state(key)
        if signal != FALL:
            # What the ranker's choices earn went up (the world moved towards them, or the
            # policy learned): nothing to search for. Recorded, not acted on.
            self.record(key, "drift", f"the exploit reward rose ({scope} Page–Hinkley alarm)", {})
            return []
        state.alarms += 1
        state.boost = max(state.boost, cfg.drift_boost)
        state.evidence *= cfg.stale_factor
        for name in VALUE_FIELDS:
            setattr(state, name, getattr(state, name) * cfg.stale_factor)
        self.record(
            key,
            "drift",
            f"the exploit reward fell ({scope} Page–Hinkley alarm): exploration boosted "
            f"by {cfg.drift_boost:g}, evidence before the change kept at {cfg.stale_factor:g}",
            {},
        )
        return [key]

    def _credit(self, closed: ClosedImpression, learnable: list) -> None:
        """The explored slots earned something: the loss charged for them shrinks by that."""
        charges = (closed.info or {}).get("charges")
        if not charges:
            return
        spend = self.spend.get(closed.placement)
        if spend is None or not (
            spend.period_start <= closed.timestamp < spend.period_start + self.budget.period
        ):
            return  # charged in a period that has ended
        for outcome, charge in zip(learnable, charges, strict=False):
            if charge > 0:  # the loss of an explored slot: its charge less what it earned
                spend.charged -= outcome.raw_reward

    def _challenge(self, closed: ClosedImpression, learnable: list) -> None:
        info = closed.info or {}
        streams = info.get("streams")
        if streams is None or len(streams) != len(learnable):
            return
        probs = np.asarray(info["probs"], dtype=float)
        sizes = list(info["sizes"])
        rewards = np.array([o.raw_reward for o in learnable])
        base = _path_likelihood(streams, probs, sizes)
        arena = self._arena(closed.placement)
        for multiplier, challenger in info.get("challengers", {}).items():
            ratio = _path_likelihood(streams, np.asarray(challenger, dtype=float), sizes) / base
            gain = arena.gains.setdefault(float(multiplier), self._gain())
            gain.update(float(((ratio - 1.0) * rewards).sum()))
        self._promote(closed.placement, arena)

    def _promote(self, placement: str, arena: Arena) -> None:
        cfg = self.config
        best, best_lower = None, 0.0
        for multiplier, gain in arena.gains.items():
            if gain.n >= cfg.min_trials and gain.lower() > best_lower:
                best, best_lower = multiplier, gain.lower()
        if best is None:
            return
        gain = arena.gains[best]
        old = arena.scale
        arena.scale = min(max(old * best, SCALE_LIMITS[0]), SCALE_LIMITS[1])
        self.record(
            placement,
            "champion",
            f"challenger ×{best:g} won: gain {gain.mean:+.4f} per impression, 95 % "
            f"time-uniform lower bound {gain.lower():+.4f} over {gain.n} impressions; "
            f"scale {old:g} → {arena.scale:g}",
            {"gain": gain.mean, "lower": gain.lower(), "n": float(gain.n)},
        )
        arena.gains = {m: self._gain() for m in cfg.challengers}

    def record(self, key: str, kind: str, what: str, measured: dict[str, float]) -> None:
        """A change in the history (the controller's own, and the exploit estimate's)."""
        self.history.append(
            {
                "time": self.now if math.isfinite(self.now) else None,
                "key": key,
                "kind": kind,
                "what": what,
                "measured": {k: float(v) for k, v in measured.items()},
            }
        )
        if len(self.history) > HISTORY_LIMIT:
            del self.history[: len(self.history) - HISTORY_LIMIT]

    # --- explaining and persistence -----------------------------------------------------------

    def explain(self) -> dict[str, object]:
        segments = []
        for key, state in sorted(self.keys.items()):
            placement, segment = split_key(key)
            rates = self.rates(key, placement)
            spend = self.spend.get(placement, PlacementSpend())
            segments.append(
                {
                    "placement": placement,
                    "segment": segment,
                    "exploration_rate": rates.epsilon,
                    "explored_share": state.explored / state.slots if state.slots else 0.0,
                    "shown_items": state.slots,
                    "impressions_learned": state.impressions,
                    "drift_alarms": state.alarms,
                    "why": _sentence(rates),
                    "measured": rates.why,
                    "budget_spent": spend.as_dict(self.budget, placement),
                }
            )
        return {
            "config": asdict(self.config),
            "budget": self.budget.describe(),
            "champions": {
                placement: {
                    "scale": arena.scale,
                    "challengers": {
                        str(m): {"n": g.n, "gain": g.mean, "lower": finite_or_none(g.lower())}
                        for m, g in arena.gains.items()
                    },
                }
                for placement, arena in sorted(self.arenas.items())
            },
            "segments": segments,
            "history": list(self.history),
        }

    def state_dict(self) -> dict[str, object]:
        return {
            "keys": {
                key: {**asdict(s), "detector": s.detector.state_dict()}
                for key, s in self.keys.items()
            },
            "placement_detectors": {p: d.state_dict() for p, d in self.placement_detectors.items()},
            "spend": {
                p: {**asdict(s), "period_start": finite_or_none(s.period_start)}
                for p, s in self.spend.items()
            },
            "arenas": {
                p: {"scale": a.scale, "gains": [[m, g.state_dict()] for m, g in a.gains.items()]}
                for p, a in self.arenas.items()
            },
            "history": self.history,
            "now": self.now if math.isfinite(self.now) else None,
        }

    def learned_state(self) -> dict[str, object]:
        """The state closed impressions build (the rates follow from it alone); without what
        serving counts: budget spend, shown and explored slots, the last rate decided."""
        state = self.state_dict()
        served = ("slots", "explored", "epsilon")
        keys = state["keys"]
        # Serving a key or placement creates its empty state: not learnt, so left out.
        state["keys"] = {
            key: {k: v for k, v in values.items() if k not in served}  # type: ignore[attr-defined]
            for key, values in keys.items()  # type: ignore[attr-defined]
            if self.keys[key].impressions > 0
        }
        state["arenas"] = {
            placement: arena
            for placement, arena in state["arenas"].items()  # type: ignore[attr-defined]
            if self.arenas[placement].scale != 1.0
            or any(g.n for g in self.arenas[placement].gains.values())
        }
        for name in ("spend", "history", "now"):
            del state[name]
        return state

    def forget_spend(self) -> None:
        """Budget spend is each replica's own: one taking over another's state starts afresh."""
        self.spend = {}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.keys = {}
        for key, values in dict(state.get("keys", {})).items():  # type: ignore[call-overload]
            values = dict(values)
            detector = BatchedDetector.from_state(values.pop("detector"))
            self.keys[key] = KeyState(**values, detector=detector)
        self.placement_detectors = {
            p: BatchedDetector.from_state(d)
            for p, d in dict(state.get("placement_detectors", {})).items()  # type: ignore[call-overload]
        }
        self.spend = {}
        for p, s in dict(state.get("spend", {})).items():  # type: ignore[call-overload]
            start = s.get("period_start")
            self.spend[p] = PlacementSpend(
                **{**s, "period_start": -math.inf if start is None else start}
            )
        self.arenas = {
            p: Arena(
                float(a["scale"]),
                {float(m): RunningGain.from_state(g) for m, g in a["gains"]},
            )
            for p, a in dict(state.get("arenas", {})).items()  # type: ignore[call-overload]
        }
        self.history = list(state.get("history", []))  # type: ignore[call-overload]
        now = state.get("now")
        self.now = -math.inf if now is None else float(now)  # type: ignore[arg-type]


def split_key(key: str) -> tuple[str, str]:
    """(placement, segment) of a key: `placement/segment`, or `segment` without a placement."""
    placement, sep, segment = key.partition("/")
    return (placement, segment) if sep else ("", key)


def _path_likelihood(streams: Sequence[int], probs: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """P(the first j slots drew these streams), for j = 1 … k, under `probs`: each slot draws
    a stream independently, a pool that has run dry gives its share to the exploit stream."""
    taken = [0] * len(sizes)
    out = np.empty(len(streams))
    total = 1.0
    for j, s in enumerate(streams):
        dry = [taken[i] >= sizes[i] for i in range(len(sizes))]
        if s == 0:
            p = probs[0] + sum(probs[i + 1] for i in range(len(sizes)) if dry[i])
        else:
            p = 0.0 if dry[s - 1] else probs[s]
            taken[s - 1] += 1
        total *= p
        out[j] = total
    return out


def _sentence(rates: Rates) -> str:
    why = rates.why
    parts = [
        f"{why['evidence_since_change']:.0f} impressions of evidence since the last change "
        f"(uncertainty term {why['uncertainty']:.3f})",
        f"exploration earns {why['explore_value_ratio']:.2f}× an exploit slot "
        f"(factor {why['value_factor']:.2f})",
    ]
    if why["new_item_pace"] < 1.0:
        parts.append(
            f"new items earn {why['new_item_value_ratio']:.2f}× an exploit slot: their "
            f"guarantee is paid at {why['new_item_pace']:.2f} of full speed"
        )
    if why["drift_boost"] > 1e-4:
        parts.append(f"drift boost {why['drift_boost']:.3f} after a detected change")
    if why["champion_scale"] != 1.0:
        parts.append(f"champion scale {why['champion_scale']:g}")
    if rates.epsilon <= why["floor"] + 1e-12:
        parts.append(f"at the floor {why['floor']:g}")
    if rates.epsilon >= why["cap"] - 1e-12:
        parts.append(f"at the cap {why['cap']:g}")
    return "; ".join(parts)
